"""`minialbert floors`: what a task scores without a language model, the floor rows of the summary.

    minialbert floors --task DIR --out metrics.json --kind majority|tfidf-logreg [--spec JSON]

- `majority`: the most frequent train label (regression: the train mean; token tasks: each
  token's most frequent train tag, lower-cased, and the most frequent tag overall for tokens
  never seen in train).
- `tfidf-logreg` (classification and pair tasks): TF-IDF of word uni- and bigrams (sublinear tf;
  terms in at least `MIN_DF` train texts, at most `MAX_FEATURES`) + scikit-learn
  LogisticRegression with balanced class weights, C chosen from `C_GRID` on the selection split
  by the task's metric; a pair is one text, `text [SEP] text_pair`. Regression and
  token tasks are skipped: the file then holds only `skipped` (the reason), which the aggregate
  leaves out, so the workflow can ask for both floors of every task.

The protocol is the task's, as in fine-tuning: a task with a labelled test split selects on dev
and reports test ("dev"); otherwise dev is reported and `finetune.settings.selection` (`--spec`,
checked by the schema) decides: "train_slice" fits on train minus fine-tuning's stratified slice
(`slice_fraction`, at most `slice_max` examples) and selects on the slice, "reference" fits on all
of train and selects on the reported dev. `max_train_examples` subsamples train as fine-tuning
does. The file has the fine-tuning metrics.json schema (docs/ARCHITECTURE.md) with model
"majority" / "tfidf-logreg", mode "floor", lr 0, seed 0 and no parameter counts.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

KINDS = ("majority", "tfidf-logreg")
C_GRID = (0.1, 1.0, 10.0)
MIN_DF = 2
MAX_FEATURES = 100_000
PAIR_SEPARATOR = " [SEP] "
CLASSIFICATION = ("classification", "pair_classification")


# --------------------------------------------------------------------------------------------
# splits and protocol


def _label_keys(rows: list[dict], task: dict) -> list[str]:
    """Stratification keys as fine-tuning builds them (label ids for classification)."""
    if task["kind"] not in CLASSIFICATION:
        return [""] * len(rows)
    index = {str(name): i for i, name in enumerate(task["labels"])}
    return [str(index[str(r["label"])]) for r in rows]


def protocol_splits(task: dict, rows: dict[str, list[dict]], s: dict) -> dict:
    """protocol, selection/reported split names, and the rows to fit and to select on: the same
    protocol, selection slice and train subsample as fine-tuning (`minialbert.finetune.protocol`)."""
    from .finetune.protocol import SLICE_PURPOSE, choose_protocol
    from .tasks.splitting import subsample_indices

    proto = choose_protocol(bool(task["test_has_labels"]), s["selection"])
    train, seed = rows["train"], task.get("seed", 13)
    keys, n = _label_keys(train, task), len(train)
    held: list[int] = []
    if proto.selection_split == "train_slice":
        size = min(s["slice_max"], int(math.floor(n * s["slice_fraction"] + 0.5)))
        if not 1 <= size < n:
            raise ValueError(f"finetune.settings.slice_fraction: {s['slice_fraction']:g} of {n} train "
                             f"examples gives a selection slice of {size}")
        held = subsample_indices(keys, [str(i) for i in range(n)], size, seed, SLICE_PURPOSE)
    taken = set(held)
    pool = [i for i in range(n) if i not in taken]
    if s["max_train_examples"] and s["max_train_examples"] < len(pool):
        chosen = subsample_indices([keys[i] for i in pool], [str(i) for i in pool],
                                   s["max_train_examples"], seed, "max_train_examples")
        pool = [pool[j] for j in chosen]
    return {"protocol": proto.name, "selection_split": proto.selection_split,
            "reported_split": proto.reported_split, "fit": [train[i] for i in pool],
            "select": [train[i] for i in held] if held else rows["dev"]}


# --------------------------------------------------------------------------------------------
# the two floors


def _gold(task: dict, rows: list[dict]) -> list:
    if task["kind"] == "token_classification":
        return [list(r["tags"]) for r in rows]
    if task["kind"] == "regression":
        return [float(r["label"]) for r in rows]
    return [str(r["label"]) for r in rows]


class Majority:
    """Most frequent label / mean / most frequent tag per token: nothing to select."""

    def __init__(self, task: dict, rows: list[dict]):
        self.kind = task["kind"]
        gold = _gold(task, rows)
        if self.kind == "regression":
            self.value = sum(gold) / len(gold)
        elif self.kind == "token_classification":
            per_token: dict[str, Counter] = defaultdict(Counter)
            overall: Counter = Counter()
            for r in rows:
                for token, tag in zip(r["tokens"], r["tags"]):
                    per_token[token.lower()][tag] += 1
                    overall[tag] += 1
            self.value = overall.most_common(1)[0][0]
            self.per_token = {t: c.most_common(1)[0][0] for t, c in per_token.items()}
        else:
            self.value = Counter(gold).most_common(1)[0][0]

    def predict(self, rows: list[dict]) -> list:
        if self.kind == "token_classification":
            return [[self.per_token.get(t.lower(), self.value) for t in r["tokens"]] for r in rows]
        return [self.value] * len(rows)

    @classmethod
    def candidates(cls, task: dict, rows: list[dict]):
        yield None, cls(task, rows)


def _text(row: dict) -> str:
    return row["text"] + PAIR_SEPARATOR + row["text_pair"] if "text_pair" in row else row["text"]


class TfidfLogreg:
    """One fitted vocabulary, one logistic regression per C."""

    def __init__(self, vectorizer, model):
        self.vectorizer, self.model = vectorizer, model

    def predict(self, rows: list[dict]) -> list:
        return [str(p) for p in self.model.predict(self.vectorizer.transform([_text(r) for r in rows]))]

    @classmethod
    def candidates(cls, task: dict, rows: list[dict]):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        # terms of a single text cannot generalise; the cap bounds the optimiser's cost on GLUE-size tasks
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=MIN_DF,
                                     max_features=MAX_FEATURES)
        x, y = vectorizer.fit_transform([_text(r) for r in rows]), _gold(task, rows)
        for c in C_GRID:
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(x, y)
            yield c, cls(vectorizer, model)


FLOORS = {"majority": Majority, "tfidf-logreg": TfidfLogreg}


def skip_reason(floor: str, task: dict) -> str | None:
    if floor == "tfidf-logreg" and task["kind"] not in CLASSIFICATION:
        return (f"tf-idf + logistic regression needs a classification or pair task; "
                f"{task['name']} is {task['kind']}")
    return None


# --------------------------------------------------------------------------------------------
# the stage


def _score(task: dict, gold: list, pred: list) -> dict:
    from .metrics import compute_metrics

    return compute_metrics(task["kind"], pred, gold, task["labels"])


def _selection_score(metrics: dict, name: str) -> float:
    v = metrics.get(name)
    return -math.inf if v is None else float(v)


def fit_and_select(floor: str, task: dict, p: dict) -> tuple[object, dict, object, list[dict]]:
    """(model, its selection metrics, its grid value, history): the grid's best on the selection split."""
    best, history = None, []
    for param, model in FLOORS[floor].candidates(task, p["fit"]):
        selection = _score(task, _gold(task, p["select"]), model.predict(p["select"]))
        history.append({"selection": selection, **({"C": param} if param is not None else {})})
        score = _selection_score(selection, task["metric"])
        if best is None or score > best[0]:
            best = (score, model, selection, param)
    return (*best[1:], history)


