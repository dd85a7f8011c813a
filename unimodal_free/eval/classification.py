"""What every label classifier here reports (linear probe, k-NN, zero-shot), from its class scores.

top1/top5 accuracy (top5 only with more than 5 classes, as CLIP_benchmark), mean per-class recall
(the mean over the true classes of the held-out rows of each one's recall: sklearn's
``balanced_accuracy_score``, CLIP_benchmark's ``mean_per_class_recall``), and beside them the two
floors a reader needs: chance (1 / classes) and the majority-class rate (always answering the most
frequent class). A held-out label that is not among the classes is a row no classifier can get right:
it counts as wrong and is reported as ``unknown_rows``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

import numpy as np

TOP5_MIN_CLASSES = 6  # "top-5 where there are more than 5 classes"


def label_metrics(scores: np.ndarray, classes: Sequence[str], true: Sequence[str], majority: str) -> dict[str, Any]:
    """Metrics of ``scores`` (n, C), higher is better, whose columns are ``classes``, against ``true`` (n,).

    ``majority`` is the constant answer the majority-class rate is measured for (the most frequent
    training class; for zero-shot, which has no training split, the most frequent held-out one).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(true), len(classes)):
        raise ValueError(f"scores {scores.shape} must be (rows {len(true)}, classes {len(classes)})")
    names = np.asarray(list(classes), dtype=object)
    truth = np.asarray(list(true), dtype=object)
    order = np.argsort(-scores, axis=1, kind="stable")  # (n, C) best class first; ties: the earlier class
    hit1 = names[order[:, 0]] == truth
    top5: Optional[float] = None
    if len(classes) >= TOP5_MIN_CLASSES:
        top5 = float((names[order[:, :5]] == truth[:, None]).any(axis=1).mean())
    recalls = [float(hit1[truth == c].mean()) for c in sorted(set(truth.tolist()))]
    return {
        "top1": float(hit1.mean()) if len(truth) else 0.0,
        "top5": top5,
        "mean_per_class_recall": float(np.mean(recalls)) if recalls else 0.0,
        "chance": 1.0 / len(classes),
        "majority": float((truth == majority).mean()) if len(truth) else 0.0,
        "majority_class": majority,
        "rows": int(len(truth)),
        "classes": len(classes),
        "unknown_rows": int((~np.isin(truth, names)).sum()),
    }


def most_frequent(labels: Sequence[str]) -> str:
    """The most frequent label; ties go to the first in sorted order (so the answer is reproducible)."""
    counts = Counter(labels)
    return min(counts, key=lambda c: (-counts[c], c))
