"""Load YAML documents and validate them against the packaged JSON Schemas.

Schemas live in ``daas_hub/schemas/*.schema.yaml`` and are loaded once. A document
that does not validate raises :class:`~daas_hub.errors.SettingsError` naming the
file, the entry (``proposals[2] "MX-1001" > members[0] > role``) and the fix.

``jsonschema`` is imported when a document is first checked, not with this module:
importing it compiles a grammar (0.8 CPU-s here), and every session's start-up
(``daas-hub-session``, through :mod:`daas_hub.provenance`) imports this module
without checking anything.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import SettingsError

if TYPE_CHECKING:
    import jsonschema

#: keys that identify a list item in messages, tried in order
_LABEL_KEYS = ("id", "slug", "username", "name")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's when PyYAML has it: ~8x faster on large proposal files)
    that keeps dates and times as the strings the admin wrote.

    JSON Schema validates strings; the model parses them (``datetime.fromisoformat``).
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@functools.cache
def load_schema(name: str) -> dict:
    """The packaged schema ``name`` (``proposals``, ``profiles``, ``site``)."""
    text = resources.files("daas_hub.schemas").joinpath(f"{name}.schema.yaml").read_text()
    schema = yaml.safe_load(text)
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def read_yaml(path: str | Path, *, what: str, fix_missing: str) -> Any:
    """Parse the YAML file at ``path``; ``what`` says what the file is for."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SettingsError(path, "", f"the {what} file does not exist", fix_missing) from None
    except OSError as e:
        raise SettingsError(
            path, "", f"the {what} file cannot be read ({e.strerror})",
            "check the file's permissions: the hub reads it at start-up",
        ) from None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SettingsError(
            path, where, f"this is not valid YAML ({problem})",
            "correct the YAML syntax at that place (indentation, quotes, colons)",
        ) from None


def describe_path(document: Any, path) -> str:
    """A readable location for a JSON path inside ``document``."""
    parts: list[str] = []
    node = document
    for key in path:
        if isinstance(key, int):
            label = ""
            try:
                item = node[key]
            except (IndexError, KeyError, TypeError):
                item = None
            if isinstance(item, dict):
                for k in _LABEL_KEYS:
                    if isinstance(item.get(k), (str, int)):
                        label = f' "{item[k]}"'
                        break
            if parts:
                parts[-1] += f"[{key}]{label}"
            else:
                parts.append(f"[{key}]{label}")
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (IndexError, KeyError, TypeError):
            node = None
    return " > ".join(parts) or "(top level)"


def _fix_for(error: jsonschema.ValidationError) -> str:
    hint = error.schema.get("x-fix") if isinstance(error.schema, dict) else None
    if hint:
        return hint
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"remove or rename the key; the keys allowed here are: {', '.join(allowed)}"
    if error.validator == "required":
        return "add the missing key"
    if error.validator == "enum":
        return "use one of: " + ", ".join(map(str, error.validator_value))
    if error.validator == "pattern":
        return f"use a value matching {error.validator_value!r}"
    if error.validator == "type":
        return f"give a value of type {error.validator_value}"
    return "see the file format in the docs (docs/settings.md, docs/proposals.md, docs/profiles.md)"


def validate(document: Any, schema_name: str, file: str | Path) -> None:
    """Raise :class:`SettingsError` for the first problem in ``document``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema_name))
    errors = sorted(validator.iter_errors(document), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    raise SettingsError(
        file, describe_path(document, error.absolute_path), error.message, _fix_for(error)
    )