def run_floor(task_dir, floor: str, out, spec=None) -> dict:
    """Fit the floor `floor` (majority | tfidf-logreg) on the prepared task at `task_dir` and write
    its metrics.json to `out`; returns the content."""
    from . import provenance, settings
    from .atomic import write_json
    from .tasks.folder import load_task

    t_start = time.perf_counter()
    if floor not in FLOORS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {floor!r}")
    s = settings.load_section("finetune.settings", spec)
    task, rows = load_task(task_dir)
    result = {"model": floor, "task": task["name"], "kind": task["kind"], "mode": "floor", "lr": 0, "seed": 0}
    reason = skip_reason(floor, task)
    if reason:
        write_json(out, {**result, "skipped": reason})
        print(f"floors: {floor} skipped: {reason}")
        return {**result, "skipped": reason}

    from threadpoolctl import threadpool_limits

    p = protocol_splits(task, rows, s)
    reported = p["reported_split"]
    splits = [reported, *task.get("extra_splits", [])]
    # one BLAS thread: the optimiser's vectors are small, and threads on a busy machine made
    # L-BFGS 20x slower (measured on 2 cores)
    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        model, selection, param, history = fit_and_select(floor, task, p)
        train_seconds = time.perf_counter() - t0
        predictions = {split: {"gold": _gold(task, rows[split]), "pred": model.predict(rows[split])}
                       for split in splits}
    metrics = {split: _score(task, pr["gold"], pr["pred"]) for split, pr in predictions.items()}
    floor_settings = {"floor": floor, "C_grid": list(C_GRID) if param is not None else None, "C": param,
                      **{k: s[k] for k in ("selection", "slice_fraction", "slice_max", "max_train_examples")}}
    result.update({
        "trainable_params": None, "total_params": None,
        "dev": selection if p["selection_split"] == "dev" else metrics["dev"], "test": metrics.get("test"),
        "eval_split": reported, "selection_metric": task["metric"], "best_epoch": None, "epochs": None,
        "train_examples": len(p["fit"]), "settings": floor_settings, "history": history,
        "extra": {split: metrics[split] for split in splits[1:]},
        "protocol": p["protocol"], "selection_split": p["selection_split"], "reported_split": reported,
        "selection": selection, "reported": metrics[reported], "predictions": predictions,
        "labels": task["labels"],
        "runtime": {
            "train_seconds": round(train_seconds, 3),
            "examples_per_second": (round(len(p["fit"]) * len(history) / train_seconds, 2)
                                    if train_seconds else None),
            "total_seconds": round(time.perf_counter() - t_start, 3), "threads": 1, "cache_hit": False,
            **provenance.record(settings=floor_settings, device="cpu", seed=0),
        },
    })
    write_json(out, result)
    print(f"floors: {floor} on {task['name']}: {reported} {task['metric']} "
          f"{metrics[reported].get(task['metric'])}" + (f" (C = {param})" if param is not None else ""))
    return result


def _cmd_floors(args) -> None:
    run_floor(args.task, args.kind, args.out, args.spec)


def register(subparsers) -> None:
    p = subparsers.add_parser("floors", help="score a task without a language model (majority, tf-idf + LR)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, help="prepared task folder (resources/tasks/<task>)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--out", required=True, help="path of the metrics.json to write")
    p.add_argument("--spec", default="{}", help="finetune.settings as a JSON object (selection, slice_*, "
                                                "max_train_examples)")
    p.set_defaults(func=_cmd_floors)
