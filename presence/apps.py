from django.apps import AppConfig


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = "Live presence"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from presence import checks, history  # noqa: F401  (checks registers the system checks)

        history.connect()
