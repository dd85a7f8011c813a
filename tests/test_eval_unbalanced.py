"""Retrieval eval on a real held-out shard where samples lack modalities (an unbalanced demo mix):
each direction over the samples that have both modalities, counted, small ones flagged, R@k
recounted by brute force from the shard's own members."""

import glob

import pytest
import torch
import webdataset as wds

from helpers import tiny_cfg, tiny_model
from unimodal_free.config import Source
from unimodal_free.data.demo.build import Mix, ensure_demo_data
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.eval import evaluate
from unimodal_free.eval.report import flat_metrics, format_table


MIX = Mix(speech=0.08, text_only=0.1, image_only=0.06)  # of 50 held-out: 38 image+text, 4 +speech, 5 text, 3 image
MEMBERS = {"image": ("png", "jpg"), "speech": ("flac", "ogg", "wav"), "text": ("txt",)}


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    return ensure_demo_data(tmp_path_factory.mktemp("mix") / "demo", 6, 50, mix=MIX, progress=False)


def shard_members(split_dir) -> dict[str, set[str]]:
    """modality -> keys of the written samples that carry it, read straight from the tars."""
    have = {m: set() for m in MEMBERS}
    for s in wds.WebDataset(sorted(glob.glob(f"{split_dir}/*.tar")), shardshuffle=False):
        for m, exts in MEMBERS.items():
            if any(e in s for e in exts):
                have[m].add(s["__key__"])
    return have


def brute_force_recall(emb, a, b, keys, k):
    """R@k of a->b over the rows whose sample key is in ``keys``; pessimistic ties, plain loops."""
    qs = [(row, key) for row, key in zip(emb.embeddings[a].tolist(), emb.keys[a]) if key in keys]
    cs = [(row, key) for row, key in zip(emb.embeddings[b].tolist(), emb.keys[b]) if key in keys]
    hits = 0
    for q, qkey in qs:
        scores = [(sum(x * y for x, y in zip(q, c)), ckey == qkey) for c, ckey in cs]
        best = max(s for s, ok in scores if ok)
        rank = 1 + sum(1 for s, ok in scores if not ok and s >= best)
        hits += rank <= k
    return hits / len(qs), len(qs), len(cs)


def test_each_direction_over_the_samples_with_both(heldout):
    have = shard_members(heldout / "heldout")
    assert {m: len(v) for m, v in have.items()} == {"image": 45, "speech": 4, "text": 47}  # the mix, as written
    cfg = tiny_cfg()
    tok = load_tokenizer(str(heldout / "tokenizer.model"))
    loader = make_eval_loader(cfg.data, [Source(path=str(heldout / "heldout"))], tok, 8)
    out = evaluate(tiny_model(cfg, tok), loader, cfg.eval, cfg.data, tok, "cpu", None, "teacher")
    emb, res = out.embeddings, out.results
    assert {m: set(emb.keys[m]) for m in emb.modalities} == have  # every member embedded, none invented

    assert set(res) == {f"{a}_to_{b}" for a in MEMBERS for b in MEMBERS if a != b}
    for direction, m in res.items():
        a, b = direction.split("_to_")
        both = have[a] & have[b]
        assert (m["num_queries"], m["num_candidates"]) == (len(both), len(both)), direction
        assert m["too_small"] == (len(both) < 20) and m["min_queries"] == 20
        for k in (1, 5, 10):
            recall, n_q, n_c = brute_force_recall(emb, a, b, both, k)
            assert (n_q, n_c) == (len(both), len(both))
            assert m[f"R@{k}"] == pytest.approx(recall), (direction, k)
    assert res["image_to_text"]["num_queries"] == 42 and not res["image_to_text"]["too_small"]
    assert res["speech_to_image"]["num_queries"] == 4 and res["speech_to_image"]["too_small"]
    assert res["speech_to_image"]["chance_R@5"] == 1.0  # 4 candidates: this is why it is flagged

    # The table says which directions not to read; TensorBoard scalars exist for every direction.
    rows = format_table(res).splitlines()[2:]
    assert {r.split()[0] for r in rows if "too small to read (< 20 queries)" in r} == {
        d for d in res if "speech" in d}
    assert set(flat_metrics(res)) | set(out.labels) == set(out) and "speech_to_text_R@1" in out
    assert out.labels and all(k.endswith(("_knn_top1", "_zeroshot_top1")) for k in out.labels)  # the demo mix is labelled


def test_threshold_comes_from_the_config(heldout):
    cfg = tiny_cfg()
    cfg.eval.min_queries = 3
    tok = load_tokenizer(str(heldout / "tokenizer.model"))
    loader = make_eval_loader(cfg.data, [Source(path=str(heldout / "heldout"))], tok, 8)
    out = evaluate(tiny_model(cfg, tok), loader, cfg.eval, cfg.data, tok, "cpu", None, "teacher")
    assert not any(m["too_small"] for m in out.results.values())
    assert all(m["min_queries"] == 3 for m in out.results.values())
    assert torch.isfinite(torch.tensor(list(out.values()))).all()
