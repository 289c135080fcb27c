"""The Snakemake workflow: config validation, lint, dry runs, and one real run of the whole DAG.

The real run uses tests/config/tiny.yaml (the packaged teacher and data, cut down) in a temporary
copy of the workflow, so it exercises every rule and the package CLI exactly as `make run` does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake_helpers import job_counts
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKFLOW_FILES = ["Snakefile", "workflow", "config", "profiles", "tests/config"]


def copy_workflow(dest: Path) -> Path:
    for item in WORKFLOW_FILES:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    return dest


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def write_config(path: Path, base: Path, **changes) -> Path:
    config = yaml.safe_load(base.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


# --- fast checks: no job runs -------------------------------------------------------------


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml", "config/biomed.yaml", "tests/config/tiny.yaml"])
def test_configs_validate_and_dry_run(configfile):
    args = ["-n", "--quiet", "rules"] + (["--configfile", configfile] if configfile else [])
    proc = snakemake(REPO, *args)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("finetune", 0) > 0 and counts.get("aggregate") == 1, proc.stdout[-2000:]


def test_offline_study_is_the_default_with_the_full_sweep():
    proc = snakemake(REPO, "-n", "--quiet", "rules", "--configfile", "config/config.yaml", "config/offline-study.yaml")
    study = job_counts(proc.stdout + proc.stderr)
    default = job_counts(snakemake(REPO, "-n", "--quiet", "rules").stdout)
    # 2 learning rates x 3 seeds per arm; everything upstream is shared with `make run`
    assert study["finetune"] == 6 * default["finetune"]
    assert {k: v for k, v in study.items() if k != "finetune"} == {k: v for k, v in default.items() if k != "finetune"}


def test_paper_config_has_the_reference_recipe():
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    assert paper["distill"]["weights"] == {"mlm": 1.0, "kd": 5.0, "att": 3.0, "hid": 3.0}
    assert paper["distill"]["lr"] == 5e-4 and paper["distill"]["warmup_steps"] == 5000
    # global batch 192 = 48 per GPU x the cluster profile's 4 GPUs for distillation
    slurm = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert paper["distill"]["batch_size"] * slurm["set-resources"]["distill"]["gpu"] == 192
    assert paper["distill"]["layer_map"] == [1, 3, 5, 7, 9, 11]
    assert paper["finetune"]["learning_rates"] == [5e-5, 5e-4, 1e-3]
    assert set(paper["tasks"]) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}


def test_lint_is_clean_apart_from_conda():
    proc = snakemake(REPO, "--lint", check=False)
    lints = set(re.findall(r"^\s*\* (.+?):?$", proc.stdout + proc.stderr, flags=re.M))
    assert lints <= {"Specify a conda environment or container for each rule."}, lints


def test_unknown_config_key_is_rejected(tmp_path):
    bad = write_config(tmp_path / "bad.yaml", REPO / "tests/config/tiny.yaml", **{"distill.stepz": 3})
    proc = snakemake(REPO, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert "stepz" in proc.stdout + proc.stderr


def test_kd_with_headless_teacher_is_rejected(tmp_path):
    bad = write_config(tmp_path / "kd.yaml", REPO / "tests/config/tiny.yaml", **{"distill.weights": {"kd": 5.0}})
    proc = snakemake(REPO, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "distill.weights.kd" in out and "MLM head" in out


def test_finetune_model_must_exist(tmp_path):
    bad = write_config(tmp_path / "m.yaml", REPO / "tests/config/tiny.yaml", **{"finetune.models": ["teacher", "nobody"]})
    proc = snakemake(REPO, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0 and "finetune.models[1]" in proc.stdout + proc.stderr


def _job_blocks(output: str) -> dict[str, str]:
    """rule name -> the text of its first job block in a `snakemake -n` listing."""
    blocks = {}
    for block in re.split(r"\n(?=(?:localrule|rule) )", output):
        m = re.match(r"(?:localrule|rule) (\w+):", block)
        if m:
            blocks.setdefault(m.group(1), block)
    return blocks


def test_plain_dry_run_takes_resources_from_the_local_profile():
    """`snakemake -n -p` on the default config: profiles/default's distill memory and runtime."""
    proc = snakemake(REPO, "-n", "-p", "--cores", "2")
    distill = _job_blocks(proc.stdout + proc.stderr)["distill"]
    assert "mem_mb=8000" in distill and "runtime=120" in distill, distill
    assert "threads: 1" in distill or "threads: " not in distill, distill


