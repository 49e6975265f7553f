from django.urls import path

from blog.views import ArticleDetailView, ArticleListView

app_name = "blog"

urlpatterns = [
    path("", ArticleListView.as_view(), name="article_list"),
    path("articles/<slug:slug>/", ArticleDetailView.as_view(), name="article_detail"),
]
