"""The demo site's URLs and the bench's layer counts (``BENCH_COUNT_LAYER=1``)."""

from django.urls import path

from bench.layer_counts import counts
from presence_site.urls import urlpatterns as site_urlpatterns

urlpatterns = [path("bench/layer/", counts), *site_urlpatterns]
