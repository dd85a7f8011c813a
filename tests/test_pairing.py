"""The pairing tool removes exactly the pairs it says it removes, as the trainer's own loader sees them.

Real demo shards (image+speech+text triples, image+text pairs, text-only lines)
and the demo's real sentencepiece tokenizer go through ``rewrite`` and then
through ``make_train_loader`` (one seeded pass); pair ids are counted per
modality combination from the batches' ``pair_index``.
"""

import collections
import hashlib
import json
import tarfile

import pytest

from unimodal_free.config import config_from_dict
from unimodal_free.config import DataConfig
from unimodal_free.data.demo.build import Mix, generate
from unimodal_free.data.loading.loader import make_train_loader
from unimodal_free.data.loading.sources import expand_shards
from unimodal_free.data.reading.handlers import SkipCounter
from unimodal_free.data.reading.samples import read_shard
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.rewriting.pairing import PairingError, groups, main, rewrite
from unimodal_free.data.writing.shard_writer import ShardSink

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

N_TRAIN = 96
MIX = Mix(speech=0.75, text_only=0.125)  # 72 triples, 12 text-only lines, 12 image+text pairs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate(root, N_TRAIN, 8, mix=MIX, progress=False)
    return root


@pytest.fixture(scope="module")
def tokenizer(demo):
    return load_tokenizer(str(demo / "tokenizer.model"))


def loader_pairs(shards, tokenizer) -> tuple[collections.Counter, collections.Counter, collections.Counter]:
    """One pass of the trainer's loader over ``shards``: (pair ids joining two or more modalities, per
    combination; rows per modality; rows without a partner per modality: no pair id, or one no other row has)."""
    data = {"train": [str(shards)], "heldout": [str(shards)], "image_size": 32,
            "patch_size": 8, "n_mels": 16, "frames_per_element": 4, "num_workers": 0, "shuffle_buffer": 50}
    cfg = config_from_dict({"data": data, "train": {"micro_batch_size": 16}})
    members: dict[str, set[str]] = collections.defaultdict(set)
    rows, alone = collections.Counter(), collections.Counter()
    for batch in make_train_loader(cfg.data, cfg.train, cfg.data.train, tokenizer, 0, 1, resampled=False):
        for modality, part in batch.parts.items():
            for index in part.pair_index.tolist():
                rows[modality] += 1
                if index < 0:
                    alone[modality] += 1
                else:
                    members[batch.pair_ids[index]].add(modality)
    combos = collections.Counter("+".join(sorted(m)) for m in members.values() if len(m) > 1)
    alone.update(next(iter(m)) for m in members.values() if len(m) == 1)  # a pair id with no partner
    return combos, rows, alone


def shard_members(shards) -> list[tuple[str, dict]]:
    """(origin key, {ext: sha256}) of every sample, in stream order (origin: json "from", else the key)."""
    out = []
    for url in expand_shards(str(shards)):
        for s in read_shard(url, SkipCounter("test"), DataConfig()):
            meta = json.loads(s["json"])
            exts = {e: hashlib.sha256(v).hexdigest() for e, v in s.items() if not e.startswith("__") and e != "json"}
            out.append((meta.get("from", s["__key__"]), exts))
    return out


def test_the_input_has_image_speech_pairs(demo, tokenizer):
    """What the filter must remove is there before it (so the tests below can fail)."""
    combos, rows, alone = loader_pairs(demo / "train", tokenizer)
    assert combos == {"image+speech+text": 72, "image+text": 12}
    assert alone == {"text": 12}


def test_drop_image_speech_leaves_no_pair_holding_both(demo, tokenizer, tmp_path):
    before, rows_before, _ = loader_pairs(demo / "train", tokenizer)
    report = rewrite(str(demo / "train"), tmp_path, drop=["image+speech"], maxcount=40)
    combos, rows, alone = loader_pairs(tmp_path, tokenizer)
    assert not any("image" in c and "speech" in c for c in combos), combos
    # Each triple became an image+text and a speech+text pair; the image+text pairs stay as they were.
    assert combos == {"image+text": 72 + 12, "speech+text": 72}
    assert sum(combos.values()) == report.paired_ids
    # Every image and recording is still trained on; the triples' captions twice.
    assert rows["image"] == rows_before["image"] and rows["speech"] == rows_before["speech"]
    assert rows["text"] == rows_before["text"] + 72
    assert alone == {"text": 12}


