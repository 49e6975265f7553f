"""The blog's own REST API (so `rest_framework` is installed before the presence app is)."""

from rest_framework import serializers, viewsets

from articles.models import Article


class ArticleSerializer(serializers.ModelSerializer):
    url = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = Article
        fields = ["slug", "title", "summary", "published_at", "url"]


class ArticleViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = ArticleSerializer
    queryset = Article.published.all()
    lookup_field = "slug"
