"""Settings: the config schema (`config.schema.yaml`, beside this file) is their one source of truth.

The Snakefile validates the whole config against the schema, and every `minialbert <stage>`
validates the section it receives with `load_section`, so a stage run by hand gets exactly the
defaults a workflow run gets. Defaults are filled key by key at every level (a user's
`distill.weights: {kd: 5}` keeps the other weights); a list given by the user replaces the default
list whole. Errors name the key path (`distill.weights.kd: ...`).

Sections are named by their path in the config: `distill`, `finetune.settings`, and `students.*`
(one student entry) or `tasks.*` (one task spec) for the items of a list or mapping.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def schema() -> dict:
    import yaml

    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _resolve(node: dict) -> dict:
    root = schema()
    while "$ref" in node and len(node) <= 3:  # {$ref, default, description}: follow the reference
        name = node["$ref"].removeprefix("#/$defs/")
        node = {**root["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def section_schema(section: str) -> dict:
    """The schema of one section, e.g. `distill`, `finetune.settings`, `tasks.*`."""
    node = schema()
    for part in section.split("."):
        node = _resolve(node)
        if part == "*":
            node = node["items"] if node.get("type") == "array" else node["additionalProperties"]
        else:
            try:
                node = node["properties"][part]
            except KeyError:
                raise KeyError(f"no config section {section!r} in {SCHEMA_PATH.name}") from None
    return _resolve(node)


@functools.cache
def _validator_class():
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, node):
        # the FAQ recipe of jsonschema, with copies so no instance shares the schema's objects
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, node)

    return validators.extend(base, {"properties": fill_defaults})


def _message(err, where: str) -> str:
    key = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(known))
        return f"{key}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})"
    if "propertyNames" in err.schema_path:
        allowed = err.schema.get("enum")
        if allowed:  # a key not allowed with this `source`
            return f"{key}: unknown key {err.instance!r} here (allowed: {', '.join(map(str, allowed))})"
        return f"{key}: {err.instance!r} is not allowed as a name here ({err.message})"
    if err.validator == "not":
        return f"{key}: {err.instance!r} is not allowed here"
    return f"{key}: {err.message}"


def validate(instance: Any, node: dict, where: str) -> Any:
    """Fill defaults into `instance` (in place) and check it; ValueError naming the key path."""
    from jsonschema.exceptions import best_match

    full = {**node, "$defs": schema()["$defs"]}
    err = best_match(_validator_class()(full).iter_errors(instance))
    if err is not None:
        raise ValueError(_message(err, where))
    return instance


def parse(value: str | dict | None, where: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return copy.deepcopy(value)


def load_section(section: str, value: str | dict | None, where: str | None = None) -> dict:
    """A section (JSON text or a mapping) merged with the schema defaults and validated.

    `where` names the section in errors (default: `section`, e.g. `tasks.bbc_topic` for `tasks.*`).
    """
    where = where or section
    return validate(parse(value, where), section_schema(section), where)


def defaults(section: str) -> dict:
    """The effective settings of a section given as `{}`."""
    return load_section(section, {})
