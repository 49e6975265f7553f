"""Settings of the host blog: a blog as people run them, not the demo.

Naive datetimes (``USE_TZ = False``) in Shanghai time, Chinese first with ``i18n_patterns``,
its own admin site without autodiscovery (``SimpleAdminConfig``), its own REST API (so
``rest_framework`` is there before the app), the database and Redis from the environment.
The presence part follows README.md, "Add it to your blog", step by step.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "hostblog-insecure-key-for-tests-only-0123456789abcdef")
DEBUG = os.environ.get("DEBUG", "0") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "articles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "hostblog.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "hostblog.wsgi.application"

DATABASES = {"default": dj_database_url.config(default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LANGUAGE_CODE = "zh-hans"
# Japanese: Django translates its own texts, the app has no catalogue for it (its widget falls back
# to English, with English plural rules: docs/widget.md, "Language").
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English"), ("ja", "日本語")]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = False

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "/admin/login/"

REST_FRAMEWORK = {
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"presence": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}

# -- live readership: README.md, "Add it to your blog", as written (the project's names put in) --
INSTALLED_APPS = ["daphne", *(app for app in INSTALLED_APPS if app != "daphne")]
INSTALLED_APPS += [app for app in ["channels", "rest_framework", "presence"] if app not in INSTALLED_APPS]

ASGI_APPLICATION = "hostblog.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

PRESENCE_ROOM_KINDS = {"post": {"model": "articles.Article", "field": "slug", "queryset": "published"}}

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    from presence.layers import redis_channel_layers

    CHANNEL_LAYERS = redis_channel_layers(REDIS_URL)
    PRESENCE_REDIS_URL = REDIS_URL
    # Keys of their own on a shared Redis (the tests run several blogs side by side).
    REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "hostblog")
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{REDIS_PREFIX}-layer"
    PRESENCE_REDIS_PREFIX = REDIS_PREFIX
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": REDIS_PREFIX}}
