"""The JSON Schemas of the wire contract (``schemas/v1``), and validators that resolve their
``$ref``s offline.

The schemas live in ``<repo>/schemas/v1`` in a source checkout; a wheel carries the same files
as ``policy_pubsub/_schemas/v1`` (pyproject.toml force-includes them).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any, Protocol, cast

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

VERSION = "v1"
BASE_URI = f"https://policy-pubsub.dev/schemas/{VERSION}/"


class SchemaValidator(Protocol):
    """The part of a ``jsonschema`` validator that callers use."""

    schema: dict[str, Any]

    def is_valid(self, instance: object) -> bool: ...

    def validate(self, instance: object) -> None: ...

    def iter_errors(self, instance: object) -> Any: ...


def schemas_dir() -> Path:
    """The directory holding the ``*.json`` schemas: the wheel's copy first, else the
    source tree's.
    """
    package = Path(__file__).resolve().parent
    for candidate in (package / "_schemas" / VERSION, package.parent / "schemas" / VERSION):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no {VERSION} schemas in {package / '_schemas'} or {package.parent / 'schemas'}"
    )


@cache
def _all() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(schemas_dir().glob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        if schema.get("$id") != BASE_URI + path.name:
            raise ValueError(f"{path}: $id must be {BASE_URI + path.name!r}")
        found[path.stem] = schema
    return found


def names() -> list[str]:
    """The schema names (file names without ``.json``), sorted."""
    return list(_all())


def load_schema(name: str) -> dict[str, Any]:
    """A fresh copy of one schema, e.g. ``load_schema("policy-filter")``."""
    schemas = _all()
    if name not in schemas:
        raise KeyError(f"no schema {name!r}; known: {', '.join(schemas)}")
    return copy.deepcopy(schemas[name])


@cache
def registry() -> Registry[Any]:
    """Every schema, by its ``$id``, so that references between them resolve offline."""
    resources = [(schema["$id"], DRAFT202012.create_resource(schema)) for schema in _all().values()]
    empty: Registry[Any] = Registry()
    return empty.with_resources(resources).crawl()


@cache
def validator(name: str) -> SchemaValidator:
    """A draft 2020-12 validator for one schema, checking formats (``date-time``, ``uuid``)
    where ``jsonschema`` can.
    """
    schema = _all().get(name)
    if schema is None:
        raise KeyError(f"no schema {name!r}")
    return cast(
        SchemaValidator,
        Draft202012Validator(
            schema, registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
        ),
    )


__all__ = [
    "BASE_URI",
    "SchemaValidator",
    "load_schema",
    "names",
    "registry",
    "schemas_dir",
    "validator",
]
