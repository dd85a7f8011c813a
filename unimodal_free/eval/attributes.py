"""Attribute precision of text -> image/speech retrieval: do a query's nearest pictures share its attributes?

Retrieval's R@k asks whether a caption finds *its own* picture; this asks what the nearest pictures have in
common with the query, field by field of the samples' json ``"labels"``. For each query, the k best-scoring
gallery rows (ties in gallery order) are counted: the share whose label value equals the query's is its
precision at k for that field. Chance is the share of the gallery (less the rows excluded for that query)
holding the query's value: a random ranking's expected precision. Both are averaged over the queries that
carry the field.

Beside them, the **label ranker**: the precision of a ranking that knows every label and orders the gallery
by how many of the query's fields a row matches (ties in random order; its expected value, computed
exactly). No ranking puts more matches in its top k, so the fields' precisions of any model sum to at most
the label ranker's sum: on a gallery with one row per attribute combination, targets on several fields at
once can be out of reach of any model, and this says so.

Two query sets (the CLI is ``python -m unimodal_free.eval attributes``):

- **template queries**: every combination of the label values present in the gallery for the fields a
  template names (``"a {colour} {shape}"``: 8 x 8 = 64 on the demo), embedded as text;
- **own captions**: held-out text rows, each against the gallery less its own sample (same pair id).
"""

from __future__ import annotations

import itertools
import string
from typing import Optional, Sequence

import torch

K = 10
DEFAULT_TEMPLATE = "a {colour} {shape}"

Labels = Sequence[dict[str, str]]


def value_matches(query_values: Sequence[Optional[str]], gallery_values: Sequence[Optional[str]]) -> torch.Tensor:
    """(Q, G) bool: gallery row g holds query q's value; None (the field is missing) on either side never matches."""
    codes = {v: i for i, v in enumerate(sorted({v for v in (*query_values, *gallery_values) if v is not None}))}
    gallery = torch.tensor([codes[v] if v is not None else -1 for v in gallery_values], dtype=torch.long)  # (G,)
    query = torch.tensor([codes[v] if v is not None else -2 for v in query_values], dtype=torch.long)  # (Q,)
    return gallery[None, :] == query[:, None]


def retrievable_k(k: int, exclude: torch.Tensor) -> int:
    """``k`` cut to the fewest rows any query may retrieve (``exclude`` (Q, G) bool); ValueError when that is 0."""
    k = min(k, int((~exclude).sum(dim=1).min())) if exclude.shape[0] else k
    if k < 1:
        raise ValueError("a query has no gallery row left to retrieve")
    return k


