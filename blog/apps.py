from django.apps import AppConfig


class BlogConfig(AppConfig):
    """A small demo blog standing in for the site the presence app is dropped into."""

    name = "blog"
    default_auto_field = "django.db.models.BigAutoField"
