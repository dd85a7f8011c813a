"""Label classifier results (probe, k-NN, zero-shot) of a trained model beside its random-init floor:
the nested JSON, CLIP_benchmark's result objects and an aligned table."""

from __future__ import annotations

from typing import Any, Optional

from unimodal_free.eval.report import clip_benchmark_record
from unimodal_free.eval.table import aligned

# {modality: {field: {classifier: metrics}}}, one per model ("trained", "random_init").
Results = dict[str, dict[str, dict[str, dict[str, Any]]]]
MODELS = ("trained", "random_init")


def side_by_side(per_model: dict[str, Results]) -> dict[str, Any]:
    """{model: results} -> {modality: {field: {classifier: {model: metrics}}}} (what the JSON holds)."""
    out: dict[str, Any] = {}
    for name, results in per_model.items():
        for m, fields in results.items():
            for field, classifiers in fields.items():
                for clf, metrics in classifiers.items():
                    out.setdefault(m, {}).setdefault(field, {}).setdefault(clf, {})[name] = metrics
    return out


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_label_table(nested: dict[str, Any]) -> str:
    """One line per (modality, field, classifier): rows, classes, top-1 / top-5 / mean per-class recall in
    percent with the random-init model's in parentheses, chance and majority-class rate."""
    with_floor = any("random_init" in by_model for fields in nested.values() for clfs in fields.values()
                     for by_model in clfs.values())
    floor = " (random init)" if with_floor else ""
    header = ["modality", "field", "classifier", "train", "test", "classes", f"top1 %{floor}", f"top5 %{floor}",
              f"mean class recall %{floor}", "chance %", "majority %"]
    rows = []
    for m, fields in nested.items():
        for field, classifiers in fields.items():
            for clf, by_model in classifiers.items():
                t, r = by_model.get("trained", {}), by_model.get("random_init")
                if "skipped" in t:
                    rows.append([m, field, clf, "", "", "", t["skipped"]] + [""] * 4)
                    continue

                def cell(key: str) -> str:
                    if t[key] is None:
                        return "-"
                    return _pct(t[key]) + (f" ({_pct(r.get(key))})" if r and "skipped" not in r else "")

                rows.append([m, field, clf, str(t.get("train_rows", "-")), str(t["rows"]), str(t["classes"]),
                             cell("top1"), cell("top5"), cell("mean_per_class_recall"), _pct(t["chance"]),
                             _pct(t["majority"])])
    if not rows:
        return "no labelled (modality, field) to classify"
    return aligned(header, rows, left=3)


HELDOUT_KINDS = {"_knn_top1": "k-NN", "_zeroshot_top1": "zero-shot"}


def format_heldout_labels(flat: dict[str, float]) -> str:
    """``heldout_label_metrics``' flat ``{m}_{field}_{knn|zeroshot}_top1`` as one line per (modality, field)."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in flat.items():
        suffix = next(s for s in HELDOUT_KINDS if key.endswith(s))
        modality, field = key[: -len(suffix)].split("_", 1)  # modality names hold no underscore
        cells.setdefault((modality, field), {})[HELDOUT_KINDS[suffix]] = value
    header = ["modality", "field", *HELDOUT_KINDS.values()]
    rows = [[m, f, *(_pct(v.get(kind)) for kind in HELDOUT_KINDS.values())] for (m, f), v in cells.items()]
    return aligned(header, rows, left=2)


# Our classifier -> CLIP_benchmark's task and its metric names (acc5 is null with 5 classes or fewer,
# where CLIP_benchmark writes NaN, which is not JSON).
CLIP_BENCHMARK_TASKS = {
    "logistic": ("linear_probe", {"lp_acc1": "top1", "lp_acc5": "top5", "lp_mean_per_class_recall": "mean_per_class_recall"}),
    "zeroshot": ("zeroshot_classification", {"acc1": "top1", "acc5": "top5", "mean_per_class_recall": "mean_per_class_recall"}),
}


def clip_benchmark_records(nested: dict[str, Any], data: str, models: dict[str, tuple[str, str]], language: str,
                           extra: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """CLIP_benchmark result objects, one per (model, modality, field) of the classifiers it has a task for.

    ``models``: our model name -> (CLIP_benchmark ``model``, ``pretrained``); the dataset is
    ``"{data}#{modality}/{field}"``; ``extra`` adds keys to the linear probe's metrics (seed, fewshot_k, C).
    """
    records = []
    for m, fields in nested.items():
        for field, classifiers in fields.items():
            for clf, by_model in classifiers.items():
                if clf not in CLIP_BENCHMARK_TASKS:
                    continue  # k-NN: no CLIP_benchmark task
                task, names = CLIP_BENCHMARK_TASKS[clf]
                for name, metrics in by_model.items():
                    if "skipped" in metrics:
                        continue
                    out = {theirs: metrics[ours] for theirs, ours in names.items()}
                    if task == "linear_probe":
                        out.update({**(extra or {}), "C": metrics["C"]})
                    model, pretrained = models[name]
                    records.append(clip_benchmark_record(f"{data}#{m}/{field}", model, pretrained, task, out, language))
    return records
