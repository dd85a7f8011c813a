"""One picture with several captions and their recordings (SpokenCOCO-style group shards) in training
and in the eval: the eval scores the standard protocol (image->text/speech a hit when any of the
picture's captions/recordings is in the top k; each caption/recording a query against its one
picture), checked against a brute-force count from the fixture's own truth in both directions, and
training keeps one caption with that caption's own recording."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

import public_corpora as fx
from helpers import tiny_cfg, tiny_model
from unimodal_free.config import DataConfig, Source
from unimodal_free.data.corpora.__main__ import main as convert
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading.elements import sample_rows
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import read_shard
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.eval import evaluate

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the fixtures")


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups")
    written = fx.spokencoco(root / "SpokenCOCO", root / "coco")
    assert convert(["spokencoco", str(root / "SpokenCOCO"), str(root / "out"), "--images", str(root / "coco")]) == 0
    return root / "out", written


def brute_recall(queries, candidates, is_match, k: int) -> float:
    """Share of queries with a matching candidate among their top k; ties count against the query."""
    hits = 0
    for q in queries:
        scores = [(sum(a * b for a, b in zip(q[1], c[1])), is_match(q[0], c[0])) for c in candidates]
        best = max(s for s, ok in scores if ok)
        hits += 1 + sum(1 for s, ok in scores if not ok and s >= best) <= k
    return hits / len(queries)


def test_eval_scores_groups_as_the_standard_protocol(groups):
    out_dir, written = groups
    cfg, tok = tiny_cfg(), load_tokenizer("bytes")
    sources = [Source(path=str(out_dir / split)) for split in ("train", "heldout")]
    out = evaluate(tiny_model(cfg, tok), make_eval_loader(cfg.data, sources, tok, 4), cfg.eval, cfg.data, tok,
                   "cpu", None, "student")
    emb = out.embeddings
    pictures, captions = sum(written.pictures.values()), sum(written.captions.values())
    assert (emb.rows("image"), emb.rows("text"), emb.rows("speech")) == (pictures, captions, captions)
    # The truth from the fixture, not from pair ids: caption i,k names picture i; a recording is its sample's.
    # (a text row's caption is decoded from its tokens: cut at data.max_text_tokens, so matched as a prefix)
    full = {fx.caption(i, k): i for i in range(pictures) for k in range(fx.captions_per_picture(i))}
    picture_of = {}
    for c in emb.captions:
        (picture_of[c],) = {i for whole, i in full.items() if whole.startswith(c)}  # exactly one picture
    image = [(int(key[-12:]), e) for key, e in zip(emb.keys["image"], emb.embeddings["image"].tolist())]
    text = [(picture_of[c], e) for c, e in zip(emb.captions, emb.embeddings["text"].tolist())]
    speech = [(int(key[-12:]), e) for key, e in zip(emb.keys["speech"], emb.embeddings["speech"].tolist())]
    same = lambda a, b: a == b  # noqa: E731
    for a, b, qs, cs in (("image", "text", image, text), ("text", "image", text, image),
                         ("image", "speech", image, speech), ("speech", "image", speech, image)):
        result = out.results[f"{a}_to_{b}"]
        assert (result["num_queries"], result["num_candidates"]) == (len(qs), len(cs))
        for k in (1, 5, 10):
            assert result[f"R@{k}"] == pytest.approx(brute_recall(qs, cs, same, k)), (a, b, k)


def test_training_keeps_one_caption_with_its_own_recording(groups):
    out_dir, _ = groups
    data_cfg, tok = DataConfig(), load_tokenizer("bytes")
    counter, drawn = SkipCounter("test"), set()
    for url in expand_shards(str(out_dir / "train")):
        for sample in read_shard(url, counter, data_cfg):
            every = sample_rows(sample, data_cfg, tok, train=False)
            texts = [r.elements.values for r in every if r.elements.modality == "text"]
            waves = [r.elements.values for r in every if r.elements.modality == "speech"]
            assert len(texts) == len(waves) >= 5
            for seed in range(8):
                rows = sample_rows(sample, data_cfg, tok, train=True, rng=random.Random(seed))
                assert [r.elements.modality for r in rows] == ["image", "speech", "text"]
                t = next(i for i, v in enumerate(texts) if torch.equal(v, rows[2].elements.values))
                s = next(i for i, v in enumerate(waves) if torch.equal(v, rows[1].elements.values))
                assert t == s
                drawn.add(t)
    assert counter.count == 0 and len(drawn) >= 4  # not always the first caption


def test_pairing_rewrite_keeps_every_recording_of_a_picture(groups, tmp_path):
    """`data.pairing` splits a group into single-modality samples: the speech one keeps all its recordings."""
    from unimodal_free.data.rewriting.pairing import main as pairing

    out_dir, written = groups
    assert pairing([str(out_dir / "train"), str(tmp_path / "split"), "--paired", "0"]) == 0
    data_cfg, tok, counter, rows = DataConfig(), load_tokenizer("bytes"), SkipCounter("test"), {}
    for url in expand_shards(str(tmp_path / "split")):
        for sample in read_shard(url, counter, data_cfg):
            for row in sample_rows(sample, data_cfg, tok, train=False):
                rows[row.elements.modality] = rows.get(row.elements.modality, 0) + 1
    assert counter.count == 0
    assert rows == {"image": written.pictures["train"], "speech": written.recordings["train"],
                    "text": written.captions["train"]}
