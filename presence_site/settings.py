"""Settings for the demo blog, read from the environment (see README, "Settings").

The defaults are for local development: DEBUG on, SQLite, in-memory channel layer.
Set ``REDIS_URL`` to run several server processes that share one count (``REDIS_CLUSTER`` and
``CHANNEL_REDIS_URLS`` to spread Redis over several servers).
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from presence.layers import redis_channel_layers

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() not in {"0", "false", "no", "off", ""}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", "1")

_DEV_SECRET_KEY = "django-insecure-dev-only-presence-site-do-not-deploy"
SECRET_KEY = os.environ.get("SECRET_KEY", _DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == _DEV_SECRET_KEY:
    raise ImproperlyConfigured("Set the SECRET_KEY environment variable when DEBUG is off.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")

# HTTPS (README, "Deploying"): on by default when DEBUG is off, off with DEBUG on so that
# `make run` keeps working over plain http. Behind a proxy that terminates TLS, set
# SECURE_PROXY_SSL_HEADER=1 (it must set X-Forwarded-Proto) or SECURE_SSL_REDIRECT=0.
_PRODUCTION = "0" if DEBUG else "1"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _PRODUCTION)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _PRODUCTION)
# HSTS: one day by default (raise it once HTTPS is known to work: browsers remember it);
# subdomains and preload only on request, as they bind every subdomain.
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0" if DEBUG else "86400"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "0")
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", "0")
if env_bool("SECURE_PROXY_SSL_HEADER", "0"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    # First, so that `manage.py runserver` is Daphne's and serves WebSockets too.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "presence",
    "blog",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "presence_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "presence_site.wsgi.application"
ASGI_APPLICATION = "presence_site.asgi.application"

# conn_max_age=0: under ASGI every request and consumer call may run in its own thread,
# so persistent connections would pile up rather than be reused.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A database that accepts connections but never answers must not hang the one thread that
    # async code reaches the ORM through (room lookups, history writes) for minutes.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI schema at /api/schema/, Swagger UI at /api/docs/ with its assets served from
# drf-spectacular-sidecar (static files), not from a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Live presence API",
    "DESCRIPTION": "Live readership of the blog (public) and reading history (staff).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

REDIS_URL = os.environ.get("REDIS_URL") or None
# REDIS_CLUSTER=1: REDIS_URL names any node of a Redis Cluster, which then holds the presence
# store only. Neither channels-redis nor Django's Redis cache can use a cluster, so the channel
# layer needs CHANNEL_REDIS_URLS, and the cache uses the first of those servers.
REDIS_CLUSTER = env_bool("REDIS_CLUSTER", "0")
# The channel layer shards over several standalone Redis servers (channels-redis's own
# consistent hashing of channels and groups): CHANNEL_REDIS_URLS, comma-separated. Every
# process must list the same servers in the same order. Default: REDIS_URL alone.
CHANNEL_REDIS_URLS = env_list("CHANNEL_REDIS_URLS", "" if REDIS_CLUSTER else REDIS_URL or "")
if REDIS_CLUSTER and not (REDIS_URL and CHANNEL_REDIS_URLS):
    raise ImproperlyConfigured(
        "REDIS_CLUSTER=1 needs REDIS_URL (a node of the cluster) and CHANNEL_REDIS_URLS (standalone "
        "Redis servers for the channel layer, which cannot use a cluster)."
    )

if CHANNEL_REDIS_URLS:
    # socket_timeout=None for redis-py 8, a pool of 1000, group expiry 300 s and room for the
    # hubs' messages: presence/layers.py says why.
    CHANNEL_LAYERS = redis_channel_layers(CHANNEL_REDIS_URLS, prefix="presence-layer")
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 300},
        }
    }

if REDIS_URL:
    # One cache for every process, so that the API's throttles count requests site-wide.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CHANNEL_REDIS_URLS[0] if REDIS_CLUSTER else REDIS_URL,
            "KEY_PREFIX": "presence-site",
        }
    }

# Rooms are the blog's articles, by pk, as the public sees them: scheduled ones are refused.
PRESENCE_ROOM_KINDS = {"article": {"model": "blog.Article", "queryset": "published"}}

# The presence store shares the site's Redis; without it, the store is in-memory.
PRESENCE_REDIS_URL = REDIS_URL
PRESENCE_REDIS_CLUSTER = REDIS_CLUSTER

# The proxies in front (TRUSTED_PROXIES=127.0.0.1 behind a local nginx, deploy/README.md): their
# X-Forwarded-For names the client, for the per-address caps and throttles. None: the socket's peer.
PRESENCE_TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "presence": {
            "handlers": ["console"],
            "level": os.environ.get("LOG_LEVEL", "INFO").upper(),
            "propagate": False,
        },
    },
}
