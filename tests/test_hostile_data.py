"""Hostile and broken data on real tar shards: bounded cost per sample, no endless loop, no hang, no leak.

The memory bombs (gigabytes from a few MB on disk) are measured in a subprocess
in test_hostile_memory.py; here the caps, the stop guards and the stalled
sources are checked directly.
"""

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
import torch

from helpers import TOK, make_cfg, png, row_keys, undecodable_shards, write_tar
from unimodal_free.data.loading.loader import DataSourceError, make_eval_loader, make_train_loader
from unimodal_free.data.reading.elements import decode_captions, decode_speech, sample_rows, speech_elements, text_elements

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def within(seconds: float, fn):
    """fn() in a thread; fails (instead of hanging the suite) when it does not return in time."""
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


# ---------------------------------------------------------------- per-sample caps


def test_speech_decodes_only_max_seconds_and_features_equal_a_full_decode():
    sr = 44100
    t = np.arange(10 * sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, np.stack([wave, 0.5 * wave], 1), sr, format="FLAC")
    data = buf.getvalue()
    cut = decode_speech(data, 16000, "k", max_seconds=2.0)
    full = decode_speech(data, 16000, "k")
    assert cut.numel() < 2.2 * 16000 and full.numel() == 10 * 16000
    a = speech_elements(cut, 16000, 16, 4, 2.0)
    b = speech_elements(full, 16000, 16, 4, 2.0)
    assert a.values.shape == b.values.shape
    torch.testing.assert_close(a.values, b.values, atol=1e-3, rtol=1e-3)  # the margin hides the cut from the resampler


def test_captions_capped_in_lines_and_characters_before_tokenizing():
    text = "".join(f"caption {i}\n\n" for i in range(200_000)).encode()
    assert decode_captions(text, "k", max_lines=16) == [f"caption {i}" for i in range(16)]

    class Counting:  # records what the tokenizer is handed
        seen = 0

        def encode(self, s):
            Counting.seen = len(s)
            return TOK.encode(s)

    e = text_elements("x" * 5_000_000, Counting(), 32, max_chars=1000)
    assert e.values.numel() == 32 and Counting.seen == 1000
    rows = sample_rows({"__key__": "k", "txt": text}, make_cfg(["x"], max_caption_lines=5).data, TOK, train=False)
    assert len(rows) == 5


def test_member_caps_unknown_extensions_and_duplicate_keys(tmp_path):
    pair = json.dumps({"pair": "p"}).encode()
    write_tar(tmp_path / "a-000000.tar", [
        ("k1.txt", b"one"), ("k1.bin", os.urandom(5_000)),  # unknown extension: ignored, sample kept
        ("k2.txt", b"two"), ("k2.json", pair),
        ("k1.txt", b"again"),  # a later sample with an earlier key: skipped, counted
        ("k3.txt", b"x" * 20_000),  # over the member cap: refused and the shard ends
        ("k4.txt", b"never read"),
    ])
    cfg = make_cfg([str(tmp_path)], max_member_bytes=10_000)
    loader = make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size)
    keys = [k for b in loader for _, k in row_keys(b)]
    assert keys == ["k1", "k2"] and loader.skipped == 2


def test_pair_null_is_unpaired_not_pair_none():

    sample = {"__key__": "k", "png": png(1), "txt": b"a caption", "json": json.dumps({"pair": None}).encode()}
    rows = sample_rows(sample, make_cfg(["x"]).data, TOK, train=False)
    assert [row.pair for row in rows] == [None, None]


# ---------------------------------------------------------------- no decodable sample: stop, do not loop


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_undecodable_source_stops_with_one_line_naming_sources_and_reasons(tmp_path, workers):
    root = undecodable_shards(tmp_path / "u")
    cfg = make_cfg([str(root)], num_workers=workers, max_skips_in_row=300)
    loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1)
    with pytest.raises(DataSourceError) as info:
        within(60, lambda: next(loader))
    msg = str(info.value)
    assert "\n" not in msg and repr(str(root)) in msg and "data.max_skips_in_row=300" in msg
    assert "image: not an image PIL can identify" in msg, msg
    loader.close()


def test_zero_tokens_is_refused_before_start(tmp_path):
    """The issue's `--set data.max_text_tokens=0` (every caption decoded to no tokens, skipped forever) now
    stops at config validation, before any loader exists: one line naming the key."""
    from unimodal_free.config import ConfigError

    with pytest.raises(ConfigError, match=r"^data.max_text_tokens: must be > 0, got 0$"):
        make_cfg([str(tmp_path)], max_text_tokens=0, max_skips_in_row=100)


def worker_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("workers", [1, 2])
def test_zero_byte_shard_error_and_close_leave_no_worker(tmp_path, workers):
    (tmp_path / "z-000000.tar").write_bytes(b"")
    before = worker_pids()
    cfg = make_cfg([str(tmp_path)], num_workers=workers)
    loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1)
    with pytest.raises(DataSourceError, match="the last 50 shards read gave no sample .*shard unreadable: ReadError"):
        within(60, lambda: next(loader))
    within(30, loader.close)
    assert worker_pids() - before == set()


def test_close_kills_a_worker_stuck_in_a_read(tmp_path):
    """A worker blocked in a stalled pipe cannot see the done event: close() still ends it, and its child."""
    cfg = make_cfg(["pipe:sleep 600"], num_workers=1)
    before = worker_pids()
    loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, 0, 1)
    deadline = time.monotonic() + 60
    while not any(p.name() == "sleep" for p in psutil.Process().children(recursive=True)):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    within(30, loader.close)
    time.sleep(0.5)  # the kernel delivers the parent-death signal to the child asynchronously
    assert worker_pids() - before == set()


# ---------------------------------------------------------------- stalled and killed sources


class SilentServer:
    """Accepts TCP connections on loopback and never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def curl_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "curl"]


def test_stalled_http_source_times_out_and_leaves_no_curl():
    server = SilentServer()
    try:
        cfg = make_cfg([f"http://127.0.0.1:{server.port}/s-000000.tar"], read_timeout_s=2)
        loader = make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size)
        t0 = time.monotonic()
        assert within(60, lambda: list(loader)) == []
        assert loader.skipped == 1 and time.monotonic() - t0 < 30
        assert curl_children() == []
    finally:
        server.close()


def test_killed_reader_takes_its_curl_child_with_it(tmp_path):
    server = SilentServer()
    code = (
        "import sys; from helpers import make_cfg, TOK; from unimodal_free.data.loading.loader import make_eval_loader\n"
        f"cfg = make_cfg(['http://127.0.0.1:{server.port}/s.tar'], read_timeout_s=3600)\n"
        "list(make_eval_loader(cfg.data, cfg.data.heldout, TOK, cfg.train.micro_batch_size))\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (curls := [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "curl"]):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(curls, timeout=10)
        assert alive == [], "curl outlived the killed reader"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in psutil.process_iter(["name", "cmdline"]):  # never leave a leaked curl behind on failure
            if p.info["name"] == "curl" and f"127.0.0.1:{server.port}" in " ".join(p.info["cmdline"] or []):
                p.kill()
        server.close()
