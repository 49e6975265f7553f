from django.core.management.base import BaseCommand

from presence.conf import app_settings
from presence.reading_sessions import prune


class Command(BaseCommand):
    help = (
        "Close reading sessions left open by a server process that crashed (as 'crash-recovered', "
        "ended at their last checkpoint) and delete history older than PRESENCE_HISTORY_DAYS."
    )

    def handle(self, *args, **options):
        closed, deleted = prune()
        keep = "forever" if app_settings.HISTORY_DAYS is None else f"{app_settings.HISTORY_DAYS} days"
        self.stdout.write(f"Closed {closed} orphaned sessions; deleted {deleted} older sessions (keeping {keep}).")
