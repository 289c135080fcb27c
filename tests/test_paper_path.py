"""The paper configuration's code path end to end, without the hub: `config/paper.yaml` with only its
data and sizes swapped for local tiny ones (a BERT teacher whose MLM head is trained first, a
Wikipedia-like JSONL corpus, a GLUE-like pair task with a hidden-label test and a mismatched dev),
run by Snakemake. Everything else is the paper's: KD on with the reference attention normalisation,
sampled windows with HF-style overlap, one epoch's worth of steps, the train-slice protocol."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml

from test_distill_helpers import WORDS, counting_world
from test_workflow import REPO, copy_workflow, snakemake

pytestmark = pytest.mark.slow

STUDENT = {"embedding_size": 16, "hidden_size": 32, "num_recursions": 2, "num_attention_heads": 4,
           "intermediate_size": 64, "adapter_reduction_factor": 4, "max_position_embeddings": 128}


def run_of_words(rng, n: int) -> list[str]:
    start = int(rng.integers(len(WORDS)))
    return [w for i in range(n) for w in (WORDS[(start + i) % len(WORDS)], "and")][:-1]


def write_pairs(path, rng, n: int, *, labelled=True, length=4):
    """sentence2 continues sentence1 ("follows") or starts anywhere ("random")."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, delimiter="\t")
        out.writerow(["sentence1", "sentence2", "label"] if labelled else ["sentence1", "sentence2"])
        for i in range(n):
            first = run_of_words(rng, length)
            follows = i % 2 == 0
            if follows:
                nxt = WORDS[(WORDS.index(first[-1]) + 1) % len(WORDS)]
                second = [nxt, "and", *run_of_words(rng, length - 1)]
            else:
                second = run_of_words(rng, length)
            row = [" ".join(first), " ".join(second)]
            out.writerow(row + (["follows" if follows else "random"] if labelled else []))


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    teacher = counting_world(root / "counting")["teacher"]  # MLM head trained: KD passes the head check
    work = copy_workflow(tmp_path_factory.mktemp("paper"))
    data, rng = work / "data", np.random.default_rng(0)
    (data / "wiki").mkdir(parents=True)
    with open(data / "wiki" / "articles.jsonl", "w", encoding="utf-8") as fh:
        for i in range(120):  # 40-80 words: several 32-token windows each, more than the cap of 2
            words = run_of_words(rng, int(rng.integers(20, 40)))
            fh.write(json.dumps({"id": str(i), "title": f"Article {i}", "text": " ".join(words)}) + "\n")
    write_pairs(data / "train.tsv", rng, 300)
    write_pairs(data / "dev_matched.tsv", rng, 60)
    write_pairs(data / "dev_mismatched.tsv", rng, 60, length=6)  # another "genre": longer sentences
    write_pairs(data / "test.tsv", rng, 60, labelled=False)  # hidden labels, as GLUE

    config = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    config["teacher"].update(name="counting", source="files", path=str(teacher), repo_id=None, revision=None)
    config["corpus"].update(name="wiki-tiny", source="files", format="jsonl", path=str(data / "wiki"),
                            hf_id=None, hf_config=None, revision=None, shard_docs=50)
    config["tokenize"].update(max_length=32, stride=16, max_windows_per_doc=2)
    config["student"] = {"preset": "general-e128", "overrides": STUDENT}
    config["distill"].update(batch_size=8, warmup_steps=3, checkpoint_every=10, log_every=1, eval_every=10,
                             layer_map=None, head_check_windows=64)
    config["students"] = [{"name": "minialbert", "init": "random", "distill": True}]
    config["tasks"] = {"pairs": {
        "source": "files", "kind": "pair_classification", "train": str(data / "train.tsv"),
        "dev": str(data / "dev_matched.tsv"), "test": str(data / "test.tsv"),
        "extra_eval_splits": {"dev_mismatched": str(data / "dev_mismatched.tsv")},
        "text_column": "sentence1", "text_pair_column": "sentence2", "label_column": "label"}}
    config["finetune"].update(models=["teacher", "minialbert"], learning_rates=[1e-3], seeds=[1], per_task={})
    config["finetune"]["settings"].update(epochs=2, batch_size=16, max_length=64)
    (work / "config" / "paper-tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(work, "--cores", "2", "--configfile", "config/paper-tiny.yaml")
    return work


def test_distillation_ran_the_reference_recipe_with_kd(paper_run):
    out = paper_run / "results" / "distill" / "minialbert"
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((paper_run / "resources/tokens/counting/wiki-tiny/meta.json").read_text())
    assert summary["spec"]["att_normalisation"] == "reference"
    assert summary["weights"] == {"mlm": 1.0, "kd": 5.0, "att": 3.0, "hid": 3.0}
    losses = summary["final_losses"]
    for term in ("mlm", "kd", "att", "hid"):
        assert math.isfinite(losses[term]) and losses[term] > 0, (term, losses)
    # the head check ran and the trained head beat chance
    assert summary["teacher_mlm_accuracy"] > summary["teacher_mlm_chance"] > 0
    # windows: HF-style overlap, long articles sampled (not their first windows), text only
    assert meta["window_choice"] == "random" and meta["stride"] == 16 and meta["n_docs_capped"] > 0
    # one epoch: the number of steps comes from the tokenised corpus
    assert summary["epochs"] == 1.0 and summary["steps"] == math.ceil(meta["n_windows"] / 8)


def test_selection_is_on_a_train_slice_and_dev_is_reported(paper_run):
    runs = sorted((paper_run / "results" / "finetune").glob("*/pairs/*/*/seed1/metrics.json"))
    assert len(runs) == 3  # teacher full, student full and adapter
    for path in runs:
        m = json.loads(path.read_text())
        assert (m["protocol"], m["selection_split"], m["reported_split"]) == ("train_slice", "train_slice", "dev")
        assert m["selection_split"] != m["reported_split"]
        assert m["train_examples"] == 270  # 10% of the 300 train pairs held out for selection
        assert set(m["extra"]) == {"dev_mismatched"} and "accuracy" in m["extra"]["dev_mismatched"]


def test_matched_and_mismatched_dev_both_reach_the_summary(paper_run):
    summary = paper_run / "results" / "summary"
    with open(summary / "results.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    splits = {(r["model"], r["split"]) for r in rows if r["task"] == "pairs"}
    assert {("minialbert", "dev"), ("minialbert", "dev_mismatched"), ("teacher", "dev_mismatched")} <= splits
    assert {r["protocol"] for r in rows if r["task"] == "pairs"} == {"train_slice"}
    header = next(line for line in (summary / "results.md").read_text().splitlines() if line.startswith("| model"))
    assert "pairs accuracy (dev)" in header and "pairs accuracy (dev_mismatched)" in header
