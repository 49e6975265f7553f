from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = _("Live readership")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from presence import checks, history  # noqa: F401  (checks registers the system checks)

        history.connect()
