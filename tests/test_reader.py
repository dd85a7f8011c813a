"""Shard reader on real tar shards: skip-and-count, rank/worker splits, mixing, determinism, resume."""

import collections
import functools
import http.server
import io
import json
import tarfile
import threading

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from helpers import TOK, audio, good_sample, make_cfg, png, png_header_only, row_keys
from unimodal_free.data.loading.loader import make_eval_loader, make_train_loader
from unimodal_free.config import config_from_dict
from unimodal_free.data.loading.sources import expand_shards, resolve_sources


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


# ---------------------------------------------------------------- shard fixtures


def write_shards(root, prefix: str, n_shards: int, per_shard: int, kinds=(0, 1, 2)) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    keys = []
    for s in range(n_shards):
        with wds.TarWriter(str(root / f"{prefix}-{s:06d}.tar")) as w:
            for i in range(per_shard):
                key = f"{prefix}{s:03d}x{i:03d}"
                w.write(good_sample(key, kinds[(s * per_shard + i) % len(kinds)]))
                keys.append(key)
    return keys


def take(it, n):
    return [next(it) for _ in range(n)]


# ---------------------------------------------------------------- corrupted data


def truncated_tar(path, keys: list[str]) -> list[str]:
    """A shard cut in the middle of its last member's data; returns the keys that survive intact."""
    with wds.TarWriter(str(path)) as w:
        for key in keys:
            w.write({"__key__": key, "txt": f"text of {key}".encode(), "json": json.dumps({"pair": key}).encode()})
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    data = path.read_bytes()
    path.write_bytes(data[: last.offset_data + last.size // 2])
    return keys[:-1]


@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory):

    root = tmp_path_factory.mktemp("corrupt")
    good = write_shards(root, "good", 2, 6)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(jpeg, format="JPEG")
    bad = [
        {"png": b"\x89PNG\r\n\x1a\ngarbage", "txt": b"bad png"},
        {"jpg": jpeg.getvalue()[:200], "txt": b"bad jpeg"},
        {"flac": audio(0.5)[:30] + b"\x00" * 500, "txt": b"bad flac"},
        {"ogg": b"OggS" + bytes(range(200)), "txt": b"bad ogg"},
        {"txt": b""},
        {"txt": b"\xff\xfe not utf-8 \xc3"},
        {"txt": b"caption whose image is missing", "json": json.dumps({"pair": "m", "modalities": ["image", "text"]}).encode()},
        {"png": png_header_only(20000, 20000), "txt": b"bomb"},
    ]
    with wds.TarWriter(str(root / "bad-000000.tar")) as w:
        # good samples interleaved with the bad ones: each bad one drops alone
        for i, files in enumerate(bad):
            w.write({"__key__": f"bad{i:03d}", **files})
            w.write(good_sample(f"mid{i:03d}", i % 3))
            good.append(f"mid{i:03d}")
    good += truncated_tar(root / "trunc-000000.tar", [f"tr{i:03d}" for i in range(4)])
    return root, sorted(good), len(bad) + 1  # + the truncated shard's broken last sample


def test_eval_reader_skips_exactly_the_bad_samples(corrupt_dir, caplog):
    root, good, n_bad = corrupt_dir
    cfg = make_cfg([str(root)])
    loader = make_eval_loader(cfg.data, resolve_sources(cfg.data).heldout, TOK, 5)
    with caplog.at_level("WARNING", logger="unimodal_free.data"):
        batches = list(loader)
    keys = sorted({k for b in batches for _, k in row_keys(b)})
    assert keys == good
    assert sum(b.skipped for b in batches) == n_bad == loader.skipped
    text = caplog.text
    assert "bad004" in text and "text is empty" in text and "trunc-000000.tar" in text and "decompression bomb" in text


def test_train_single_pass_skips_and_counts_without_raising(corrupt_dir):
    root, good, n_bad = corrupt_dir
    cfg = make_cfg([str(root)])
    batches = list(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1, resampled=False))
    keys = [k for b in batches for m, k in row_keys(b)]
    assert sorted(set(keys)) == good
    assert sum(b.skipped for b in batches) == n_bad
    assert all(b.rows == 8 for b in batches[:-1])


def test_train_resampled_never_raises_on_corrupt_data(corrupt_dir):
    root, good, _ = corrupt_dir
    cfg = make_cfg([str(root)])
    batches = take(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1), 40)
    assert all(b.rows == 8 for b in batches)
    assert sum(b.skipped for b in batches) > 0
    assert {k for b in batches for _, k in row_keys(b)} <= set(good)


