"""``PRESENCE_ROOM_KINDS``: each entry resolved to a ``Kind`` (model, key field, the public
queryset, the URL), or to the ``Problem`` that says what is wrong with it and how to fix it
(the system check's E101-E109 and W101, and the log line at run time: ``presence.rooms``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import DatabaseError, models
from django.utils.module_loading import import_string

KIND = r"[a-z][a-z0-9_]{0,19}"
KIND_RE = re.compile(rf"\A{KIND}\Z")
OPTIONS = ("model", "field", "queryset", "url")


@dataclass(frozen=True, slots=True)
class Problem:
    """A wrong ``PRESENCE_ROOM_KINDS`` entry: a system check message, or a log line at run time."""

    id: str
    message: str
    hint: str

    @property
    def is_warning(self) -> bool:
        return self.id.startswith("presence.W")


class WrongKind(Exception):
    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Kind:
    """One resolved ``PRESENCE_ROOM_KINDS`` entry."""

    name: str
    model: type[models.Model]
    field: models.Field  # holds the key
    lookup: str  # "pk" or the field's name
    queryset: Callable[[], Any]  # what the public may see, built anew per lookup (it may depend on now)
    url: Callable[[models.Model], Any]
    checked: bool  # the queryset is the host's: check that it returns a QuerySet of the model

    def key_of(self, obj: models.Model) -> str | None:
        """The canonical key of an object, read without a query (None when the field was deferred)."""
        if self.lookup == "pk":
            value = obj.pk
        else:
            value = obj.__dict__.get(self.field.attname)
        return None if value is None else str(value)

    def public(self) -> models.QuerySet:
        """What the public may see now (raises ``WrongKind`` when the host's queryset is not one of the model)."""
        queryset = self.queryset()
        if isinstance(queryset, models.QuerySet) and issubclass(queryset.model, self.model):
            return queryset
        got = f"a QuerySet of {queryset.model._meta.label}" if isinstance(queryset, models.QuerySet) else (
            f"a {type(queryset).__name__}")
        raise WrongKind(_problem(self.name, "E108", f"its queryset returned {got}, not a QuerySet of "
                              f"{self.model._meta.label}.", _queryset_hint(self.model)))


def _problem(name: object, code: str, message: str, hint: str) -> Problem:
    return Problem(f"presence.{code}", f"PRESENCE_ROOM_KINDS[{name!r}]: {message}", hint)


def _queryset_hint(model: type[models.Model]) -> str:
    return (f"Set 'queryset' to a manager name of {model._meta.label} (e.g. 'published'), or to a function "
            "(or its dotted path) that returns a QuerySet of it.")


def wagtail_page() -> type[models.Model] | None:
    """Wagtail's ``Page`` when Wagtail is installed (imported lazily: Wagtail is optional)."""
    if not apps.is_installed("wagtail"):
        return None
    try:
        from wagtail.models import Page
    except ImportError:
        return None
    return Page


def is_page(model: type[models.Model]) -> bool:
    page = wagtail_page()
    return page is not None and issubclass(model, page)


def _default_url(obj: models.Model) -> Any:
    """``get_absolute_url()``; for Wagtail pages ``get_url()`` (relative when the site is unique)."""
    get_absolute_url = getattr(obj, "get_absolute_url", None)
    if callable(get_absolute_url):
        return get_absolute_url()
    if is_page(type(obj)):
        get_url = getattr(obj, "get_url", None)
        return get_url(request=None) if callable(get_url) else getattr(obj, "url", None)
    return None


def _attribute_url(name: str) -> Callable[[models.Model], Any]:
    def url(obj: models.Model) -> Any:
        value = getattr(obj, name)
        return value() if callable(value) else value

    return url


def _kind(name: object, entry: object) -> Kind:
    """Resolve one entry; raises ``WrongKind`` with the first problem found."""
    if not isinstance(name, str) or not KIND_RE.match(name):
        raise WrongKind(_problem(name, "E102", "not a valid kind name.",
                              "Use 1 to 20 characters of a-z, 0-9 and _, starting with a letter (rooms are "
                              "'<kind>:<key>', e.g. 'article')."))
    shape_hint = ("Give a model label ('blog.Article') or a dict with 'model' and optionally 'field', "
                  "'queryset' and 'url'.")
    if isinstance(entry, str):
        entry = {"model": entry}
    if not isinstance(entry, dict):
        raise WrongKind(_problem(name, "E103", f"a {type(entry).__name__}, not a model label or a dict.", shape_hint))
    unknown = sorted(str(key) for key in entry if key not in OPTIONS)
    if unknown:
        raise WrongKind(_problem(name, "E103", f"unknown option(s) {', '.join(map(repr, unknown))}.",
                              "Use only the options 'model', 'field', 'queryset' and 'url'."))
    label, field_name = entry.get("model"), entry.get("field", "pk")
    queryset, url = entry.get("queryset"), entry.get("url")
    if not isinstance(label, str):
        raise WrongKind(_problem(name, "E103", "'model' must be a model label such as 'blog.Article'.", shape_hint))
    if not isinstance(field_name, str):
        raise WrongKind(_problem(name, "E103", "'field' must be a field name.", "Write e.g. 'field': 'slug' "
                              "(or leave it out: rooms are keyed by 'pk')."))
    for option, value in (("queryset", queryset), ("url", url)):
        if value is not None and not isinstance(value, str) and not callable(value):
            raise WrongKind(_problem(name, "E103", f"'{option}' must be a name, a dotted path or a callable, "
                                  f"not a {type(value).__name__}.", shape_hint))
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        raise WrongKind(_problem(name, "E104", f"{label!r} names no installed model.",
                              "Use 'app_label.ModelName' of a model in INSTALLED_APPS, e.g. 'blog.Article'.")) from None
    meta = model._meta
    try:
        field = meta.pk if field_name == "pk" else meta.get_field(field_name)
    except FieldDoesNotExist:
        field = None
    if field is None or not field.concrete or field.many_to_many:
        raise WrongKind(_problem(name, "E105", f"{meta.label} has no field {field_name!r} to key rooms by.",
                              f"Set 'field' to a unique field of {meta.label} (e.g. 'slug'), or leave it out "
                              "for 'pk'."))
    return Kind(
        name=name,
        model=model,
        field=field,
        lookup="pk" if field_name == "pk" else field.name,
        queryset=_queryset(name, model, queryset),
        url=_url(name, model, url),
        checked=queryset is not None and (callable(queryset) or "." in queryset),
    )


def _queryset(name: str, model: type[models.Model], option: str | Callable | None) -> Callable[[], Any]:
    if option is None:
        if is_page(model):
            # Wagtail: drafts and scheduled pages are not live; password-, login- and group-restricted
            # pages (and their descendants) are not public.
            return lambda: model._default_manager.all().live().public()
        return model._default_manager.all
    if callable(option) or "." in option:
        return _callable(name, "E107", "queryset", option, _queryset_hint(model))
    manager = getattr(model, option, None)
    if not isinstance(manager, models.Manager):
        raise WrongKind(_problem(name, "E106", f"{model._meta.label} has no manager {option!r}.",
                                 _queryset_hint(model)))
    return manager.all


def _url(name: str, model: type[models.Model], option: str | Callable | None) -> Callable[[models.Model], Any]:
    hint = (f"Name a method or attribute of {model._meta.label} that gives its URL, or give a callable(obj) "
            "returning a str or None (or its dotted path); leave 'url' out for get_absolute_url().")
    if option is None:
        return _default_url
    if callable(option) or "." in option:
        return _callable(name, "E109", "url", option, hint)
    if not hasattr(model, option):
        raise WrongKind(_problem(name, "E109", f"{model._meta.label} has no attribute {option!r} for URLs.", hint))
    return _attribute_url(option)


def _callable(name: str, code: str, option: str, value: str | Callable, hint: str) -> Callable:
    """An option given as a callable, or as the dotted path of one."""
    if callable(value):
        return value
    try:
        function = import_string(value)
    except Exception as exc:  # noqa: BLE001 - any import failure is the same misconfiguration
        raise WrongKind(_problem(name, code, f"{option} {value!r} does not import ({exc}).", hint)) from None
    if not callable(function):
        raise WrongKind(_problem(name, code, f"{option} {value!r} is not callable.", hint))
    return function


def _is_unique(kind: Kind) -> bool:
    field = kind.field
    if field.primary_key or field.unique:
        return True
    return any(
        isinstance(c, models.UniqueConstraint) and tuple(c.fields) == (field.name,) and c.condition is None
        for c in kind.model._meta.constraints
    )


def configure(raw: object) -> tuple[dict[str, Kind], list[Problem]]:
    """Resolve a ``PRESENCE_ROOM_KINDS`` value: the usable kinds, and the problems of the others."""
    if not isinstance(raw, dict):
        return {}, [Problem("presence.E101", f"PRESENCE_ROOM_KINDS must be a dict, not a {type(raw).__name__}.",
                            "Write PRESENCE_ROOM_KINDS = {'article': 'blog.Article'}: kind names to model labels "
                            "or to dicts of options.")]
    found: dict[str, Kind] = {}
    problems = []
    for name, entry in raw.items():
        try:
            found[name] = _kind(name, entry)
        except WrongKind as wrong:
            problems.append(wrong.problem)
    return found, problems


def check(raw: object) -> list[Problem]:
    """Every problem of a ``PRESENCE_ROOM_KINDS`` value, for the system check: ``configure``'s, a
    host's queryset that does not return a QuerySet of the model, and keys that are not unique."""
    found, problems = configure(raw)
    for kind in found.values():
        if not _is_unique(kind):
            problems.append(_problem(kind.name, "W101", f"{kind.model._meta.label}.{kind.field.name} is not unique: "
                                     "objects sharing a key share one room, and only one of them can be reached.",
                                     "Key rooms by a unique field (e.g. 'pk' or a unique slug)."))
        if kind.checked:
            try:
                kind.public()
            except WrongKind as wrong:
                problems.append(wrong.problem)
            except DatabaseError:
                pass  # the database is not there yet (e.g. before migrate): nothing to say about the setting
            except Exception as exc:  # noqa: BLE001 - the host's code failed: that is the report
                problems.append(_problem(kind.name, "E108", f"its queryset raised {type(exc).__name__}: {exc}.",
                                         _queryset_hint(kind.model)))
    return problems
