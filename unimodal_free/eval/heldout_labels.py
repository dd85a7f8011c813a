"""Label metrics cheap enough for the trainer's periodic eval, on an EmbeddingSet it already computed.

The held-out set is all it has, so k-NN is cross-validated inside it (5 seeded folds, each classified
by the other four; DINO's k = 20, T = 0.07) and zero-shot needs no training at all. No model pass
beyond embedding the class prompts (``embed_texts``), a few hundred short texts for the demo's fields.
"""

from __future__ import annotations

from typing import Optional, Sequence

from unimodal_free.eval.embed import EmbeddingSet
from unimodal_free.eval.probe import knn_cross_validated, label_fields, label_rows
from unimodal_free.eval.zeroshot import ClassSpec, EmbedTexts, fitting_demo_specs, zeroshot_embeddings

FOLDS = 5


def heldout_label_metrics(emb: EmbeddingSet, embed_texts: Optional[EmbedTexts] = None,
                          specs: Optional[Sequence[ClassSpec]] = None, folds: int = FOLDS) -> dict[str, float]:
    """Flat scalars ``{m}_{field}_knn_top1`` (every labelled modality) and ``{m}_{field}_zeroshot_top1``.

    Zero-shot runs when ``embed_texts`` (prompts -> (n, D), embedded like ``emb``'s rows) is given, for
    ``specs`` (default: the demo's fields whose labels the set's values fit). A (modality, field) with
    fewer than two classes or fewer rows than folds is left out.
    """
    out: dict[str, float] = {}
    for m in emb.modalities:
        for field in label_fields(emb, m):
            x, y = label_rows(emb, m, field)
            if len(set(y)) >= 2 and len(y) >= folds:
                out[f"{m}_{field}_knn_top1"] = knn_cross_validated(x, y, folds)["top1"]
    if embed_texts is not None:
        chosen = fitting_demo_specs(emb) if specs is None else specs
        for m, fields in zeroshot_embeddings(emb, chosen, embed_texts).items():
            for field, metrics in fields.items():
                out[f"{m}_{field}_zeroshot_top1"] = metrics["top1"]
    return out