def precision_at_k(scores: torch.Tensor, query_values: Sequence[str], gallery_values: Sequence[Optional[str]],
                   k: int = K, exclude: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q,) precision at ``k`` and (Q,) chance of each query.

    scores: (Q, G) similarities, higher is better; query_values: (Q,) each query's label value;
    gallery_values: (G,) each gallery row's (None: the row lacks the field, never a match);
    exclude: (Q, G) bool, rows a query may not retrieve (its own sample). ``k`` is cut to the
    fewest rows any query may retrieve.
    """
    q, g = scores.shape
    if len(query_values) != q or len(gallery_values) != g:
        raise ValueError(f"scores {tuple(scores.shape)} need {q} query and {g} gallery values, "
                         f"got {len(query_values)} and {len(gallery_values)}")
    exclude = torch.zeros(q, g, dtype=torch.bool) if exclude is None else exclude
    allowed = ~exclude
    k = retrievable_k(k, exclude)
    match = value_matches(query_values, gallery_values)  # (Q, G)
    ranked = scores.float().masked_fill(exclude, -torch.inf)
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, :k]  # (Q, k) best first
    precision = match.gather(1, order).float().mean(dim=1)
    chance = (match & allowed).sum(dim=1).float() / allowed.sum(dim=1).float()
    return precision, chance


def label_ranker_precision(query_labels: Labels, gallery_labels: Labels, fields: Sequence[str], k: int = K,
                           exclude: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """{field: (Q,) precision at ``k``} of the label ranker (module docstring), NaN where a query lacks the field.

    A row's score is the number of ``fields`` whose value it shares with the query; the rows scoring
    above the k-th best score are all in, the rows tied with it share the remaining places equally
    (the mean over random tie orders). ``exclude`` (Q, G) bool: rows a query may not retrieve.
    """
    exclude = torch.zeros(len(query_labels), len(gallery_labels), dtype=torch.bool) if exclude is None else exclude
    k = retrievable_k(k, exclude)
    matches = {f: value_matches([lab.get(f) for lab in query_labels], [lab.get(f) for lab in gallery_labels])
               for f in fields}  # {field: (Q, G)}
    # (Q, G) fields matched; an excluded row scores below every allowed one, so it gets no place
    score = sum(m.float() for m in matches.values()).masked_fill(exclude, -1.0)
    kth = score.topk(k, dim=1).values[:, -1:]  # (Q, 1) the k-th best score
    above, tied = score > kth, score == kth  # (Q, G) each
    places = k - above.sum(dim=1, keepdim=True)  # (Q, 1) left for the tied rows
    weight = above.float() + tied.float() * places / tied.sum(dim=1, keepdim=True)  # (Q, G), rows sum to k
    has = {f: torch.tensor([f in lab for lab in query_labels]) for f in fields}
    return {f: ((weight * m).sum(dim=1) / k).masked_fill(~has[f], float("nan")) for f, m in matches.items()}


def attribute_precision(queries: torch.Tensor, query_labels: Labels, gallery: torch.Tensor, gallery_labels: Labels,
                        fields: Sequence[str], k: int = K, query_ids: Optional[torch.Tensor] = None,
                        gallery_ids: Optional[torch.Tensor] = None) -> dict[str, dict[str, float]]:
    """{field: {"precision", "chance", "label_ranker", "queries", "k"}} over the queries that carry each field.

    queries: (Q, D), gallery: (G, D), L2-normalised rows (the dot product is the cosine); with
    ``query_ids`` (Q,) and ``gallery_ids`` (G,) a query does not retrieve rows of its own pair id.
    """
    scores = queries.float() @ gallery.float().T  # (Q, G)
    exclude = None
    if query_ids is not None and gallery_ids is not None:
        exclude = query_ids[:, None] == gallery_ids[None, :]  # (Q, G) the query's own sample
    out = {}
    ranker = label_ranker_precision(query_labels, gallery_labels, fields, k, exclude)
    for field in fields:
        keep = [i for i, lab in enumerate(query_labels) if field in lab]
        if not keep:
            continue
        rows = torch.tensor(keep)
        precision, chance = precision_at_k(
            scores[rows], [query_labels[i][field] for i in keep], [lab.get(field) for lab in gallery_labels],
            k, None if exclude is None else exclude[rows])
        out[field] = {"precision": float(precision.mean()), "chance": float(chance.mean()),
                      "label_ranker": float(ranker[field][rows].mean()), "queries": len(keep),
                      "k": min(k, gallery.shape[0])}
    return out


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names of a query template, in order; ValueError for positional or formatted slots."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"--query-template {template!r}: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"--query-template {template!r}: slots are label field names, like {{colour}}")
        fields.append(name)
    if not fields:
        raise ValueError(f"--query-template {template!r}: names no label field (e.g. {DEFAULT_TEMPLATE!r})")
    return list(dict.fromkeys(fields))  # a field named twice is one field


def template_queries(template: str, gallery_labels: Labels) -> tuple[list[str], list[dict[str, str]]]:
    """Every combination of the gallery's values for the template's fields: (texts, their labels), sorted.

    ValueError naming the fields the gallery has when it lacks one the template names.
    """
    fields = template_fields(template)
    present = sorted({f for lab in gallery_labels for f in lab})
    missing = [f for f in fields if f not in present]
    if missing:
        raise ValueError(f"--query-template {template!r}: no held-out row is labelled {', '.join(missing)} "
                         f"(fields: {', '.join(present) or 'none'})")
    values = [sorted({lab[f] for lab in gallery_labels if f in lab}) for f in fields]
    labels = [dict(zip(fields, combo)) for combo in itertools.product(*values)]
    return [template.format(**lab) for lab in labels], labels
