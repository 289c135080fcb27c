"""Shared builders for the distill tests: tiny teacher folders and tiny tokenised corpora.

Two worlds: random windows over the packaged teacher's 30522-token vocabulary (`make_teacher`,
`make_tokens`), and a "counting language" with its own 26-token vocabulary ("bravo and charlie
and delta ..."), small enough that a tiny BERT learns its MLM head in seconds (`counting_world`).
The counting world and `spec_object` / `student_object` need neither jsonschema nor the packaged
teacher, so the device tests also run on a stock CUDA PyTorch image (benchmarks/gpu_check.sh).

(Named test_distill_* so it is owned with the tests; it defines no tests itself.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from minialbert.files import TOKENIZER_FILES


def make_teacher(dest: Path, tokenizer_src: Path, *, hidden=32, layers=4, heads=4, intermediate=64,
                 mlm_head=True, seed=0, vocab_size=30522) -> Path:
    """A tiny random BERT (BertForMaskedLM or BertModel) with the tokenizer files of `tokenizer_src`
    (the packaged teacher's 30522-token one unless told otherwise)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=intermediate, max_position_embeddings=128)
    model = (BertForMaskedLM if mlm_head else BertModel)(cfg)
    model.save_pretrained(dest)
    for name in TOKENIZER_FILES:
        if (tokenizer_src / name).exists():
            shutil.copy(tokenizer_src / name, dest / name)
    (dest / "manifest.json").write_text(json.dumps({"source": "test", "sha256": f"tiny-{hidden}-{layers}-{mlm_head}",
                                                    "has_mlm_head": mlm_head}))
    return dest


def make_tokens(dest: Path, teacher_dir: Path, *, n_windows=64, max_length=32, seed=0, min_len=6) -> Path:
    """Random windows `[CLS] ids [SEP] pad...` in the documented packed format."""
    from minialbert.data.packed import load_teacher_tokenizer, special_token_ids, vocab_sha256

    dest = Path(dest)
    if (dest / "meta.json").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    tok, _ = load_teacher_tokenizer(teacher_dir)
    sp = special_token_ids(tok, teacher_dir)
    rng = np.random.default_rng(seed)
    ids = np.full((n_windows, max_length), sp["pad_id"], dtype=np.uint16)
    lengths = rng.integers(min_len, max_length + 1, size=n_windows).astype(np.int32)
    lengths[: n_windows // 2] = max_length  # most windows full, as in a packed corpus
    # a small "language": ids from a narrow range so a tiny model can learn something
    for i, n in enumerate(lengths):
        body = 2000 + (rng.integers(0, 50) + np.arange(n - 2) * rng.integers(1, 4)) % 300
        ids[i, 0], ids[i, 1: n - 1], ids[i, n - 1] = sp["cls_id"], body, sp["sep_id"]
    ids.tofile(dest / "input_ids.bin")
    lengths.tofile(dest / "lengths.bin")
    meta = {
        "n_windows": n_windows, "max_length": max_length, "stride": max_length // 2, "dtype": "uint16",
        "vocab_size": 30522, "vocab_sha256": vocab_sha256(tok), "n_docs": n_windows,
        "n_tokens": int(lengths.sum()), **{k: sp[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id", "special_ids")},
    }
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


TINY_STUDENT = {"embedding_size": 16, "hidden_size": 32, "num_recursions": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "adapter_reduction_factor": 4, "max_position_embeddings": 128}


def student_spec(name="s", init="random", distill=True, **overrides) -> dict:
    return {"name": name, "init": init, "distill": distill, "preset": "offline-default",
            "overrides": {**TINY_STUDENT, **overrides}}


def spec(**kw) -> dict:
    base = {"steps": 6, "batch_size": 4, "warmup_steps": 1, "lr": 2e-3, "checkpoint_every": 2, "log_every": 1,
            "eval_every": 3, "precision": "fp32", "threads": 1, "tensorboard": False,
            "weights": {"mlm": 1.0, "kd": 0.0, "att": 1.0, "hid": 1.0}}
    base.update(kw)
    return base


def spec_object(**kw):
    """`spec(**kw)` as a DistillSpec: validated where jsonschema is installed; else (the stock CUDA
    image of benchmarks/gpu_check.sh) the schema's defaults filled in, unvalidated."""
    from minialbert.distill.spec import parse_spec, unvalidated_spec

    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return unvalidated_spec(spec(**kw))
    return parse_spec(spec(**kw))


def student_object(**kw):
    """`student_spec(**kw)` as a StudentSpec, without jsonschema."""
    from minialbert.distill.spec import StudentSpec

    return StudentSpec(**student_spec(**kw))



# ---- the counting language: a vocabulary of its own and a teacher that learns it ---------------

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett",
         "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango")
FILLER = "and"  # every other word: the most frequent token, so chance is ~1/2
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
COUNTING_VOCAB = len(SPECIALS) + len(WORDS) + 1


def make_word_tokenizer(dest: Path, words=(*WORDS, FILLER)) -> Path:
    """A BERT-style WordPiece tokenizer whose vocabulary is the specials plus `words`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate((*SPECIALS, *words))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tok.save(str(dest / "tokenizer.json"))
    (dest / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    # the special tokens by role, as a released BERT tokenizer has them (fine-tuning pads with [PAD])
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "pad_token": "[PAD]", "unk_token": "[UNK]",
        "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}), encoding="utf-8")
    return dest


def counting_texts(n_docs: int, seed: int = 0) -> list[str]:
    """ "golf and hotel and india ...": consecutive words (cyclic) from a random start, 8-14 of them."""
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n_docs):
        start, n = int(rng.integers(len(WORDS))), int(rng.integers(8, 15))
        texts.append(f" {FILLER} ".join(WORDS[(start + i) % len(WORDS)] for i in range(n)))
    return texts


def make_counting_tokens(dest: Path, teacher_dir: Path, n_docs=200, max_length=32) -> Path:
    """The counting corpus as `minialbert download-corpus` writes it, tokenised by `minialbert.data`
    (one window per document); without jsonschema (which `minialbert.data` needs), the same windows
    packed here."""
    dest = Path(dest)
    if (dest / "meta.json").exists():
        return dest
    texts = counting_texts(n_docs)
    try:
        from minialbert.data.tokenize import run_tokenize
        import jsonschema  # noqa: F401
    except ImportError:
        return pack_windows(dest, teacher_dir, texts, max_length)
    corpus = dest.with_name(dest.name + "-corpus")
    corpus.mkdir(parents=True, exist_ok=True)
    with open(corpus / "shard-00000.jsonl", "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
    run_tokenize(corpus, teacher_dir, {"max_length": max_length, "stride": 8, "max_windows_per_doc": None}, dest)
    return dest


def pack_windows(dest: Path, teacher_dir: Path, texts: list[str], max_length: int) -> Path:
    """`[CLS] text [SEP] pad...`, one window per (short) text, in the documented packed format."""
    from minialbert.data.packed import load_teacher_tokenizer, special_token_ids, vocab_sha256

    tok, _ = load_teacher_tokenizer(teacher_dir)
    sp = special_token_ids(tok, teacher_dir)
    rows = [tok.encode(t).ids for t in texts]  # the post-processor adds [CLS] / [SEP]
    assert all(len(r) <= max_length for r in rows)
    ids = np.full((len(rows), max_length), sp["pad_id"], dtype=np.uint16)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    dest.mkdir(parents=True, exist_ok=True)
    ids.tofile(dest / "input_ids.bin")
    lengths.tofile(dest / "lengths.bin")
    meta = {"n_windows": len(rows), "max_length": max_length, "stride": 0, "dtype": "uint16",
            "vocab_size": tok.get_vocab_size(), "vocab_sha256": vocab_sha256(tok), "n_docs": len(rows),
            "n_tokens": int(lengths.sum()),
            **{k: sp[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id", "special_ids")}}
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def train_mlm_head(teacher_dir: Path, tokens_dir: Path, *, steps=300, lr=3e-3, batch=32, seed=0) -> None:
    """Pre-train the teacher (MLM, the engine's masking) on the tokens, briefly, and save it in place:
    ~5 s on one thread, top-1 ~0.8 at the masked slots against a chance of ~0.5."""
    import torch
    import torch.nn.functional as F
    from transformers import BertForMaskedLM

    from minialbert.data.packed import PackedWindows
    from minialbert.distill.masking import mask_tokens, num_mask_slots, step_generator

    data = PackedWindows(tokens_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses from a second (shared) thread
    torch.manual_seed(seed)
    model = BertForMaskedLM.from_pretrained(teacher_dir).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    slots, rng = num_mask_slots(data.max_length, 0.15), np.random.default_rng(seed)
    for step in range(steps):
        ids, am = data.batch(rng.integers(0, len(data), batch))
        mb = mask_tokens(ids, am, num_slots=slots, mask_id=data.mask_id, special_ids=data.special_ids,
                         vocab_size=data.vocab_size, generator=step_generator(seed, step, stream=7))
        h = model.bert(input_ids=mb.input_ids, attention_mask=am).last_hidden_state
        logits = model.cls(h.gather(1, mb.positions[..., None].expand(-1, -1, h.size(-1))))
        F.cross_entropy(logits.flatten(0, 1), mb.labels.flatten(), ignore_index=-100).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.set_num_threads(threads)
    model.save_pretrained(teacher_dir)
    manifest = Path(teacher_dir) / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "sha256": f"trained-{steps}-{seed}"}))


def counting_world(root: Path, *, trained=True, hidden=32, layers=2, heads=4, intermediate=64) -> dict[str, Path]:
    """{"teacher", "tokens"}: a tiny BertForMaskedLM over the counting language (its head trained
    when `trained`) and 200 windows of 32 tokens. Built once per folder."""
    root = Path(root)
    name = f"counting-{hidden}x{layers}-{'trained' if trained else 'random'}"
    vocab = make_word_tokenizer(root / "counting-tokenizer")
    teacher = make_teacher(root / name, vocab, hidden=hidden, layers=layers, heads=heads,
                           intermediate=intermediate, vocab_size=COUNTING_VOCAB)
    tokens = make_counting_tokens(root / "counting-tokens", teacher)
    sha = json.loads((teacher / "manifest.json").read_text())["sha256"]
    if trained and not sha.startswith("trained"):
        train_mlm_head(teacher, tokens)
    return {"teacher": teacher, "tokens": tokens}

