from django.contrib import admin


class ArticleAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "published_at"]
    list_filter = ["status"]
    prepopulated_fields = {"slug": ["title"]}
    search_fields = ["title"]