# ---------------------------------------------------------------- sources


def test_source_forms(tmp_path):
    write_shards(tmp_path / "d", "s", 3, 2, kinds=(2,))
    d = tmp_path / "d"
    assert len(expand_shards(str(d))) == 3
    assert len(expand_shards(str(d / "s-*.tar"))) == 3
    assert expand_shards(str(d / "s-{000000..000001}.tar")) == [str(d / "s-000000.tar"), str(d / "s-000001.tar")]
    assert expand_shards("pipe:cat /x/a-{0..2}.tar") == [f"pipe:cat /x/a-{i}.tar" for i in range(3)]
    with pytest.raises(ValueError, match="s-000008.tar does not exist"):
        expand_shards(str(d / "s-{000008..000009}.tar"))
    with pytest.raises(ValueError, match="no shards found"):
        expand_shards(str(tmp_path / "empty-*.tar"))



def test_a_missing_source_fails_before_the_demo_is_generated(tmp_path):
    """A typo in data.train is reported at once, not after the demo data for the empty held-out side is built."""
    cfg = config_from_dict({"data": {"train": str(tmp_path / "nowhere"), "demo_dir": str(tmp_path / "demo")}})
    with pytest.raises(ValueError, match="nowhere does not exist"):
        resolve_sources(cfg.data)
    assert not (tmp_path / "demo").exists()

def test_pipe_and_http_sources_read_like_local(tmp_path):
    keys = write_shards(tmp_path, "h", 2, 3)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        for source in (f"http://127.0.0.1:{port}/h-{{000000..000001}}.tar", f"pipe:cat {tmp_path}/h-{{000000..000001}}.tar"):
            cfg = make_cfg([source])
            loader = make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size)
            got = [k for b in loader for _, k in row_keys(b)]
            assert sorted(set(got)) == sorted(keys) and loader.skipped == 0, source
        # A missing http shard is a counted, skipped shard, not a crash.
        cfg = make_cfg([f"http://127.0.0.1:{port}/h-{{000001..000002}}.tar"])
        loader = make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size)
        assert len({k for b in loader for _, k in row_keys(b)}) == 3 and loader.skipped == 1
    finally:
        server.shutdown()


# ---------------------------------------------------------------- splitting, mixing, determinism


def test_two_ranks_two_workers_read_every_shard_once(tmp_path):
    keys = write_shards(tmp_path, "r", 8, 5, kinds=(2,))
    cfg = make_cfg([str(tmp_path)], num_workers=2)
    seen = collections.Counter()
    shard_readers = collections.defaultdict(set)
    for rank in range(2):
        for b in make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, rank, 2, resampled=False):
            for _, k in row_keys(b):
                seen[k] += 1
                shard_readers[k[:4]].add(rank)
    assert sorted(seen) == sorted(keys) and set(seen.values()) == {1}
    assert all(len(r) == 1 for r in shard_readers.values())  # a shard belongs to one rank


def test_fewer_shards_than_readers_is_a_clear_error(tmp_path):
    write_shards(tmp_path, "f", 3, 2, kinds=(2,))
    cfg = make_cfg([str(tmp_path)], num_workers=2)
    with pytest.raises(ValueError, match=r"3 shards cannot be split over 2 ranks x 2 workers = 4 readers"):
        make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 2, resampled=False)


def test_weighted_mixing_within_3_percent(tmp_path):
    write_shards(tmp_path / "a", "a", 4, 50, kinds=(2,))
    write_shards(tmp_path / "b", "b", 4, 50, kinds=(2,))
    cfg = make_cfg([{"path": str(tmp_path / "a"), "weight": 3.0}, {"path": str(tmp_path / "b"), "weight": 1.0}],
                   micro_batch_size=100)
    it = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1)
    counts = collections.Counter(k[0] for b in take(it, 100) for _, k in row_keys(b))
    assert sum(counts.values()) == 10000
    assert abs(counts["a"] / 10000 - 0.75) <= 0.03


