"""Memory bombs: a few MB on disk, gigabytes if decoded naively. Each must cost < 1 GB of extra RSS.

One subprocess measures every bomb through the eval reader (the decode path
training and query share), and the tar-header bombs also through the training
reader and the tokenizer trainer (``READERS``): before each, the peak-RSS mark is reset
(/proc/self/clear_refs = 5), then extra = VmHWM - that mark, in MB, rounded and never negative
(helpers.peak_extra_mb). A watchdog ends
a bomb that passes 2.5 GB so a regression cannot take the machine down.

    python tests/test_hostile_memory.py DIR [BOMB...]   # prints the figures docs/DATA.md quotes
"""

from __future__ import annotations

import io
import itertools
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MB = 1024
WATCHDOG_MB = 2560
MIB = 1 << 20


# ---------------------------------------------------------------- bomb files (small on disk)


def flac_silence(path: Path, minutes: int = 30, sr: int = 48000) -> None:
    """30 min of 48 kHz stereo silence: ~335 KB of FLAC, 1.4 GB as float32 once decoded."""
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", sr, 2, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((sr * 10, 2), np.int16)
        for _ in range(minutes * 6):
            f.write(block)
    tar_with(path, [("s.flac", buf.getvalue()), ("s.txt", b"silence")])


def tar_with(path: Path, members: list[tuple[str, bytes]]) -> None:
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def gzip_zero_member(path: Path, name: str, mib: int, kind: bytes = tarfile.REGTYPE) -> None:
    """A .tar.gz shard holding one member of ``mib`` MiB of zeros (~1 KB of gzip per MiB).

    One gzip member whose deflate stream is fully flushed after each MiB: every
    MiB of zeros then compresses to the same bytes, written ``mib`` times.
    ``kind``: the member's tar type (``L`` long name, ``x``/``g`` pax header: metadata records).
    """
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = mib * MIB
    header, tail = info.tobuf(tarfile.USTAR_FORMAT), bytes(2 * 512)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(MIB)
    crc = zlib.crc32(header)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        f.write(c.compress(header) + c.flush(zlib.Z_FULL_FLUSH))
        f.write(c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH))
        steady = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
        for _ in range(mib - 1):
            f.write(steady)
        for _ in range(mib):
            crc = zlib.crc32(zeros, crc)
        f.write(c.compress(tail) + c.flush())
        crc = zlib.crc32(tail, crc)
        f.write(struct.pack("<II", crc, (len(header) + mib * MIB + len(tail)) & 0xFFFFFFFF))


