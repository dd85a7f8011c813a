"""The public-corpus converters on tiny copies written in each corpus's published layout
(tests/public_corpora.py cites the layouts): counts per modality combination equal to the fixture's,
every picture, caption and recording accounted for and read back through the training reader, and
hostile corpus files refused with one line naming the file and entry."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import public_corpora as fx
from helpers import error_line
from unimodal_free.config import DataConfig
from unimodal_free.data.corpora.__main__ import main
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading.elements import sample_rows
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import read_shard
from unimodal_free.data.reading.tokenizer import load_tokenizer

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the fixtures")


def rows_read(folder) -> dict[str, int]:
    """Rows per modality the eval reader makes of a split's shards (one per picture, caption, recording)."""
    counter, counts = SkipCounter("test"), {}
    for url in expand_shards(str(folder)):
        for sample in read_shard(url, counter, DataConfig()):
            for row in sample_rows(sample, DataConfig(), load_tokenizer("bytes"), train=False):
                counts[row.elements.modality] = counts.get(row.elements.modality, 0) + 1
    assert counter.count == 0
    return counts


def check_accounted(dst, written: fx.Written, combination: str) -> dict:
    """Every split's report and shards hold exactly the fixture's pictures, captions and recordings."""
    report = json.loads((dst / "report.json").read_text())
    assert set(report["splits"]) == set(written.pictures)
    for split, pictures in written.pictures.items():
        s = report["splits"][split]
        assert s["combinations"] == {combination: pictures}
        want = {"image": pictures, "text": written.captions[split], "speech": written.recordings[split]}
        want = {m: n for m, n in want.items() if n}
        assert s["read"] == {**{m: 0 for m in ("image", "speech", "text")}, **want}
        assert s["written"] == want
        assert rows_read(dst / split) == want
    assert report["dropped"] == []
    return report


@pytest.fixture(scope="module")
def spokencoco(tmp_path_factory):
    root = tmp_path_factory.mktemp("spokencoco")
    return root, fx.spokencoco(root / "SpokenCOCO", root / "coco")


def test_spokencoco(spokencoco, tmp_path, capsys):
    root, written = spokencoco
    assert main(["spokencoco", str(root / "SpokenCOCO"), str(tmp_path / "out"), "--images", str(root / "coco")]) == 0
    check_accounted(tmp_path / "out", written, "image+speech+text")
    assert "image+speech+text 4" in capsys.readouterr().out


