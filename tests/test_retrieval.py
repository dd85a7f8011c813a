"""Retrieval metrics against a brute-force reference written with plain Python loops."""

import itertools
import math
import random
import statistics

import pytest
import torch

from unimodal_free.eval.retrieval import chance_recall, cross_modal_retrieval, ranks_of_correct, retrieve


def brute_force_rank(scores, correct):
    """Sort candidates best first; among equal scores wrong ones go first (pessimistic); first correct wins."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], correct[j]))
    for position, j in enumerate(order):
        if correct[j]:
            return position + 1
    raise AssertionError("no correct candidate")


def brute_force_metrics(queries, query_ids, candidates, candidate_ids):
    ranks, positives = [], []
    for q, qid in zip(queries, query_ids):
        scores = [sum(x * y for x, y in zip(q, c)) for c in candidates]
        correct = [cid == qid for cid in candidate_ids]
        ranks.append(brute_force_rank(scores, correct))
        positives.append(sum(correct))
    n = len(candidates)
    out = {f"R@{k}": sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
    out["median_rank"] = statistics.median(ranks)
    out["mean_rank"] = sum(ranks) / len(ranks)
    out["num_queries"] = len(ranks)
    out["num_candidates"] = n
    for k in (1, 5, 10):
        # Chance by enumeration-free counting: P(miss) = C(n-p, k) / C(n, k).
        out[f"chance_R@{k}"] = sum(
            1 - (math.comb(n - p, k) / math.comb(n, k) if k <= n else 0.0) for p in positives
        ) / len(positives)
    return out


def random_embeddings(rows, dim, gen, levels=None):
    """Gaussian rows; with ``levels`` set, small integers instead, so that many scores tie exactly."""
    if levels is None:
        return torch.randn(rows, dim, generator=gen)
    return torch.randint(-levels, levels + 1, (rows, dim), generator=gen).float()


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 1])
def test_retrieve_matches_brute_force_multi_positive(seed, levels):
    gen = torch.Generator().manual_seed(seed)
    num_pairs = 7 + seed * 3
    # COCO-like: 1..5 captions per image, ids shuffled so correct candidates are not contiguous.
    caption_ids = [i for i in range(num_pairs) for _ in range(1 + (i * 7 + seed) % 5)]
    random.Random(seed).shuffle(caption_ids)
    image_ids = list(range(num_pairs))
    images = random_embeddings(num_pairs, 4, gen, levels)
    captions = random_embeddings(len(caption_ids), 4, gen, levels)
    for queries, qids, cands, cids in [
        (images, image_ids, captions, caption_ids),
        (captions, caption_ids, images, image_ids),
    ]:
        got = retrieve(queries, torch.tensor(qids), cands, torch.tensor(cids), chunk=5).as_dict()
        want = brute_force_metrics(queries.tolist(), qids, cands.tolist(), cids)
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_ties_count_against_the_query_independent_of_order():
    # All scores equal (a collapsed model): every wrong candidate ranks ahead.
    scores = torch.zeros(3, 5)
    correct = torch.zeros(3, 5, dtype=torch.bool)
    correct[0, 0] = True  # correct first in index order
    correct[1, 4] = True  # correct last
    correct[2, [1, 3]] = True  # two correct
    assert ranks_of_correct(scores, correct).tolist() == [5, 5, 4]
    # A strictly better correct candidate is rank 1; a tie with one wrong one is rank 2.
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.5, 0.5, 0.1]])
    correct = torch.tensor([[True, False, False], [True, False, False]])
    assert ranks_of_correct(scores, correct).tolist() == [1, 2]


def test_nan_scores_rank_last():
    scores = torch.tensor([[float("nan"), 0.1, 0.2]])
    correct = torch.tensor([[True, False, False]])
    assert ranks_of_correct(scores, correct).tolist() == [3]


def test_query_without_correct_candidate_is_refused():
    with pytest.raises(ValueError, match="at least one correct"):
        ranks_of_correct(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))


@pytest.mark.parametrize("n,p", [(10, 1), (10, 3), (7, 7), (4, 1), (25, 5)])
def test_chance_recall_matches_enumeration(n, p):
    for k in (1, 5, 10):
        hits = total = 0
        for top in itertools.combinations(range(n), min(k, n)):
            total += 1
            hits += any(j < p for j in top)  # candidates 0..p-1 are correct
        assert chance_recall(torch.tensor([p]), n, k) == pytest.approx(hits / total)
    assert chance_recall(torch.tensor([1]), 100, 1) == pytest.approx(0.01)


def test_cross_modal_uses_pairs_present_in_both_modalities():
    gen = torch.Generator().manual_seed(0)
    emb = {m: torch.nn.functional.normalize(torch.randn(n, 8, generator=gen), dim=1) for m, n in
           [("image", 4), ("text", 6), ("speech", 3)]}
    ids = {
        "image": torch.tensor([0, 1, 2, 3]),
        "text": torch.tensor([0, 0, 1, 2, 3, 9]),  # pair 9: text only (e.g. a text+speech pair)
        "speech": torch.tensor([9, 1, 2]),
    }
    res = cross_modal_retrieval(emb, ids)
    assert set(res) == {"image_to_text", "text_to_image", "image_to_speech", "speech_to_image",
                        "text_to_speech", "speech_to_text"}
    assert res["image_to_text"]["num_queries"] == 4 and res["image_to_text"]["num_candidates"] == 5
    assert res["text_to_image"]["num_queries"] == 5 and res["text_to_image"]["num_candidates"] == 4
    assert res["image_to_speech"]["num_queries"] == 2 and res["image_to_speech"]["num_candidates"] == 2
    assert res["text_to_speech"]["num_queries"] == 3 and res["text_to_speech"]["num_candidates"] == 3
    # Identical embeddings across modalities retrieve perfectly.
    same = {"image": emb["image"], "text": emb["image"][[0, 1, 2, 3]]}
    res = cross_modal_retrieval(same, {"image": ids["image"], "text": ids["image"]})
    assert res["image_to_text"]["R@1"] == 1.0 and res["text_to_image"]["median_rank"] == 1.0
