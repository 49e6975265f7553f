"""Creates the demo account demo/demo (README, "Quickstart"), only when DEBUG is on.

A known password has no place on a real site, so with DEBUG off (production, and the test
run) nothing is created; ``manage.py create_demo_user`` makes it on demand.
"""

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations


def create_demo_user(apps, schema_editor):
    if not settings.DEBUG:
        return
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    if not User.objects.filter(username="demo").exists():
        User.objects.create(username="demo", first_name="Demo", password=make_password("demo"))


def delete_demo_user(apps, schema_editor):
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    User.objects.filter(username="demo").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("blog", "0002_seed_articles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    operations = [migrations.RunPython(create_demo_user, delete_demo_user)]
