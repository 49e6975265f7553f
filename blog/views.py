from django.views.generic import DetailView, ListView

from blog.models import Article


class PublishedMixin:
    """Articles scheduled for later stay hidden until their publication time."""

    def get_queryset(self):
        return Article.published.all()


class ArticleListView(PublishedMixin, ListView):
    model = Article
    context_object_name = "articles"
    paginate_by = 20


class ArticleDetailView(PublishedMixin, DetailView):
    model = Article
    context_object_name = "article"