def test_paired_share_is_what_the_tool_reports(demo, tokenizer, tmp_path):
    _, rows_before, _ = loader_pairs(demo / "train", tokenizer)
    report = rewrite(str(demo / "train"), tmp_path, paired=0.3, seed=0, maxcount=40)
    combos, rows, alone = loader_pairs(tmp_path, tokenizer)
    paired = sum(combos.values())
    assert paired == report.paired_ids == report.kept
    assert report.kept + report.split == 84  # multi-modality input samples
    assert abs(paired / 84 - 0.3) < 0.12, paired
    assert rows == rows_before  # nothing lost, nothing doubled
    # The split samples' members are alone: no pair id, so never a positive.
    split_rows = sum(alone.values()) - 12  # minus the text-only lines, alone before already
    assert split_rows == rows_before.total() - 12 - sum(len(c.split("+")) * n for c, n in combos.items())


def test_every_input_member_is_in_the_output_and_partners_are_spread(demo, tmp_path):
    rewrite(str(demo / "train"), tmp_path, drop=["image+speech"], paired=0.5, seed=3, maxcount=40)
    source = dict(shard_members(demo / "train"))
    written = shard_members(tmp_path)
    seen = collections.defaultdict(collections.Counter)  # input key -> ext -> times written
    for origin, exts in written:
        for ext, digest in exts.items():
            assert source[origin][ext] == digest, (origin, ext)  # the input's bytes, unchanged
            seen[origin][ext] += 1
    assert set(seen) == set(source)
    for key, exts in source.items():
        assert set(seen[key]) == set(exts), key  # no member lost
        assert all(seen[key][e] == 1 for e in exts if e != "txt"), key  # image and speech once
    # Global shuffle: the parts of one input sample seldom sit next to each other.
    origins = [origin for origin, _ in written]
    adjacent = sum(a == b for a, b in zip(origins, origins[1:]))
    assert adjacent / len(origins) < 0.1, adjacent


def test_same_seed_same_corpus_other_seed_other_choice(demo, tmp_path):
    a = rewrite(str(demo / "train"), tmp_path / "a", paired=0.5, seed=1)
    b = rewrite(str(demo / "train"), tmp_path / "b", paired=0.5, seed=1)
    c = rewrite(str(demo / "train"), tmp_path / "c", paired=0.5, seed=2)
    read = lambda d: [p.read_bytes() for p in sorted(d.glob("shard-*.tar"))]
    assert read(tmp_path / "a") == read(tmp_path / "b")
    assert a.written.kinds == b.written.kinds and read(tmp_path / "a") != read(tmp_path / "c")
    kept = lambda d: {o for o, e in shard_members(d) if len(e) > 1}
    assert kept(tmp_path / "a") != kept(tmp_path / "c")


def test_groups_keep_every_modality():
    assert groups(["image", "speech", "text"], [frozenset({"image", "speech"})], True) == [
        ("image", "text"), ("speech", "text")]
    assert groups(["image", "speech"], [frozenset({"image", "speech"})], True) == [("image",), ("speech",)]
    assert groups(["image", "speech", "text"], [], False) == [("image",), ("speech",), ("text",)]
    assert groups(["image", "text"], [frozenset({"image", "speech"})], True) == [("image", "text")]


def test_corrupt_input_samples_are_skipped_and_counted(tmp_path):
    src = tmp_path / "src"
    with ShardSink(src) as sink:
        sink.write({"__key__": "good", "txt": b"a red ring", "json": b'{"pair": "good"}'})
        sink.write({"__key__": "badjson", "txt": b"a blue ring", "json": b"{not json"})
        sink.write({"__key__": "nothing", "json": b"{}"})
    report = rewrite(str(src), tmp_path / "out")
    assert report.read == 1 and report.skipped == 2
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        assert sorted(tar.getnames()) == ["good.json", "good.txt"]


def test_bad_arguments_are_one_line_errors(demo, tmp_path, capsys):
    src = str(demo / "train")
    assert main([src, str(tmp_path / "x"), "--drop", "image+image"]) == 2
    assert "--drop 'image+image'" in capsys.readouterr().err
    assert main([src, str(tmp_path / "x"), "--paired", "1.5"]) == 2
    assert "--paired" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), str(tmp_path / "x")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main([src, str(tmp_path / "ok"), "--paired", "0.2"]) == 0
    assert "pair ids" in capsys.readouterr().out
    with pytest.raises(PairingError, match="already holds shards"):
        rewrite(src, tmp_path / "ok")


def test_output_has_as_many_shards_as_the_input_by_default(tmp_path):
    """Resampled training draws shards: one big output shard would be read from the same start by every rank."""
    with ShardSink(tmp_path / "src", maxcount=4) as sink:
        for i in range(12):
            sink.write({"__key__": f"s{i}", "txt": f"line {i}".encode(), "png": b"not read here",
                        "json": b'{"modalities": ["image", "text"]}'})
    report = rewrite(str(tmp_path / "src"), tmp_path / "out", paired=0.5)
    assert len(report.written.shards) == 3 and report.written.written == 12 + report.split
