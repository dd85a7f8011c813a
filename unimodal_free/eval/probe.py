"""What a frozen representation knows: a linear probe and a k-NN classifier per modality and label field.

Arrays in, metrics out (the CLI is ``python -m unimodal_free.eval probe``):

- **Linear probe** (CLIP's protocol): scikit-learn's ``LogisticRegression`` (L-BFGS, up to 1000
  iterations) on the frozen, L2-normalised features. Its inverse regularisation C is swept over
  ``C_GRID`` (CLIP's range 1e-6..1e6, one value per decade where CLIP takes 96 steps), each fitted on
  80% of the train split and scored on the other 20% (a seeded per-class split); the best C is refitted
  on the whole train split and scored on the held-out split. Several C tied for the best validation
  accuracy (a small validation part saturates): the middle one of them. With fewer than two examples
  of a class there is nothing to validate on: C = 1.
- **k-NN** (DINO's ``eval_knn``): cosine similarity to every train row, the k = 20 nearest vote for
  their class with weight exp(similarity / 0.07).
- ``fewshot_k``: k train examples per class, the first k of a seeded permutation (CLIP_benchmark's
  few-shot selection); a class with fewer keeps them all.

Both report :func:`~unimodal_free.eval.classification.label_metrics` (top-1, mean per-class recall,
chance, majority-class rate).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from unimodal_free.eval.classification import label_metrics, most_frequent
from unimodal_free.eval.embed import EmbeddingSet

C_GRID = tuple(float(c) for c in np.logspace(-6, 6, 13))
VAL_SHARE = 0.2
KNN_K = 20
KNN_TEMPERATURE = 0.07
MAX_ITER = 1000


def as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """(n, D) float32 rows, L2-normalised (cosine similarity is then a dot product)."""
    x = np.asarray(x.detach().cpu().float() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def per_class_shuffle(labels: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """Each class's row indices, in the order of one seeded permutation of all rows."""
    perm = np.random.default_rng(seed).permutation(len(labels))
    out: dict[str, list[int]] = {}
    for i in perm:
        out.setdefault(labels[i], []).append(int(i))
    return {c: np.asarray(idx) for c, idx in out.items()}


