"""``queryset`` options given as dotted paths; importable whether or not ``tests.roomsapp`` is installed."""


def public_posts():
    from tests.roomsapp.models import Post

    return Post.published.all()


def not_a_queryset():
    return [1, 2, 3]
