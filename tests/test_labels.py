"""Sample labels: written by the shard writer from each layout that has them, read back by the real reader
into every row of ModalityBatch and EmbeddingSet (parallel to the keys), never changing what training reads."""

import json
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image

from helpers import TOK, embedded_labels, make_cfg
from unimodal_free.batch import Elements, Row, collate_elements
from unimodal_free.data.demo.build import Mix, ensure_demo_data
from unimodal_free.data.loading.loader import make_train_loader
from unimodal_free.data.reading.elements import DecodeError, sample_rows
from unimodal_free.data.reading.labels import BadLabel, label_fields
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.data.writing.shard_writer import ShardSink


def picture(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path.name


def recording(path):
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, format="FLAC")
    return path.name


def write_manifest(folder, lines) -> str:
    path = folder / "manifest.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def write_shards(capsys, *argv) -> tuple[int, list[str]]:
    rc = shard_cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip().splitlines()


# ----------------------------------------------------------------------- the rules


def test_label_is_a_string_or_an_object_of_short_strings():
    assert label_fields("cat") == {"label": "cat"}
    assert label_fields({"shape": "circle", "colour": "red"}) == {"shape": "circle", "colour": "red"}
    assert label_fields({"digit": 7, "odd": True, "even": False}) == {"digit": "7", "odd": "true", "even": "false"}
    assert label_fields(7) == {"label": "7"} and label_fields(None) == {}
    for bad, why in ((1.5, "got float"), ([1], "got list"), ({"a": {"b": "c"}}, '"a" must be a string'),
                     ({"a": None}, '"a" must be a string'), ("", '"label" is empty'), ("x" * 201, "201 characters"),
                     ({"": "x"}, "field name"), ({f"f{i}": "x" for i in range(33)}, "33 fields")):
        with pytest.raises(BadLabel, match=why):
            label_fields(bad)


# ----------------------------------------------------------------------- layouts -> shards -> reader -> EmbeddingSet


def test_manifest_labels_reach_every_row_of_the_embedding_set(tmp_path, capsys):
    raw = tmp_path / "raw"
    lines = [
        {"key": "cat", "image": picture(raw / "a.png", 0), "text": "a cat", "label": "cat"},
        {"key": "shape", "image": picture(raw / "b.png", 1), "speech": recording(raw / "b.flac"),
         "text": "a red circle", "label": {"shape": "circle", "colour": "red", "sides": 0, "round": True}},
        {"key": "plain", "text": "no label here"},
        {"key": "list", "text": "x", "label": ["cat"]},  # line 4
        {"key": "float", "text": "x", "label": 0.5},
        {"key": "nested", "text": "x", "label": {"a": {"b": "c"}}},
        {"key": "long", "text": "x", "label": "y" * 201},
        {"key": "reserved", "text": "x", "labels": {"a": "b"}},  # line 8
    ]
    rc, err = write_shards(capsys, "manifest", write_manifest(raw, lines), tmp_path / "out", "--split", "heldout")
    assert rc == 0
    skips = [line for line in err if line.startswith("skip")]
    manifest = raw / "manifest.jsonl"
    assert skips == [
        f"skip {manifest}:4: label must be a string or an object of named fields, got list",
        f"skip {manifest}:5: label must be a string or an object of named fields, got float",
        f'skip {manifest}:6: label "a" must be a string, an integer or a boolean, got dict',
        f'skip {manifest}:7: label "label" is 201 characters (limit 200)',
        f'skip {manifest}:8: "labels" is reserved: give the sample\'s labels as "label"',
    ]
    assert err[-1].endswith("skipped 5 unusable inputs")

    shape = {"shape": "circle", "colour": "red", "sides": "0", "round": "true"}
    assert embedded_labels([tmp_path / "out"]) == {
        "image": {"cat": {"label": "cat"}, "shape": shape},
        "speech": {"shape": shape},
        "text": {"cat": {"label": "cat"}, "shape": shape, "plain": {}},
    }


def test_images_layout_labels_class_folders(tmp_path, capsys):
    src = tmp_path / "in"
    picture(src / "cat" / "one.png", 0)
    picture(src / "dog" / "old" / "two.png", 1)  # the top-level folder is the class, as in ImageFolder
    picture(src / "loose.png", 2)  # not in a class folder: no label
    for name in ("cat/one", "dog/old/two", "loose"):
        (src / f"{name}.txt").write_text(f"caption of {name}")
    rc, _ = write_shards(capsys, "images", src, tmp_path / "out", "--folder-label", "animal", "--split", "heldout")
    assert rc == 0
    want = {"cat_one": {"animal": "cat"}, "dog_old_two": {"animal": "dog"}, "loose": {}}
    assert embedded_labels([tmp_path / "out"]) == {"image": want, "text": want}

    rc, err = write_shards(capsys, "text", src / "loose.txt", tmp_path / "o2", "--folder-label", "x")
    assert rc == 2 and err == ["error: --folder-label applies to the images layout only"]
    rc, err = write_shards(capsys, "images", src, tmp_path / "o3", "--folder-label", "")
    assert rc == 2 and err == ["error: --folder-label: label field name '' must be 1-64 characters"]


