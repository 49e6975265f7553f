"""The OpenAPI schema of this app's API and its Swagger UI (``schema/`` and ``docs/`` beside the
API): staff-only unless ``DEBUG`` is on or ``PRESENCE_PUBLIC_API_DOCS``; and the ``extend_schema``
the API's views (``presence.api``, ``presence.beacon``) are documented with.
"""

from __future__ import annotations

import functools
from pathlib import Path

import drf_spectacular
from django.conf import settings
from django.template import TemplateDoesNotExist
from django.template.backends.django import DjangoTemplates
from django.urls import get_resolver, get_script_prefix, include, path, reverse
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema as spectacular_extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import BasePermission
from rest_framework.renderers import TemplateHTMLRenderer

from presence.conf import app_settings


def extend_schema(**kwargs):
    """drf-spectacular's ``extend_schema`` on its own AutoSchema: the decorator extends the
    project's ``DEFAULT_SCHEMA_CLASS`` otherwise, which a site with a DRF API of its own need not
    have pointed at drf-spectacular (the schema then fails to build)."""

    def decorate(method):
        method.schema = AutoSchema  # what drf-spectacular's decorator extends, read before the default
        return spectacular_extend_schema(**kwargs)(method)

    return decorate


class DocsPermission(BasePermission):
    """Anyone while the docs are public (``PRESENCE_PUBLIC_API_DOCS``, else ``DEBUG``), else staff:
    the schema lists the staff endpoints and their parameters."""

    def has_permission(self, request, view) -> bool:
        public = app_settings.PUBLIC_API_DOCS
        if public is None:
            public = settings.DEBUG
        return bool(public or (request.user and request.user.is_staff))


def own_patterns() -> list:
    """This app's API where the project included it (``api/presence/``), and nothing else: the
    project's own API views need not suit drf-spectacular, nor be published with these docs
    (nor the schema and docs views, which document nothing)."""
    prefix = reverse("presence:online").removeprefix(get_script_prefix()).removesuffix("online/")
    _, included = get_resolver().namespace_dict["presence"]  # presence/urls.py, as the project included it
    return [path(prefix, include([p for p in included.url_patterns if p.name not in ("schema", "docs")]))]


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 schema of this app's API."""

    permission_classes = [DocsPermission]

    @property
    def patterns(self) -> list:
        return own_patterns()


@functools.cache
def _spectacular_templates() -> DjangoTemplates:
    return DjangoTemplates({"NAME": "presence-api-docs", "DIRS": [Path(drf_spectacular.__file__).parent / "templates"],
                            "APP_DIRS": False, "OPTIONS": {}})


class SwaggerTemplates(TemplateHTMLRenderer):
    """drf-spectacular's Swagger UI page, also in a project that does not list ``drf_spectacular``
    in INSTALLED_APPS (README.md does not ask for it)."""

    def resolve_template(self, template_names):
        try:
            return super().resolve_template(template_names)
        except TemplateDoesNotExist:
            if not template_names:
                raise
            return _spectacular_templates().get_template(template_names[0])


class DocsView(SpectacularSwaggerView):
    """Swagger UI over ``SchemaView`` (assets from drf-spectacular-sidecar when configured)."""

    permission_classes = [DocsPermission]
    renderer_classes = [SwaggerTemplates]
    url_name = "presence:schema"