def test_same_seed_same_sequence_other_seed_or_rank_differs(tmp_path):
    write_shards(tmp_path, "q", 4, 8)
    seqs = {}
    for name, seed, rank in (("a", 1, 0), ("b", 1, 0), ("c", 2, 0), ("d", 1, 1)):
        cfg = make_cfg([str(tmp_path)], seed=seed)
        loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, rank, 2)
        seqs[name] = [row_keys(b) for b in take(loader, 12)]
    assert seqs["a"] == seqs["b"]
    assert seqs["a"] != seqs["c"] and seqs["a"] != seqs["d"]


def batch_signature(b):
    return [(m, p.keys, p.values.sum().item(), p.padding.sum().item(), p.pair_index.tolist())
            for m, p in b.parts.items()], b.pair_ids, b.skipped


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_resume(tmp_path, workers):
    write_shards(tmp_path, "e", 4, 8)
    cfg = make_cfg([str(tmp_path)], num_workers=workers)
    full = [batch_signature(b)
            for b in take(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1, segment_batches=3), 14)]
    for k in (1, 5, 6, 11):
        resumed = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1, start_batch=k, segment_batches=3)
        assert [batch_signature(b) for b in take(resumed, 14 - k)] == full[k:], k


# ---------------------------------------------------------------- batching


def test_training_batches_keep_pairs_together_and_mix_modalities(tmp_path):
    keys = write_shards(tmp_path, "p", 4, 12)
    two_rows = {k for i, k in enumerate(keys) if i % 3 != 2}  # kinds 0 and 1 are pairs
    cfg = make_cfg([str(tmp_path)], micro_batch_size=16)
    batches = take(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1), 30)
    together = split = 0
    for b in batches:
        assert b.rows == 16
        per_pair = collections.Counter(pid for p in b.parts.values() for pid in p.pair_index.tolist())
        for pid, n in per_pair.items():
            if b.pair_ids[pid] in two_rows:
                together += n == 2
                split += n == 1
    assert together / (together + split) > 0.9
    assert sum(len(b.parts) >= 2 for b in batches) / len(batches) > 0.9


def test_bucketing_reduces_padding(tmp_path):
    write_shards(tmp_path, "w", 4, 20, kinds=(1, 2))  # variable-length speech and text
    waste = {}
    for name, bounds in (("bucketed", [4, 8, 16, 32, 64]), ("fifo", [])):
        cfg = make_cfg([str(tmp_path)], bucket_boundaries=bounds, micro_batch_size=16)
        batches = take(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1), 20)
        waste[name] = sum(b.padding_waste() for b in batches) / len(batches)
    assert waste["bucketed"] < 0.7 * waste["fifo"], waste


def test_eval_keeps_pairs_and_every_caption_in_order(tmp_path):
    write_shards(tmp_path, "v", 1, 4)
    with wds.TarWriter(str(tmp_path / "v-000001.tar")) as w:
        w.write({"__key__": "coco001", "png": png(1), "txt": b"a dog\na brown dog\n",
                 "json": json.dumps({"pair": "img1"}).encode()})
    cfg = make_cfg([str(tmp_path)])
    batches = list(make_eval_loader(cfg.data, cfg.data.heldout, TOK, 2))
    assert [b.pair_ids for b in batches] == [["v000x000", "v000x001"], ["v000x002", "v000x003"], ["img1"]]
    last = batches[-1]
    assert last.parts["text"].rows == 2 and last.parts["text"].pair_index.tolist() == [0, 0]
    assert last.parts["image"].pair_index.tolist() == [0]
    # Two ranks split the samples disjointly and completely.
    halves = [{k for b in make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size, rank=r,
                                           world_size=2) for _, k in row_keys(b)}
              for r in range(2)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 5


def test_unreadable_resampled_source_stops_with_a_clear_error():
    cfg = make_cfg(["pipe:false"])  # every shard read fails: a dead bucket, not bad luck
    with pytest.raises(RuntimeError, match="data source 'pipe:false': the last 50 shards read gave no sample"):
        next(make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1))


def test_skip_counter_counts_everything_but_rate_limits_warnings(caplog):
    from unimodal_free.data.reading.handlers import SkipCounter

    counter = SkipCounter("t", first_lines=3, interval_s=3600)
    with caplog.at_level("WARNING", logger="unimodal_free.data"):
        for i in range(100):
            counter.skip(f"shard.tar:key{i}", "bad")
        assert counter.handler(ValueError("broken header", "http://x/shard-7.tar")) is True
    assert counter.count == 101
    assert len(caplog.records) == 3 and "key0" in caplog.text and "key3" not in caplog.text