def test_demo_scene_attributes_are_labels_of_every_modality(tmp_path):
    demo = ensure_demo_data(tmp_path / "demo", 2, 12, mix=Mix(speech=0.5, text_only=0.25, image_only=0.25),
                            progress=False)
    got = embedded_labels([demo / "heldout"], demo / "tokenizer.model")
    assert set(got) == {"image", "speech", "text"}
    scenes = {}
    for s in wds.WebDataset(sorted(str(p) for p in (demo / "heldout").glob("*.tar")), shardshuffle=False):
        meta = json.loads(s["json"])
        scenes[s["__key__"]] = {"shape": meta["shape"], "colour": meta["colour"], "size": meta["size"],
                                "position": meta["position"]}
        assert meta["labels"] == scenes[s["__key__"]]
    assert len(scenes) == 12
    for m, labels in got.items():
        assert labels == {key: scenes[key] for key in labels}, m
    assert set(got["image"]) | set(got["text"]) == set(scenes)  # image-only and text-only samples too


# ----------------------------------------------------------------------- the reader


def labelled_sample(key: str, pair, labels) -> dict:
    meta = {"pair": pair} if labels is None else {"pair": pair, "labels": labels}
    return {"__key__": key, "txt": f"caption {key}".encode(), "json": json.dumps(meta).encode()}


def test_embedding_set_keeps_the_labels_of_the_rows_it_keeps(tmp_path):
    """Rows without a pair id are dropped by the eval; the labels of the rest stay with their rows."""
    with ShardSink(tmp_path / "s", maxcount=3) as sink:
        for i in range(8):
            sink.write(labelled_sample(f"k{i}", None if i % 3 == 1 else f"p{i}", {"n": str(i)} if i % 4 else None))
    got = embedded_labels([tmp_path / "s"], batch_size=3)
    assert got == {"text": {f"k{i}": ({"n": str(i)} if i % 4 else {}) for i in range(8) if i % 3 != 1}}


def test_eval_reader_skips_a_sample_whose_labels_are_malformed():
    cfg = make_cfg(["x"]).data
    rows = sample_rows(labelled_sample("ok", "p", {"digit": 7}), cfg, TOK, train=False)
    assert [r.labels for r in rows] == [{"digit": "7"}]
    assert sample_rows(labelled_sample("none", "p", None), cfg, TOK, train=False)[0].labels == {}
    with pytest.raises(DecodeError, match=r"bad: json: labels: label must be a string or an object .* got list"):
        sample_rows(labelled_sample("bad", "p", ["x"]), cfg, TOK, train=False)
    # Training never loses a sample over its labels: it reads malformed ones as none.
    rows = sample_rows(labelled_sample("bad", "p", ["x"]), cfg, TOK, train=True, rng=random.Random(0))
    assert [r.labels for r in rows] == [{}]


def test_batches_carry_labels_parallel_to_keys():
    e = Elements("text", torch.tensor([1, 2]), torch.zeros(2, 1))
    batch = collate_elements([Row(e, "a", "p", {"digit": "1"}), (e, "b", None), Row(e, "c", "q", {"digit": "3"})])
    part = batch.parts["text"]
    assert part.keys == ["a", "b", "c"] and part.labels == [{"digit": "1"}, {}, {"digit": "3"}]
    moved = batch.to("cpu").parts["text"]
    assert moved.labels == part.labels and moved.labels[0] is not part.labels[0]
    with pytest.raises(ValueError, match="2 label dicts for 3 keys"):
        type(part)(part.values, part.coords, part.padding, part.pair_index, part.keys, part.labels[:2])


def test_labels_ride_along_training_reads_the_same_batches(tmp_path, capsys):
    """The same corpus written with and without labels: identical training batches but for the labels."""
    raw = tmp_path / "raw"
    lines = [{"key": f"s{i}", "image": picture(raw / f"{i}.png", i), "text": f"picture {i} " * (1 + i % 4),
              "label": {"n": str(i % 3)}} for i in range(24)]
    write_shards(capsys, "manifest", write_manifest(raw, lines), tmp_path / "labelled", "--maxcount", "6")
    write_shards(capsys, "manifest", write_manifest(raw, [{k: v for k, v in line.items() if k != "label"}
                                                          for line in lines]), tmp_path / "plain", "--maxcount", "6")
    batches = {}
    for name in ("labelled", "plain"):
        cfg = make_cfg([str(tmp_path / name)], micro_batch_size=8, seed=3)
        loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1)
        batches[name] = [next(loader) for _ in range(6)]
    for a, b in zip(batches["labelled"], batches["plain"]):
        assert a.pair_ids == b.pair_ids and list(a.parts) == list(b.parts)
        for m in a.parts:
            pa, pb = a.parts[m], b.parts[m]
            assert pa.keys == pb.keys
            for field in ("values", "coords", "padding", "pair_index"):
                assert torch.equal(getattr(pa, field), getattr(pb, field)), (m, field)
            assert pb.labels == [{}] * len(pb.keys)
            assert pa.labels == [{"n": str(int(k[1:]) % 3)} for k in pa.keys]
