"""`init: embeddings`: a student starts from a small BERT's embedding layer (the reference's E=312
students from TinyBERT), on tiny local models; and the paper configs wire it through Snakemake."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file

from minialbert.distill.engine import run
from snakemake_helpers import job_counts
from test_distill_helpers import (COUNTING_VOCAB, WORDS, counting_world, make_teacher, make_word_tokenizer, spec,
                                  student_spec)
from test_workflow import REPO, _job_blocks, snakemake

E = 16  # the tiny student's embedding_size (test_distill_helpers.TINY_STUDENT)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "counting"  # shared with the other distillation tests
    w = counting_world(root, trained=False)
    tokenizer = root / "counting-tokenizer"
    w["source"] = make_teacher(root / "emb-source-16", tokenizer, hidden=E, layers=1, heads=2, intermediate=32,
                               mlm_head=False, seed=7, vocab_size=COUNTING_VOCAB)
    w["wide"] = make_teacher(root / "emb-source-24", tokenizer, hidden=24, layers=1, heads=2, intermediate=32,
                             mlm_head=False, seed=7, vocab_size=COUNTING_VOCAB)
    other = make_word_tokenizer(root / "reversed-tokenizer", words=(*reversed(WORDS), "and"))
    w["other_vocab"] = make_teacher(root / "emb-source-other", other, hidden=E, layers=1, heads=2, intermediate=32,
                                    mlm_head=False, seed=7, vocab_size=COUNTING_VOCAB)
    return w


def embeddings_student(**kw):
    return {**student_spec(init="embeddings", **kw), "embeddings": {"name": "tiny", "source": "files", "path": "x"}}


def test_the_embedding_layer_is_copied_and_the_rest_stays_random(world, tmp_path):
    from transformers import AutoModel

    out = tmp_path / "e16"
    summary = run(world["teacher"], world["tokens"], embeddings_student(distill=False), spec(), out,
                  embeddings=world["source"])
    got = load_file(out / "model.safetensors")
    src = AutoModel.from_pretrained(world["source"]).embeddings
    for ours, theirs in (("word_embeddings", src.word_embeddings), ("position_embeddings", src.position_embeddings),
                         ("token_type_embeddings", src.token_type_embeddings), ("layer_norm", src.LayerNorm)):
        key = next(k for k in got if k.endswith(f"embeddings.{ours}.weight"))
        torch.testing.assert_close(got[key], theirs.weight.detach(), rtol=0, atol=0)
    # the projector is not the SVD basis of `init: teacher`: it keeps the seeded random init
    random = run(world["teacher"], world["tokens"], student_spec(distill=False), spec(), tmp_path / "random")
    assert random["init"] == "random"
    proj = next(k for k in got if k.endswith("projector.weight"))
    torch.testing.assert_close(got[proj], load_file(tmp_path / "random" / "model.safetensors")[proj])
    assert summary["init"] == "embeddings"
    assert summary["init_info"]["embeddings_from"] == str(world["source"])
    assert summary["init_info"]["embedding_size"] == E


def test_it_distils_from_the_copied_embeddings(world, tmp_path):
    s = run(world["teacher"], world["tokens"], embeddings_student(), spec(steps=2), tmp_path / "d",
            embeddings=world["source"])
    assert s["steps"] == 2 and all(v == v and v > 0 for v in s["final_losses"].values())


@pytest.mark.parametrize("source, message", [
    ("wide", r"its embeddings are 24-dimensional but the student's embedding_size is 16"),
    ("other_vocab", r"its vocabulary differs from the teacher's"),
    ("tokens", r"embeddings source .*counting-tokens: no config.json"),  # not a model folder at all
])
def test_a_source_that_does_not_fit_is_refused_by_name(world, tmp_path, source, message):
    out = tmp_path / "bad"
    with pytest.raises(ValueError) as err:
        run(world["teacher"], world["tokens"], embeddings_student(distill=False), spec(), out,
            embeddings=world[source])
    assert re.search(message, str(err.value)) and str(world[source]) in str(err.value), str(err.value)
    assert not out.exists()


def test_init_and_source_go_together(world, tmp_path):
    with pytest.raises(ValueError, match="init: embeddings and an `embeddings` source go together"):
        run(world["teacher"], world["tokens"], student_spec(init="embeddings", distill=False), spec(), tmp_path / "a",
            embeddings=world["source"])
    with pytest.raises(ValueError, match="--embeddings .* exactly when the student has init: embeddings"):
        run(world["teacher"], world["tokens"], embeddings_student(distill=False), spec(), tmp_path / "b")


@pytest.mark.parametrize("configfile, source", [
    ("config/paper.yaml", "tinybert-general-4l-312d"), ("config/biomed.yaml", "tiny-biobert")])
def test_paper_configs_download_the_embedding_source_and_pass_it_to_distill(configfile, source):
    proc = snakemake(REPO, "-n", "-p", "--configfile", configfile, "--cores", "2")
    out = proc.stdout + proc.stderr
    assert job_counts(out).get("download_embeddings") == 1, out[-3000:]
    blocks = _job_blocks(out)
    assert f"resources/embeddings/{source}" in blocks["download_embeddings"]
    distills = [b for b in re.split(r"\n(?=(?:localrule|rule) )", out) if b.startswith("rule distill:")]
    with_source = [b for b in distills if f"--embeddings resources/embeddings/{source} " in b]
    assert len(with_source) == 1, out[-3000:]
    assert all("--embeddings" not in b for b in distills if b not in with_source)
