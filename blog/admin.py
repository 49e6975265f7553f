from django.contrib import admin

from blog.models import Article


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "published_at"]
    prepopulated_fields = {"slug": ["title"]}
    search_fields = ["title", "body"]
    date_hierarchy = "published_at"
