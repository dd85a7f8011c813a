"""``python -m unimodal_free.data.rewriting.split``: your shards -> train + held-out by pair id, stratified by combination."""

import collections
import json
from pathlib import Path

import webdataset as wds
from PIL import Image

from helpers import audio
from unimodal_free.data.rewriting.split import main
from unimodal_free.data.writing import shards


def _corpus(tmp_path: Path) -> Path:
    """Shards of 12 image+text pairs, 6 speech+text pairs, 2 pair ids held by two samples each (an image+text and
    a speech sample), 5 text lines without a pair: written by the project's own shard writer from a manifest."""
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = []
    for i in range(14):
        Image.new("RGB", (16, 16), (i * 15, 80, 200 - i * 10)).save(raw / f"p{i}.png")
        lines.append({"key": f"img{i}", "image": f"p{i}.png", "text": f"picture {i}", "pair": f"img{i}"})
    for i in range(8):
        (raw / f"s{i}.wav").write_bytes(audio(0.2 + 0.05 * i, "WAV"))
        lines.append({"key": f"say{i}", "speech": f"s{i}.wav", "text": f"spoken {i}", "pair": f"say{i}"})
    for i in (12, 13):  # a second sample of the picture's pair: its recording alone
        lines[i]["pair"] = f"both{i}"
        lines.append({"key": f"rec{i}", "speech": f"s{i - 12}.wav", "pair": f"both{i}"})
    del lines[14:16]  # say0 and say1's recordings now belong to the two shared pairs
    lines += [{"key": f"line{i}", "text": f"a line {i}"} for i in range(5)]
    (raw / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert shards.main(["manifest", str(raw / "m.jsonl"), str(tmp_path / "all"), "--maxcount", "7"]) == 0
    return tmp_path / "all"


def _read(folder: Path) -> dict:
    return {s["__key__"]: s for s in wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False)}


def test_split_keeps_pairs_together_and_stratifies(tmp_path, capsys):
    src = _corpus(tmp_path)
    before = _read(src)
    assert main([str(src), str(tmp_path / "out"), "--heldout", "0.25", "--seed", "3", "--maxcount", "5"]) == 0
    out = capsys.readouterr().out
    train, held = _read(tmp_path / "out" / "train"), _read(tmp_path / "out" / "heldout")
    assert set(train) | set(held) == set(before) and not set(train) & set(held)  # nothing lost, nothing twice
    for side, got in (("train", train), ("heldout", held)):
        for key, sample in got.items():
            meta = json.loads(sample["json"])
            assert meta["split"] == side
            assert {k: v for k, v in sample.items() if k not in ("json", "__url__", "__local_path__")} == \
                {k: v for k, v in before[key].items() if k not in ("json", "__url__", "__local_path__")}
    pair_side = {}
    for side, got in (("train", train), ("heldout", held)):
        for s in got.values():
            pair = json.loads(s["json"]).get("pair")
            if pair is not None:
                assert pair_side.setdefault(pair, side) == side  # a pair id never on both sides
    stamp = json.loads((tmp_path / "out" / "split.json").read_text())
    # groups: 12 image+text, 6 speech+text, 2 image+speech+text (a pair over two samples), 5 text
    assert stamp["groups"]["heldout"] == {"image+text": 3, "speech+text": 2, "image+speech+text": 1, "text": 1}
    total = collections.Counter(stamp["groups"]["train"]) + collections.Counter(stamp["groups"]["heldout"])
    assert total == {"image+text": 12, "speech+text": 6, "image+speech+text": 2, "text": 5}
    assert stamp["samples"]["heldout"] == {"image+text": 4, "speech": 1, "speech+text": 2, "text": 1}
    assert out.startswith("wrote train 19 samples") and "heldout 8 samples" in out
    again = tmp_path / "again"
    assert main([str(src), str(again), "--heldout", "0.25", "--seed", "3"]) == 0
    assert set(_read(again / "heldout")) == set(held)  # the choice does not depend on shard sizes


def test_split_refuses_bad_share_and_full_output(tmp_path, capsys):
    src = _corpus(tmp_path)
    assert main([str(src), str(tmp_path / "o"), "--heldout", "1.5"]) == 2
    assert capsys.readouterr().err.strip().endswith("--heldout: must be a share in [0, 1), got 1.5")
    assert main([str(src), str(tmp_path / "o")]) == 0
    assert main([str(src), str(tmp_path / "o")]) == 2
    assert "already holds a split" in capsys.readouterr().err