def test_slurm_dry_run_takes_resources_from_the_cluster_profile():
    """The cluster profile replaces the local one (a workflow profile wins over `--profile`)."""
    proc = snakemake(REPO, "-n", "--workflow-profile", "profiles/slurm", "--configfile", "config/paper.yaml")
    distill = _job_blocks(proc.stdout + proc.stderr)["distill"]
    assert "mem_mb=32000" in distill and "runtime=360" in distill, distill
    assert "gpu=4" in distill, distill


def test_slurm_through_profile_flag_is_refused():
    proc = snakemake(REPO, "-n", "--profile", "profiles/slurm", "--configfile", "config/paper.yaml", check=False)
    assert proc.returncode != 0
    assert "--workflow-profile profiles/slurm" in proc.stdout + proc.stderr


def test_summary_works_without_cores():
    """`snakemake --summary` must not need `--cores` (make pull uses it on the default config)."""
    proc = snakemake(REPO, "--summary")
    assert "results/summary/results.csv" in proc.stdout


def test_user_section_merges_with_defaults_key_by_key(tmp_path):
    """A user's `distill.weights: {kd: 0}` keeps the other weights; a list replaces the default."""
    cfg = write_config(tmp_path / "c.yaml", REPO / "tests/config/tiny.yaml",
                       **{"distill.weights": {"att": 2.0}, "finetune.seeds": [7]})
    proc = snakemake(REPO, "-n", "-p", "--configfile", str(cfg), "--cores", "1")
    out = proc.stdout + proc.stderr
    assert '"weights":{"att":2.0,"hid":3.0,"kd":0.0,"mlm":1.0}' in out, out[-3000:]
    assert "seed7" in out and "seed1/" not in out


def test_learning_rate_reaches_the_job_exactly(tmp_path):
    cfg = write_config(tmp_path / "lr.yaml", REPO / "tests/config/tiny.yaml",
                       **{"finetune.learning_rates": {"full": [1.2345678e-4], "adapter": [1e-3]}})
    proc = snakemake(REPO, "-n", "-p", "--configfile", str(cfg), "--cores", "1")
    out = proc.stdout + proc.stderr
    assert "lr0.000123457/" in out and "--lr 0.00012345678 " in out, out[-3000:]


