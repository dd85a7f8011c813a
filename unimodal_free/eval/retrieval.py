"""Cross-modal retrieval metrics: recall@k, median/mean rank, chance levels.

Multi-positive in general (COCO protocol and beyond): a query's correct
candidates are *all* candidates with the same pair id, and its rank is the
best (smallest) rank among them. So an image with five captions is a hit for
image->text when any caption is in the top k, and each caption is its own
query for text->image.

Ties are broken pessimistically: every wrong candidate whose score is equal to
or higher than the query's best correct score ranks ahead of it,

    rank = 1 + #{wrong candidates j : score_j >= max(correct scores)}.

The result does not depend on candidate order, and a degenerate model (all
scores equal, e.g. collapsed embeddings) gets the worst possible rank instead
of a lucky one. Non-finite scores count as -inf (worst) for the same reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

KS = (1, 5, 10)
# Fewer queries than this and a direction is flagged too small to read (config eval.min_queries).
MIN_QUERIES = 20


def ranks_of_correct(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's best correct candidate (ties count against the query).

    scores: (Q, C) similarities, higher is better; correct: (Q, C) bool.
    Every query must have at least one correct candidate.
    """
    if scores.shape != correct.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and correct {tuple(correct.shape)} must be equal (Q, C) shapes")
    if not bool(correct.any(dim=1).all()):
        raise ValueError("every query needs at least one correct candidate")
    scores = torch.nan_to_num(scores.float(), nan=-math.inf, posinf=-math.inf)
    best = scores.masked_fill(~correct, -math.inf).amax(dim=1, keepdim=True)  # (Q, 1)
    ahead = (scores >= best) & ~correct  # (Q, C) wrong candidates tied with or above the best correct
    return 1 + ahead.sum(dim=1)


def chance_recall(num_correct: torch.Tensor, num_candidates: int, k: int) -> float:
    """Expected R@k of a uniformly random ranking, averaged over queries.

    A query with p correct among N candidates misses the top k with
    probability C(N-p, k) / C(N, k) = prod_{i<k} (N-p-i) / (N-i).
    """
    n = num_candidates
    p = num_correct.double()
    miss = torch.ones_like(p)
    for i in range(min(k, n)):
        miss = miss * ((n - p - i).clamp(min=0) / (n - i))
    return float((1 - miss).mean())


@dataclass
class RetrievalResult:
    """Metrics of one direction (queries of modality a against candidates of b)."""

    ranks: torch.Tensor  # (Q,) int64, 1-based
    num_candidates: int
    num_correct: torch.Tensor  # (Q,) correct candidates per query

    def as_dict(self, ks: Sequence[int] = KS) -> dict[str, float | int]:
        ranks = self.ranks.double()
        out: dict[str, float | int] = {}
        for k in ks:
            out[f"R@{k}"] = float((ranks <= k).double().mean())
        out["median_rank"] = float(ranks.quantile(0.5))  # mean of the two middle ranks when Q is even
        out["mean_rank"] = float(ranks.mean())
        out["num_queries"] = int(ranks.numel())
        out["num_candidates"] = int(self.num_candidates)
        for k in ks:
            out[f"chance_R@{k}"] = chance_recall(self.num_correct, self.num_candidates, k)
        return out


def retrieve(
    queries: torch.Tensor,
    query_ids: torch.Tensor,
    candidates: torch.Tensor,
    candidate_ids: torch.Tensor,
    chunk: int = 1024,
) -> RetrievalResult:
    """Rank all candidates for every query by dot product (cosine for L2-normalised rows).

    queries: (Q, D), candidates: (C, D); *_ids: integer pair ids, (Q,) and (C,).
    Scores are computed in float32, ``chunk`` queries at a time to bound memory.
    """
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and candidates {tuple(candidates.shape)} must be (Q, D), (C, D)")
    if query_ids.shape != (queries.shape[0],) or candidate_ids.shape != (candidates.shape[0],):
        raise ValueError("need one pair id per query and per candidate")
    cand = candidates.float()
    ranks, num_correct = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start : start + chunk].float()
        scores = q @ cand.T  # (q, C)
        correct = query_ids[start : start + chunk, None] == candidate_ids[None, :]  # (q, C)
        ranks.append(ranks_of_correct(scores, correct))
        num_correct.append(correct.sum(dim=1))
    return RetrievalResult(
        ranks=torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long),
        num_candidates=int(candidates.shape[0]),
        num_correct=torch.cat(num_correct) if num_correct else torch.zeros(0, dtype=torch.long),
    )


def cross_modal_retrieval(
    embeddings: dict[str, torch.Tensor], pair_ids: dict[str, torch.Tensor], ks: Sequence[int] = KS,
    min_queries: int = MIN_QUERIES,
) -> dict[str, dict[str, float | int | bool]]:
    """Metrics for every ordered modality pair, keyed ``"{a}_to_{b}"``.

    embeddings[m]: (rows_m, D); pair_ids[m]: (rows_m,) integer pair ids.
    The test set of a pair (a, b) is the pair ids that have rows of both a and
    b: queries are those rows of a, candidates those rows of b. So on an
    unbalanced held-out set (text-only lines, a few recordings) every direction
    is scored on its own subset, and one with fewer than ``min_queries``
    queries is still scored but flagged ``too_small``: its recalls move in
    steps of 1/queries and say little.
    """
    results = {}
    names = [m for m in embeddings if embeddings[m].shape[0] > 0]
    for a in names:
        for b in names:
            if a == b:
                continue
            shared = pair_ids[a][torch.isin(pair_ids[a], pair_ids[b])].unique()
            if shared.numel() < 2:
                continue  # retrieval among fewer than two pairs says nothing
            qa = torch.isin(pair_ids[a], shared)
            cb = torch.isin(pair_ids[b], shared)
            result = retrieve(embeddings[a][qa], pair_ids[a][qa], embeddings[b][cb], pair_ids[b][cb])
            metrics = result.as_dict(ks)
            metrics["min_queries"] = int(min_queries)
            metrics["too_small"] = metrics["num_queries"] < min_queries
            results[f"{a}_to_{b}"] = metrics
    return results
