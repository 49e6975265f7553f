"""Posts keyed by a slug on a case-insensitive collation (as MySQL's default is), with drafts,
private posts and scheduled posts that a ``published`` manager leaves out, and a permalink
method instead of ``get_absolute_url``."""

from django.db import connection, models
from django.utils import timezone

# A real case-insensitive collation of each backend the tests run on; on PostgreSQL it is created
# by the fixture that creates the table (``tests/test_rooms.py``, ``post_model``).
CASE_INSENSITIVE = {"sqlite": "NOCASE", "postgresql": "presence_test_ci"}[connection.vendor]
POSTGRES_COLLATION = (
    "CREATE COLLATION IF NOT EXISTS presence_test_ci "
    "(provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
)


class PublishedPosts(models.Manager):
    def get_queryset(self):
        return super().get_queryset().filter(status=Post.Status.PUBLIC, published_at__lte=timezone.now())


class Post(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLIC = "public"
        PRIVATE = "private"

    slug = models.SlugField(unique=True, db_collation=CASE_INSENSITIVE)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PUBLIC)
    published_at = models.DateTimeField(default=timezone.now)

    objects = models.Manager()
    published = PublishedPosts()

    def __str__(self) -> str:
        return self.title

    def permalink(self) -> str:
        return f"/posts/{self.slug}/"