def test_learning_rates_with_one_tag_are_rejected(tmp_path):
    cfg = write_config(tmp_path / "lr.yaml", REPO / "tests/config/tiny.yaml",
                       **{"finetune.learning_rates": [1.2345678e-4, 1.2345679e-4]})
    proc = snakemake(REPO, "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0 and "share the path tag" in proc.stdout + proc.stderr


def test_bad_per_task_setting_names_the_task(tmp_path):
    cfg = write_config(tmp_path / "pt.yaml", REPO / "tests/config/tiny.yaml",
                       **{"finetune.per_task": {"bbc_topic": {"epochz": 2}}})
    proc = snakemake(REPO, "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0 and "finetune.per_task.bbc_topic" in proc.stdout + proc.stderr


# --- one real run of the whole DAG --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = copy_workflow(tmp_path_factory.mktemp("pipeline"))
    snakemake(work, "--cores", "2", "--configfile", "tests/config/tiny.yaml")
    return work


@pytest.mark.slow
def test_pipeline_produces_the_summary(tiny_run):
    summary = tiny_run / "results/summary"
    for name in ("results.csv", "comparisons.csv", "results.md", "params.csv", "metrics.json", "scores.png"):
        assert (summary / name).stat().st_size > 0, name
    assert (summary / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads((summary / "metrics.json").read_text())
    metrics.pop("runtime")  # provenance of the summary, not a task
    assert set(metrics) == {"bbc_topic", "wnut16"}
    arms = {"teacher/full", "distilled/full", "distilled/adapter", "random-init/full", "random-init/adapter"}
    floors = {"majority/floor", "tfidf-logreg/floor"}
    for task, scores in metrics.items():
        assert set(scores) - floors == arms and "majority/floor" in scores, task
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    assert "tfidf-logreg/floor" in metrics["bbc_topic"]  # token tasks have no TF-IDF floor

    # every number with its interval and split; paired comparisons beside it
    import pandas as pd

    results = pd.read_csv(summary / "results.csv")
    assert {"split", "ci_low", "ci_high", "protocol"} <= set(results.columns)
    assert (results["ci_low"] <= results["mean"]).all() and (results["mean"] <= results["ci_high"]).all()
    assert (summary / "comparisons.csv").stat().st_size > 0
    # the report's ingredients
    for name in ("figures/1_score_vs_params.svg", "figures/5_anytime.png", "report/results.html", "inference.csv"):
        assert (summary / name).stat().st_size > 0, name

    table = (summary / "results.md").read_text()
    assert "| distilled | adapter |" in table and "| random-init | full |" in table

    # every fine-tuning job wrote its metrics; the adapter arm trains fewer parameters than full
    run = json.loads((tiny_run / "results/finetune/distilled/bbc_topic/adapter/lr0.001/seed1/metrics.json").read_text())
    full = json.loads((tiny_run / "results/finetune/distilled/bbc_topic/full/lr0.0001/seed1/metrics.json").read_text())
    assert run["trainable_params"] < full["trainable_params"] == full["total_params"]

    # distilled student: an HF checkpoint in safetensors, with its training log
    student = tiny_run / "results/distill/distilled"
    assert (student / "model.safetensors").exists() and (student / "config.json").exists()
    assert json.loads((student / "config.json").read_text())["model_type"] == "minialbert"
    assert json.loads((student / "summary.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_saved_checkpoint_answers_through_a_transformers_pipeline(tiny_run):
    """finetune.settings.save (on in the tiny config): the first seed's model loads with plain
    transformers after `import minialbert`, and predicts what the evaluation recorded."""
    import minialbert  # noqa: F401  (registers the model type)
    from transformers import pipeline

    run = tiny_run / "results/finetune/distilled/bbc_topic/full/lr0.0001/seed1"
    metrics = json.loads((run / "metrics.json").read_text())
    classify = pipeline("text-classification", model=str(run / metrics["checkpoint"]), device="cpu")
    task = tiny_run / "resources/tasks/bbc_topic"
    split = metrics["reported_split"]
    rows = [json.loads(line) for line in (task / f"{split}.jsonl").read_text().splitlines()][:8]
    got = [p["label"] for p in classify([r["text"] for r in rows], truncation=True)]
    assert got == metrics["predictions"][split]["pred"][:8]


@pytest.mark.slow
def test_report_command_works_as_written(tiny_run):
    """The README's `snakemake --report report.html`, with no --cores."""
    snakemake(tiny_run, "--report", "report.html", "--configfile", "tests/config/tiny.yaml")
    assert (tiny_run / "report.html").stat().st_size > 10_000


@pytest.mark.slow
def test_rerun_does_nothing(tiny_run):
    proc = snakemake(tiny_run, "-n", "--configfile", "tests/config/tiny.yaml")
    assert job_counts(proc.stdout + proc.stderr) == {}, proc.stdout[-3000:]


@pytest.mark.slow
def test_changing_a_learning_rate_reruns_only_those_jobs(tiny_run):
    cfg = write_config(
        tiny_run / "lr.yaml",
        tiny_run / "tests/config/tiny.yaml",
        **{"finetune.learning_rates": {"full": [1e-4], "adapter": [5e-4]}},
    )
    proc = snakemake(tiny_run, "-n", "--configfile", str(cfg))
    # adapter arms: 2 students x 2 tasks; nothing upstream reruns
    assert job_counts(proc.stdout + proc.stderr) == {"finetune": 4, "aggregate": 1, "figures": 1,
                                                     "report_tables": 1, "all": 1}
