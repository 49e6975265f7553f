from django.apps import AppConfig


class RoomsAppConfig(AppConfig):
    """A blog shaped unlike the demo's, installed only by ``tests/test_rooms.py`` (``override_settings``)."""

    name = "tests.roomsapp"
    label = "roomsapp"
    default_auto_field = "django.db.models.BigAutoField"
