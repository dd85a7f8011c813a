"""The icon-theme corpus: real PNGs from the installed Adwaita theme, espeak-ng recordings, manifests
that the shard writer turns into shards with the stated modality mix."""

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from helpers import embedded_labels
from unimodal_free.data.corpora import icons
from unimodal_free.data.reading.media import open_image, read_audio
from unimodal_free.data.writing import shards as shard_cli

LIMIT = 60


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("icons") / "corpus"
    return out, icons.build(out, limit=LIMIT)


def manifest(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_captions_from_icon_names():
    assert icons.caption_of("media-playback-start") == "media playback start"
    assert icons.caption_of("application-x_addon") == "application x addon"


def test_build_writes_the_mix_from_real_files(corpus):
    out, counts = corpus
    train, held = manifest(out / "train.jsonl"), manifest(out / "heldout.jsonl")
    pictures = [r for r in train + held if "image" in r]
    spoken = [r for r in pictures if "speech" in r]
    text_only = [r for r in train if "image" not in r]
    assert len(pictures) == LIMIT
    assert 0 < len(spoken) < 0.15 * LIMIT  # a small minority, as in the corpus
    assert len(text_only) == round(LIMIT * 0.1 / 0.9) and all(set(r) >= {"key", "text"} for r in text_only)
    assert len(held) == round(0.15 * (LIMIT - len(spoken))) + round(0.15 * len(spoken))  # stratified
    assert counts["train"] == {"image+text": sum("speech" not in r for r in train if "image" in r),
                               "image+speech+text": sum("speech" in r for r in train), "text": len(text_only)}
    for r in pictures:
        assert r["text"] == r["key"].replace("-", " ") and r["split"] in ("train", "heldout")
        img = open_image((out / r["image"]).read_bytes())
        assert img.size == (48, 48)
    for r in spoken:
        wav, sr, _ = read_audio((out / r["speech"]).read_bytes())
        assert sr == 22050 and 0.3 < len(wav) / sr < 6 and np.abs(wav).max() > 0.1  # speech, not silence
    assert not {r["key"] for r in train} & {r["key"] for r in held}


def test_build_is_reproducible(corpus, tmp_path):
    out, counts = corpus
    assert icons.build(tmp_path / "again", limit=LIMIT) == counts
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    wavs = sorted(p.name for p in (out / "speech").glob("*.wav"))
    assert wavs and wavs == sorted(p.name for p in (tmp_path / "again" / "speech").glob("*.wav"))
    assert all((out / "speech" / w).read_bytes() == (tmp_path / "again" / "speech" / w).read_bytes() for w in wavs)


def test_manifests_become_shards_with_the_same_mix(corpus, tmp_path):
    out, counts = corpus
    for split in ("train", "heldout"):
        assert shard_cli.main(["manifest", str(out / f"{split}.jsonl"), str(tmp_path / split), "--split", split]) == 0
        kinds: dict = {}
        for s in wds.WebDataset(sorted(glob.glob(str(tmp_path / split / "*.tar"))), shardshuffle=False):
            meta = json.loads(s["json"])
            kind = "+".join(meta["modalities"])
            kinds[kind] = kinds.get(kind, 0) + 1
            assert meta["split"] == split and meta["pair"] == s["__key__"]
        assert kinds == counts[split]


def test_bad_input_fails_in_one_line(tmp_path, capsys):
    assert icons.main([str(tmp_path / "o"), "--theme", str(tmp_path / "no-theme")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --theme") and str(tmp_path / "no-theme") in err and "\n" not in err
    assert icons.main([str(tmp_path / "o"), "--speech", "1.5"]) == 2
    assert "--speech: must be a share in [0, 1)" in capsys.readouterr().err


def test_icon_categories_are_labels_that_reach_the_embedding_set(corpus, tmp_path):
    out, _ = corpus
    rows = manifest(out / "train.jsonl") + manifest(out / "heldout.jsonl")
    contexts = {p.name for p in (Path(icons.DEFAULT_THEME) / "48x48").iterdir() if p.is_dir()}
    for r in rows:
        assert set(r["label"]) == {"category"} and r["label"]["category"] in contexts, r
        folder = r["source"].split("/")[-2] if "image" in r else None
        if folder not in (None, icons.LEGACY):
            assert r["label"]["category"] == folder  # a context folder is the category as it is
    moved = [r for r in rows if "/legacy/" in r["source"] and r["label"]["category"] != icons.LEGACY]
    assert moved  # legacy icons take the context of their symbolic twin
    for split in ("train", "heldout"):
        assert shard_cli.main(["manifest", str(out / f"{split}.jsonl"), str(tmp_path / split), "--split", split]) == 0
    got = embedded_labels([tmp_path / "train", tmp_path / "heldout"])
    want = {r["key"]: r["label"] for r in rows}
    assert set(got) == {"image", "speech", "text"}
    for m, labels in got.items():
        assert labels == {key: want[key] for key in labels}, m
    assert len(got["text"]) == len(rows)
