"""The prepared task folder, the contract between prepare-task and the later stages.

`<out>/{train,dev,test}.jsonl` (+ one `<name>.jsonl` per extra eval split) and `<out>/task.json`;
the keys are described in the package docstring (`minialbert.tasks`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import staged_dir, write_json
from ..files import json_object
from .readers import split_lines

SPLITS = ("train", "dev", "test")
REQUIRED_KEYS = ("name", "kind", "labels", "metric", "test_has_labels")


def write_task(out: str | os.PathLike, task: dict, splits: dict[str, list[dict]]) -> None:
    """Write the folder atomically: it appears complete or not at all."""
    with staged_dir(out) as tmp:
        for split, rows in splits.items():
            lines = [json.dumps(dict(r), ensure_ascii=False) for r in rows]
            (tmp / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_json(tmp / "task.json", task)


def read_task_json(task_dir: str | os.PathLike) -> dict:
    """The task.json of a prepared task folder, checked for the keys later stages rely on."""
    meta_path = Path(task_dir) / "task.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no task.json (run `minialbert prepare-task`)")
    try:
        task = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path}: not valid JSON ({err.msg})") from None
    for key in REQUIRED_KEYS:
        if key not in task:
            raise ValueError(f"{meta_path}: missing key {key!r}")
    return task


def _split_names(task: dict) -> list[str]:
    return list(SPLITS) + list(task.get("extra_splits", []))


def load_task(task_dir: str | os.PathLike) -> tuple[dict, dict[str, list[dict]]]:
    """(task.json, {split: rows}) of a prepared task folder, extra eval splits included."""
    task_dir = Path(task_dir)
    task = read_task_json(task_dir)
    rows = {}
    for split in _split_names(task):
        path = task_dir / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing split file")
        rows[split] = [json_object(line, path, i)
                       for i, line in enumerate(split_lines(path.read_text(encoding="utf-8")), 1)
                       if line.strip()]
    return task, rows


def task_files(task_dir: str | os.PathLike) -> list[Path]:
    """The files that define a prepared task (what a cache must be verified against)."""
    task_dir = Path(task_dir)
    task = read_task_json(task_dir)
    return [task_dir / "task.json"] + [task_dir / f"{s}.jsonl" for s in _split_names(task)]
