"""One source of truth: every stage, given `{}`, applies exactly the schema's defaults.

If a stage grows a default of its own (a `DEFAULTS` dict, a `.get(key, value)` fallback that
differs, a hard-coded value), these tests fail: the schema (src/minialbert/config.schema.yaml) is
the only place defaults are written.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from minialbert import settings

SRC = Path(__file__).resolve().parents[1] / "src" / "minialbert"


def test_schema_defaults_are_valid_settings():
    for section in ("teacher", "corpus", "tokenize", "student", "distill", "finetune", "finetune.settings"):
        assert settings.defaults(section) == settings.load_section(section, settings.defaults(section))


def test_every_setting_has_a_default():
    """Settings without a default are either required or only meaningful for one task source."""
    for section in ("teacher", "corpus", "tokenize", "distill", "finetune.settings"):
        node = settings.section_schema(section)
        missing = [k for k, sub in node["properties"].items() if "default" not in sub]
        assert not missing, f"{section}: {missing} have no default in the schema"


def test_tokenize_stage_applies_the_schema_defaults():
    from minialbert.data.tokenize import tokenize_spec

    assert tokenize_spec({}) == settings.defaults("tokenize")


def test_teacher_and_corpus_stages_apply_the_schema_defaults():
    from minialbert.data.corpus import corpus_spec
    from minialbert.data.teacher import teacher_spec

    assert teacher_spec({}) == settings.defaults("teacher")
    corpus = corpus_spec({})
    # the one data-dependent default: a known package's own fallback encoding for a null key
    assert corpus.pop("fallback_encoding") == "cp1252"
    expected = settings.defaults("corpus")
    assert expected.pop("fallback_encoding") is None
    assert corpus == expected


def test_distill_stage_applies_the_schema_defaults():
    from minialbert.distill.spec import parse_spec, parse_student_spec

    assert parse_spec({}).to_dict() == settings.defaults("distill")
    student = parse_student_spec({}).to_dict()
    entry = settings.load_section("students.*", {"name": "x"})
    assert student == {**entry, "name": None, "embeddings": None, **settings.defaults("student")}  # no source by default


def test_finetune_stage_applies_the_schema_defaults(monkeypatch):
    from minialbert.finetune import loop

    seen, load = {}, settings.load_section

    def stop(section, value, *args, **kwargs):
        seen["settings"] = load(section, value, *args, **kwargs)
        raise RuntimeError("stop after settings")

    expected = settings.defaults("finetune.settings")
    monkeypatch.setattr(loop.settings, "load_section", stop)
    with pytest.raises(RuntimeError, match="stop after settings"):
        loop.run_finetune("m", "x", "t", "full", 1e-4, 1, {}, "out.json")
    assert seen["settings"] == expected


def test_task_stage_applies_the_schema_defaults():
    from minialbert.tasks.spec import load_spec

    spec = load_spec("bbc_topic", {"dataset": "bbc_topic"})
    defaults = settings.load_section("tasks.*", {"dataset": "bbc_topic"})
    assert spec.pop("kind") == "classification"  # inferred from the dataset (schema: null)
    assert spec == {k: v for k, v in defaults.items() if k != "kind"}


def test_sections_merge_key_by_key_and_lists_replace():
    d = settings.load_section("distill", {"weights": {"kd": 5.0}})
    assert d["weights"] == {"mlm": 1.0, "kd": 5.0, "att": 3.0, "hid": 3.0}
    f = settings.load_section("finetune", {"seeds": [7], "settings": {"epochs": 9}})
    assert f["seeds"] == [7] and f["settings"]["epochs"] == 9 and f["settings"]["batch_size"] == 16
    assert f["learning_rates"] == settings.defaults("finetune")["learning_rates"]


def test_errors_name_the_key_path():
    with pytest.raises(ValueError, match=r"^distill\.weights\.kd: -1 is less than the minimum of 0"):
        settings.load_section("distill", {"weights": {"kd": -1}})
    with pytest.raises(ValueError, match=r"^finetune\.learning_rates\[0\]"):
        settings.load_section("finetune", {"learning_rates": [0]})
    with pytest.raises(ValueError, match=r"^tasks\.t: unknown key 'train' here"):
        settings.load_section("tasks.*", {"dataset": "bbc_topic", "train": "x"}, where="tasks.t")


def test_no_stage_restates_defaults():
    """No hand-written default tables left in the package (the schema is the one place)."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if re.search(r"^(DEFAULTS|[A-Z_]*_DEFAULTS)\s*(:[^=]+)?=\s*\{", text, flags=re.M):
            offenders.append(str(path.relative_to(SRC)))
    assert not offenders, offenders


def test_no_reference_to_a_file_outside_the_project():
    root = SRC.parents[1]
    for path in [*root.glob("src/**/*.py"), *root.glob("docs/*.md"), *root.glob("config/*.yaml"),
                 root / "README.md", root / "Snakefile", *root.glob("workflow/**/*.smk")]:
        assert "DESIGN.md" not in path.read_text(), path
