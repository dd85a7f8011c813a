"""evaluate() on real shards written by the shard-writer CLI: RGBA PNG, OGG and FLAC
speech, multi-caption (COCO) images; checked against per-sample embedding and a
brute-force recount."""

import pytest
import torch

from helpers import COCO_CAPTIONS, NUM_COCO, NUM_TRIPLES, tiny_cfg, tiny_model, write_raw_corpus
from unimodal_free.config import Source
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.eval import evaluate
from unimodal_free.eval.embed import embed_batches
from unimodal_free.model import pooled_embedding


@pytest.fixture(scope="module")
def shard_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_data")
    manifest, coco = write_raw_corpus(root / "raw")
    assert shard_cli.main(["manifest", str(manifest), str(root / "triples"), "--maxcount", "4", "--split", "heldout"]) == 0
    assert shard_cli.main(["coco", str(coco), str(root / "coco"), "--split", "heldout"]) == 0
    return root / "triples", root / "coco"


def test_evaluate_matches_per_sample_embedding(shard_dirs):
    cfg, tok = tiny_cfg(), load_tokenizer("bytes")
    model = tiny_model(cfg, tok).train()  # evaluate must switch to eval mode and back
    sources = [Source(path=str(d)) for d in shard_dirs]
    out = evaluate(model, make_eval_loader(cfg.data, sources, tok, 3), cfg.eval, cfg.data, tok, "cpu", None,
                   "student")
    assert model.training

    emb = out.embeddings
    assert emb.rows("image") == NUM_TRIPLES + NUM_COCO
    assert emb.rows("speech") == NUM_TRIPLES
    assert emb.rows("text") == NUM_TRIPLES + NUM_COCO * COCO_CAPTIONS
    assert emb.pair_names[:2] == ["t0", "t1"] and len(emb.pair_names) == NUM_TRIPLES + NUM_COCO
    assert emb.thumbnails["image"].shape == (NUM_TRIPLES + NUM_COCO, 3, 32, 32)
    assert emb.thumbnails["speech"].shape == (NUM_TRIPLES, 3, 32, 32) and "text" not in emb.thumbnails
    # Each text row's caption, decoded back from its tokens, in row order (the projector's labels).
    assert emb.captions[:2] == ["a red thing number 0", "a green thing number 1"]
    assert emb.captions[NUM_TRIPLES:NUM_TRIPLES + 3] == [f"photo 0 caption {c}" for c in range(COCO_CAPTIONS)]
    assert len(emb.captions) == emb.rows("text")
    for m in emb.modalities:
        assert torch.allclose(emb.embeddings[m].norm(dim=1), torch.ones(emb.rows(m)), atol=1e-5)

    # The same rows embedded one sample at a time: batching and padding change nothing.
    single = embed_batches(model.eval(), make_eval_loader(cfg.data, sources, tok, 1),
                           lambda mdl, b: pooled_embedding(mdl, b), "cpu", cfg.data)
    for m in emb.modalities:
        assert torch.equal(single.pair_ids[m], emb.pair_ids[m]) and single.keys[m] == emb.keys[m]
        assert torch.allclose(single.embeddings[m], emb.embeddings[m], atol=1e-5)

    res = out.results
    assert set(res) == {f"{a}_to_{b}" for a in ("image", "speech", "text") for b in ("image", "speech", "text") if a != b}
    it, ti = res["image_to_text"], res["text_to_image"]
    assert (it["num_queries"], it["num_candidates"]) == (10, 18)
    assert (ti["num_queries"], ti["num_candidates"]) == (18, 10)
    assert (res["image_to_speech"]["num_queries"], res["image_to_speech"]["num_candidates"]) == (6, 6)
    # COCO images have 3 correct captions: chance R@1 of image->text averages 1/18 and 3/18.
    assert it["chance_R@1"] == pytest.approx((6 * 1 / 18 + 4 * 3 / 18) / 10)
    assert ti["chance_R@1"] == pytest.approx(1 / 10)
    for direction in res.values():
        for k in (1, 5, 10):
            assert 0.0 <= direction[f"R@{k}"] <= 1.0
        assert 1 <= direction["median_rank"] <= direction["num_candidates"]
    assert out["image_to_text_R@1"] == it["R@1"]

    # Brute-force recount of image->text from the per-sample embeddings.
    img, txt = single.embeddings["image"], single.embeddings["text"]
    ranks = []
    for q, qid in zip(img.tolist(), single.pair_ids["image"].tolist()):
        scores = [(sum(a * b for a, b in zip(q, c)), cid == qid) for c, cid in zip(txt.tolist(), single.pair_ids["text"].tolist())]
        best = max(s for s, ok in scores if ok)
        ranks.append(1 + sum(1 for s, ok in scores if not ok and s >= best - 1e-6))
    assert it["mean_rank"] == pytest.approx(sum(ranks) / len(ranks))


def test_max_samples_takes_the_first_pairs(shard_dirs):
    cfg, tok = tiny_cfg(), load_tokenizer("bytes")
    loader = make_eval_loader(cfg.data, [Source(path=str(shard_dirs[0]))], tok, 2)
    out = evaluate(tiny_model(cfg, tok), loader, cfg.eval, cfg.data, tok, "cpu", 3, "teacher")
    emb = out.embeddings
    assert emb.pair_names == ["t0", "t1", "t2"]
    assert {m: emb.rows(m) for m in emb.modalities} == {"image": 3, "speech": 3, "text": 3}
    assert out.results["speech_to_text"]["num_candidates"] == 3
    assert out.results["speech_to_text"]["chance_R@5"] == 1.0  # 3 candidates: always in the top 5
