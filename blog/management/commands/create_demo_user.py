from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create (or reset) the demo account demo/demo. For the demo site only: never in production."

    def handle(self, *args, **options) -> None:
        user, created = get_user_model().objects.get_or_create(
            username="demo", defaults={"first_name": "Demo"}
        )
        user.set_password("demo")
        user.is_staff = user.is_superuser = False
        user.save()
        self.stdout.write(f"{'Created' if created else 'Reset'} the demo user (demo/demo).")