def test_spokencoco_karpathy_split(spokencoco, tmp_path):
    root, written = spokencoco
    names = {f"COCO_{p}2014_{i:012d}.jpg": s for p, ids, s in
             (("train", range(3), "train"), ("train", [3], "restval"), ("val", [4], "val"), ("val", [5, 6], "test"))
             for i in ids}
    fx.karpathy(tmp_path / "dataset_coco.json", names)
    assert main(["spokencoco", str(root / "SpokenCOCO"), str(tmp_path / "out"), "--images", str(root / "coco"),
                 "--karpathy", str(tmp_path / "dataset_coco.json")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s: r["samples"] for s, r in report["splits"].items()} == {"train": 4, "val": 1, "heldout": 2}
    assert sum(r["written"]["speech"] for r in report["splits"].values()) == sum(written.recordings.values())


def test_flickr8k_audio(tmp_path):
    written = fx.flickr8k_audio(tmp_path / "flickr8k")
    assert main(["flickr8k-audio", str(tmp_path / "flickr8k"), str(tmp_path / "out")]) == 0
    check_accounted(tmp_path / "out", written, "image+speech+text")


def test_flickr8k_audio_missing_recording_is_counted(tmp_path):
    """A recording that is not there is dropped and named; its caption and the picture's others stay."""
    fx.flickr8k_audio(tmp_path / "flickr8k", missing_wav="1000268201_693b08cb0e_2.wav")
    assert main(["flickr8k-audio", str(tmp_path / "flickr8k"), str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    train = report["splits"]["train"]
    assert (train["read"]["speech"], train["written"]["speech"], train["written"]["text"]) == (15, 14, 15)
    assert len(report["dropped"]) == 1 and "1000268201_693b08cb0e_2.wav missing" in report["dropped"][0]


def test_flickr8k_audio_undecodable_recording_costs_only_itself(tmp_path):
    """A recording that does not decode is dropped and named; the picture and its five captions stay."""
    fx.flickr8k_audio(tmp_path / "flickr8k")
    bad = tmp_path / "flickr8k" / "flickr_audio" / "wavs" / "1000268202_693b08cb0e_4.wav"
    bad.write_bytes(b"RIFF" + bytes(40))
    assert main(["flickr8k-audio", str(tmp_path / "flickr8k"), str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    train = report["splits"]["train"]
    assert train["samples"] == 3 and train["written"] == {"image": 3, "speech": 14, "text": 15}
    assert len(report["dropped"]) == 1 and report["dropped"][0].startswith(f"{bad}: ")
    assert rows_read(tmp_path / "out" / "train") == {"image": 3, "speech": 14, "text": 15}


def test_coco_captions(tmp_path):
    written = fx.coco_captions(tmp_path / "coco")
    assert main(["coco-captions", str(tmp_path / "coco"), str(tmp_path / "out")]) == 0
    check_accounted(tmp_path / "out", written, "image+text")


def test_flickr30k_token_file_and_karpathy(tmp_path):
    written = fx.flickr30k(tmp_path / "f30k")
    assert main(["flickr30k", str(tmp_path / "f30k"), str(tmp_path / "karpathy"),
                 "--karpathy", str(tmp_path / "f30k" / "dataset_flickr30k.json")]) == 0
    check_accounted(tmp_path / "karpathy", written, "image+text")
    assert main(["flickr30k", str(tmp_path / "f30k"), str(tmp_path / "tokens"), "--heldout", "0.5",
                 "--seed", "2"]) == 0
    report = json.loads((tmp_path / "tokens" / "report.json").read_text())
    assert sum(s["written"]["text"] for s in report["splits"].values()) == 30
    assert set(report["splits"]) == {"train", "heldout"}
    assert report["splits"]["heldout"]["samples"] == 3  # round(0.5 * 6 pictures), whatever the seed: data.split's choice


def test_places_audio(tmp_path):
    written = fx.places_audio(tmp_path / "places", tmp_path / "places205")
    assert main(["places-audio", str(tmp_path / "places"), str(tmp_path / "out"),
                 "--images", str(tmp_path / "places205")]) == 0
    check_accounted(tmp_path / "out", written, "image+speech")


# ------------------------------------------------------------------------------- hostile corpus files


@pytest.mark.parametrize("wav, says", [
    ("../../../etc/passwd", '".." in'),
    ("/etc/passwd", "absolute path"),
    ("wavs/link.wav", "through a symlink"),
])
def test_spokencoco_entry_leaving_src_is_refused(spokencoco, tmp_path, capsys, wav, says):
    root, _ = spokencoco
    src = tmp_path / "SpokenCOCO"
    shutil.copytree(root / "SpokenCOCO", src)
    os.symlink("/etc/passwd", src / "wavs" / "link.wav")
    doc = json.loads((src / "SpokenCOCO_val.json").read_text())
    doc["data"][1]["captions"][2]["wav"] = wav
    (src / "SpokenCOCO_val.json").write_text(json.dumps(doc))
    assert main(["spokencoco", str(src), str(tmp_path / "out"), "--images", str(root / "coco")]) == 2
    line = error_line(capsys)
    assert f"{src / 'SpokenCOCO_val.json'}: data[1].captions[2].wav" in line and says in line
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_flickr_token_entry_leaving_images_is_refused(tmp_path, capsys):
    fx.flickr30k(tmp_path / "f30k")
    token = tmp_path / "f30k" / "results_20130124.token"
    token.write_text(token.read_text() + "../../secret.jpg#0\ta stolen picture\n")
    assert main(["flickr30k", str(tmp_path / "f30k"), str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert f"{token}: ../../secret.jpg" in line and '".." in' in line


def test_oversized_corpus_json_is_refused(tmp_path, capsys):
    fx.coco_captions(tmp_path / "coco")
    assert main(["coco-captions", str(tmp_path / "coco"), str(tmp_path / "out"), "--max-file-bytes", "100"]) == 2
    line = error_line(capsys)
    assert "captions_train2014.json" in line and "100-byte limit" in line