def make_bombs(root: Path) -> dict[str, Path]:
    """name -> shard folder (one shard each)."""
    lines = "".join(f"a photo of thing number {i}\n" for i in range(1_430_000)).encode()  # 50 MB
    few_lines = lines[: 24 * MIB].rsplit(b"\n", 1)[0]  # under the 32 MiB member cap
    words = b"the cat sat on the mat " * (50 * MIB // 23)
    bombs = {
        "flac_30min_48k_stereo": lambda p: flac_silence(p / "b-000000.tar"),
        "gzip_2GB_txt_member": lambda p: gzip_zero_member(p / "b-000000.tar.gz", "z.txt", 2048),
        "gzip_2GB_unknown_member": lambda p: gzip_zero_member(p / "b-000000.tar.gz", "z.bin", 2048),
        "text_45MB_1.43M_lines": lambda p: tar_with(p / "b-000000.tar.gz", [("t.txt", lines)]),
        "text_24MB_lines_under_cap": lambda p: tar_with(p / "b-000000.tar.gz", [("t.txt", few_lines)]),
        "text_50MB_one_line": lambda p: tar_with(p / "b-000000.tar.gz", [("t.txt", words)]),
        "text_30MB_one_line_under_cap": lambda p: tar_with(p / "b-000000.tar.gz", [("t.txt", words[: 30 * MIB])]),
        "gzip_2GB_gnu_long_name": lambda p: gzip_zero_member(p / "b-000000.tar.gz", "././@LongLink", 2048, b"L"),
        "gzip_2GB_pax_header": lambda p: gzip_zero_member(p / "b-000000.tar.gz", "PaxHeader/z.txt", 2048, b"x"),
        "gzip_2GB_pax_global_header": lambda p: gzip_zero_member(p / "b-000000.tar.gz", "pax_global_header", 2048, b"g"),
    }
    out = {}
    for name, make in bombs.items():
        d = root / name
        if not d.exists():
            d.mkdir(parents=True)
            make(d)
        out[name] = d
    return out


# ---------------------------------------------------------------- measuring (runs in the subprocess)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# bomb -> the readers it goes through besides eval: the tar-header bombs reach every shard reader
READERS = {"gzip_2GB_txt_member": ("train", "tokenizer"), "gzip_2GB_gnu_long_name": ("train", "tokenizer"),
           "gzip_2GB_pax_header": ("train", "tokenizer"), "gzip_2GB_pax_global_header": ("train", "tokenizer")}


def read_eval(cfg, tok, shard_dir: Path) -> dict:
    from unimodal_free.data.loading.loader import make_eval_loader

    loader = make_eval_loader(cfg.data, cfg.data.heldout, tok, 4)
    rows = {}
    for b in loader:
        for m, p in b.parts.items():
            rows[m] = rows.get(m, 0) + p.rows
            if m == "speech":
                rows["speech_elements"] = p.values.shape[1]
    return {"skipped": loader.skipped, "rows": rows}


def read_train(cfg, tok, shard_dir: Path) -> dict:
    """The training reader: resampled, it stops with one line when the source gives nothing."""
    from unimodal_free.data.loading.loader import make_train_loader

    try:
        n = sum(1 for _ in itertools.islice(make_train_loader(cfg.data, cfg.train, cfg.data.train, tok, 0, 1), 4))
    except Exception as exc:
        return {"batches": 0, "error": f"{type(exc).__name__}: {exc}"[:400]}
    return {"batches": n}


def read_tokenizer(cfg, tok, shard_dir: Path) -> dict:
    """The tokenizer trainer's reader; refusals are counted from its warning lines."""
    import logging

    from unimodal_free.data.reading.tokenizer import iter_sentences

    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("unimodal_free.data").addHandler(handler)
    try:
        lines = sum(1 for _ in iter_sentences([str(shard_dir)]))
    except Exception as exc:
        return {"lines": 0, "error": f"{type(exc).__name__}: {exc}"[:400]}
    finally:
        logging.getLogger("unimodal_free.data").removeHandler(handler)
    return {"lines": lines, "skipped": len(warnings), "warnings": warnings}


def measure(root: Path, only: list[str]) -> None:
    import threading

    import unimodal_free.data.loading.loader  # noqa: F401  imported (torch and all) before any peak mark is reset
    from helpers import peak_extra_mb
    from unimodal_free.config import config_from_dict
    from unimodal_free.data.reading.tokenizer import SentencePieceTokenizer, train_tokenizer

    bombs = make_bombs(root)
    spm = train_tokenizer((f"the cat sat on the mat number {i}" for i in range(300)), 64, root / "spm.model")
    tok = SentencePieceTokenizer(spm)
    data = {"tokenizer": str(spm), "image_size": 16, "patch_size": 8, "n_mels": 16, "max_text_tokens": 32,
            "num_workers": 0}
    readers = {"eval": read_eval, "train": read_train, "tokenizer": read_tokenizer}
    current: dict = {}

    def watchdog():
        while True:
            if current and _status_kb("VmRSS") - current["base"] > WATCHDOG_MB * 1024:
                print(json.dumps({"name": current["name"], "extra_mb": -1, "over": WATCHDOG_MB}), flush=True)
                os._exit(3)
            threading.Event().wait(0.05)

    threading.Thread(target=watchdog, daemon=True).start()
    for name, shard_dir in bombs.items():
        cfg = config_from_dict({"data": {**data, "train": [str(shard_dir)], "heldout": [str(shard_dir)]},
                                "train": {"micro_batch_size": 4}})
        for reader in ("eval", *READERS.get(name, ())):
            label = name if reader == "eval" else f"{name}@{reader}"
            if only and label not in only:
                continue
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            base = _status_kb("VmHWM")  # the mark just set: the peak below is measured from it
            current.update(name=label, base=base)
            result = readers[reader](cfg, tok, shard_dir)
            extra = peak_extra_mb(base, _status_kb("VmHWM"))
            current.clear()
            print(json.dumps({"name": label, "extra_mb": extra, **result, "base_mb": base // 1024}), flush=True)


def run_measurement(root: Path) -> dict[str, dict]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, str(root)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200)
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            results[r["name"]] = r
    results["__stderr__"] = {"text": proc.stderr[-3000:], "rc": proc.returncode}
    return results


# ---------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return run_measurement(tmp_path_factory.mktemp("bombs"))


@pytest.mark.slow
@pytest.mark.parametrize("name,expect", [
    ("flac_30min_48k_stereo", "cut"),
    ("gzip_2GB_txt_member", "skipped"),
    ("gzip_2GB_unknown_member", "skipped"),
    ("text_45MB_1.43M_lines", "skipped"),
    ("text_24MB_lines_under_cap", "cut"),
    ("text_50MB_one_line", "skipped"),
    ("text_30MB_one_line_under_cap", "cut"),
])
def test_bomb_costs_under_1GB_and_is_skipped_or_cut(measured, name, expect):
    r = measured.get(name)
    assert r is not None, measured["__stderr__"]
    assert 0 <= r["extra_mb"] < LIMIT_MB, r
    if expect == "skipped":
        assert r["skipped"] == 1 and not r["rows"], r
    elif name.startswith("flac"):  # cut to data.max_speech_seconds (6 s = 150 elements), not skipped
        assert r["skipped"] == 0 and r["rows"]["speech"] == 1 and r["rows"]["speech_elements"] <= 150, r
    elif "lines" in name:
        assert r["skipped"] == 0 and r["rows"] == {"text": 16}, r  # data.max_caption_lines
    else:
        assert r["skipped"] == 0 and r["rows"] == {"text": 1}, r


RECORD_BOMBS = ["gzip_2GB_gnu_long_name", "gzip_2GB_pax_header", "gzip_2GB_pax_global_header"]


@pytest.mark.slow
@pytest.mark.parametrize("name", RECORD_BOMBS)
def test_tar_record_bomb_is_refused_by_eval_under_1GB(measured, name):
    """A 2 MB shard whose long-name/pax header claims 2 GiB: refused from its header (tarfile reads it whole)."""
    r = measured.get(name)
    assert r is not None, measured["__stderr__"]
    assert 0 <= r["extra_mb"] < LIMIT_MB and r["skipped"] == 1 and not r["rows"], r


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gzip_2GB_txt_member"] + RECORD_BOMBS)
def test_tar_header_bomb_is_refused_by_training_and_tokenizer_under_1GB(measured, name):
    train, tok = measured.get(f"{name}@train"), measured.get(f"{name}@tokenizer")
    assert train is not None and tok is not None, measured["__stderr__"]
    cap = "data.max_member_bytes" if "member" in name else "the tar record cap"
    assert 0 <= train["extra_mb"] < LIMIT_MB and cap in train.get("error", ""), train  # the run stops, naming it
    assert 0 <= tok["extra_mb"] < LIMIT_MB and tok["lines"] == 0 and tok["skipped"] == 1, tok
    assert cap in tok["warnings"][0] and "b-000000.tar.gz" in tok["warnings"][0], tok


if __name__ == "__main__":
    measure(Path(sys.argv[1]), sys.argv[2:])