def fewshot_subset(labels: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Sorted indices of the first ``k`` rows of each class in a seeded permutation."""
    return np.sort(np.concatenate([idx[:k] for idx in per_class_shuffle(labels, seed).values()]))


def validation_split(labels: Sequence[str], seed: int, share: float = VAL_SHARE) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(fit, val) indices: ``share`` of every class (at least one) held out; None when a class has one row."""
    fit, val = [], []
    for idx in per_class_shuffle(labels, seed + 1).values():
        if len(idx) < 2:
            return None
        n_val = min(len(idx) - 1, max(1, round(share * len(idx))))
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def fit_logistic(x: np.ndarray, y: Sequence[str], c: float) -> LogisticRegression:
    # One BLAS thread: these fits are small, and thread start-up made them ten times slower on 2 busy cores.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)  # a tiny C or separable data: the fit is still usable
        return LogisticRegression(C=c, max_iter=MAX_ITER).fit(x, list(y))


def logistic_probe(x_train, y_train: Sequence[str], x_test, y_test: Sequence[str], seed: int = 0,
                   c_grid: Sequence[float] = C_GRID) -> dict[str, Any]:
    """Linear probe: C chosen on a validation part of the train split, refitted on all of it, scored on test."""
    x_train, x_test, y_train = as_array(x_train), as_array(x_test), list(y_train)
    classes = sorted(set(y_train))
    if len(classes) < 2:
        return {"skipped": f"only {len(classes)} class in the train split"}
    split = validation_split(y_train, seed)
    val_scores: dict[str, float] = {}
    best_c, chosen_by = 1.0, "default (a class has a single train example: nothing to validate on)"
    if split is not None:
        fit, val = split
        for c in c_grid:
            model = fit_logistic(x_train[fit], [y_train[i] for i in fit], c)
            val_scores[f"{c:g}"] = float(model.score(x_train[val], [y_train[i] for i in val]))
        accs = np.asarray(list(val_scores.values()))
        tied = np.flatnonzero(accs == accs.max())
        best_c = float(c_grid[int(tied[len(tied) // 2])])  # ties (a small, saturated validation part): the middle one
        chosen_by = f"validation ({len(val)} of {len(y_train)} train rows)"
    model = fit_logistic(x_train, y_train, best_c)
    # Logits rank the classes as the probabilities do, without log(0) = -inf where a probability underflows.
    scores = model.decision_function(x_test)  # (n_test, C), columns in model.classes_ (sorted); (n_test,) for 2
    if scores.ndim == 1:
        scores = np.stack([-scores, scores], axis=1)  # (n_test, 2): the binary logit as two class scores
    out = label_metrics(scores, list(model.classes_), y_test, most_frequent(y_train))
    out.update({"train_rows": len(y_train), "C": best_c, "C_chosen_by": chosen_by, "val_top1": val_scores})
    return out


def knn_scores(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE) -> np.ndarray:
    """(n_test, C) DINO votes: the k most similar train rows add exp(sim / T) to their class (y_train: indices)."""
    sims = x_test @ x_train.T  # (n_test, n_train) cosine
    k = min(k, x_train.shape[0])
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (n_test, k), any order
    weights = np.exp(np.take_along_axis(sims, nearest, axis=1) / temperature)  # (n_test, k)
    votes = np.zeros((x_test.shape[0], num_classes))
    np.add.at(votes, (np.arange(x_test.shape[0])[:, None], y_train[nearest]), weights)
    return votes


def knn_classify(x_train, y_train: Sequence[str], x_test, y_test: Sequence[str], k: int = KNN_K,
                 temperature: float = KNN_TEMPERATURE) -> dict[str, Any]:
    """k-NN on the train split, scored on test."""
    classes = sorted(set(y_train))
    index = {c: i for i, c in enumerate(classes)}
    y_idx = np.asarray([index[c] for c in y_train])
    votes = knn_scores(as_array(x_train), y_idx, as_array(x_test), len(classes), k, temperature)
    out = label_metrics(votes, classes, y_test, most_frequent(list(y_train)))
    out.update({"train_rows": len(y_train), "k": min(k, len(y_train)), "temperature": temperature})
    return out


def knn_cross_validated(x, y: Sequence[str], folds: int = 5, seed: int = 0, k: int = KNN_K,
                        temperature: float = KNN_TEMPERATURE) -> dict[str, Any]:
    """k-NN inside one labelled set: each of ``folds`` seeded folds is classified by the other folds' rows.

    For the trainer's periodic eval, which has the held-out set only. The majority class is the whole
    set's (each fold's own training majority differs at most by a row or two).
    """
    x, y = as_array(x), list(y)
    classes = sorted(set(y))
    index = {c: i for i, c in enumerate(classes)}
    y_idx = np.asarray([index[c] for c in y])
    fold_of = np.random.default_rng(seed).permutation(len(y)) % folds  # (n,) balanced fold sizes
    votes = np.zeros((len(y), len(classes)))
    for f in range(folds):
        test, train = fold_of == f, fold_of != f
        if test.any() and train.any():
            votes[test] = knn_scores(x[train], y_idx[train], x[test], len(classes), k, temperature)
    out = label_metrics(votes, classes, y, most_frequent(y))
    out.update({"folds": folds, "k": k, "temperature": temperature})
    return out


def label_rows(emb: EmbeddingSet, modality: str, field: str) -> tuple[np.ndarray, list[str]]:
    """(rows, D) features and labels of the rows of ``modality`` that carry ``field``."""
    labels = emb.labels.get(modality, [])
    keep = [i for i, lab in enumerate(labels) if field in lab]
    return as_array(emb.embeddings[modality][keep]), [str(labels[i][field]) for i in keep]


def label_fields(emb: EmbeddingSet, modality: str) -> list[str]:
    """The label fields any row of ``modality`` carries, sorted."""
    return sorted({f for lab in emb.labels.get(modality, []) for f in lab})


def probe_embeddings(train: EmbeddingSet, heldout: EmbeddingSet, fewshot_k: Optional[int] = None, seed: int = 0,
                     knn_k: int = KNN_K, modalities: Optional[Sequence[str]] = None) -> dict[str, dict[str, dict[str, Any]]]:
    """{modality: {field: {"logistic": metrics, "knn": metrics}}} for every (modality, field) labelled in both
    splits (of ``modalities`` only, when given)."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for m in heldout.modalities:
        if modalities is not None and m not in modalities:
            continue
        for field in label_fields(heldout, m):
            if field not in label_fields(train, m):
                continue
            x_train, y_train = label_rows(train, m, field)
            if fewshot_k is not None:
                keep = fewshot_subset(y_train, fewshot_k, seed)
                x_train, y_train = x_train[keep], [y_train[i] for i in keep]
            x_test, y_test = label_rows(heldout, m, field)
            results.setdefault(m, {})[field] = {
                "logistic": logistic_probe(x_train, y_train, x_test, y_test, seed),
                "knn": knn_classify(x_train, y_train, x_test, y_test, knn_k),
            }
    return results
