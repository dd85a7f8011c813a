"""Helpers shared by the test modules (which import them from here, never from each other).

Raw corpora and tiny models for the eval tests, shards for the reader tests, and trainings: DeepSpeed
launches with 2 CPU ranks over gloo and one rank in this process. The launched runs and the demo
corpus are cached for the session (``_cache``), so test_checkpoint_resume.py reuses test_train_launch.py's
ZeRO-3 run as its uninterrupted reference. Fixtures live in conftest.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from PIL import Image

from synthetic_batches import tiny_config, tiny_specs
from unimodal_free.batch import modality_specs
from unimodal_free.config import config_from_dict, load_config
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.model import build_model
from unimodal_free.objective import Data2VecStudent

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- raw corpora and tiny models for the eval tests

NUM_TRIPLES = 6  # image + speech + caption (manifest)
NUM_COCO = 4  # image + 3 captions (COCO captions JSON)
COCO_CAPTIONS = 3


def write_raw_corpus(root: Path) -> tuple[Path, Path]:
    """Raw files as corpora ship them -> (manifest.jsonl, captions.json)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(NUM_TRIPLES):
        rgba = rng.integers(0, 256, (20 + i, 24, 4), dtype=np.uint8)  # non-square, with alpha
        Image.fromarray(rgba, mode="RGBA").save(root / f"img{i}.png")
        t = np.arange(int(16000 * (0.3 + 0.1 * i))) / 16000
        wave = (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32)
        fmt, ext = ("OGG", "ogg") if i % 2 else ("FLAC", "flac")
        sf.write(root / f"say{i}.{ext}", wave, 16000, format=fmt)
        lines.append({"key": f"triple{i}", "image": f"img{i}.png", "speech": f"say{i}.{ext}",
                      "text": f"a {['red', 'green', 'blue'][i % 3]} thing number {i}", "pair": f"t{i}"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    images, annotations = [], []
    for i in range(NUM_COCO):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / f"coco{i}.jpg")
        images.append({"id": 100 + i, "file_name": f"coco{i}.jpg"})
        annotations += [{"image_id": 100 + i, "caption": f"photo {i} caption {c}"} for c in range(COCO_CAPTIONS)]
    coco = root / "captions.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    return manifest, coco


def tiny_cfg():
    return load_config(ROOT / "configs" / "tiny.json")


def tiny_model(cfg, tokenizer, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg.model, cfg.objective, modality_specs(cfg.data, tokenizer.vocab_size)).eval()


def embedded_labels(shard_dirs, tokenizer="bytes", batch_size: int = 4) -> dict[str, dict[str, dict[str, str]]]:
    """Shards read by the eval reader and embedded by a tiny model -> {modality: {sample key: labels}}
    from the EmbeddingSet, checked parallel to its rows (every key has one label dict, one row)."""
    from unimodal_free.config import Source
    from unimodal_free.data.loading.loader import make_eval_loader
    from unimodal_free.eval.embed import embed_batches
    from unimodal_free.model import pooled_embedding

    cfg, tok = tiny_cfg(), load_tokenizer(str(tokenizer))
    loader = make_eval_loader(cfg.data, [Source(path=str(d)) for d in shard_dirs], tok, batch_size)
    emb = embed_batches(tiny_model(cfg, tok), loader, pooled_embedding, "cpu", cfg.data, max_thumbnails=0)
    out = {}
    for m in emb.modalities:
        assert len(emb.labels[m]) == len(emb.keys[m]) == emb.rows(m), m
        out[m] = {}
        for key, labels in zip(emb.keys[m], emb.labels[m]):
            assert out[m].setdefault(key, labels) == labels  # a sample's caption rows carry the same labels
    return out


def triple(setup, i):
    raw = setup["root"] / "raw"
    manifest = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    row = manifest[i]
    return raw / row["image"], raw / row["speech"], row["text"], row["key"]


def folder_gallery(setup, dest: Path) -> Path:
    """The raw triples as a folder: imgN.png, sayN.flac/.ogg and sayN.txt (one caption each)."""
    dest.mkdir(parents=True)
    for i in range(NUM_TRIPLES):
        image, speech, caption, _ = triple(setup, i)
        shutil.copy(image, dest / image.name)
        shutil.copy(speech, dest / speech.name)
        (dest / f"{speech.stem}.txt").write_text(caption + "\n")
    return dest


def assert_ranked_by(got: list[tuple[object, float]], expected: dict[object, float], what: str = "",
                     tol: float = 1e-4) -> None:
    """``got`` ((item, score) best first) ranks every item of ``expected`` by its score there.

    Items whose scores agree within ``tol`` (the same picture twice, embedded in different batches) may come in
    either order: their embeddings differ in the last bits with the batch they were computed in.
    """
    assert sorted(map(str, (i for i, _ in got))) == sorted(map(str, expected)), f"{what}: not the same items"
    own = [expected[i] for i, _ in got]
    assert [s for _, s in got] == pytest.approx(own, abs=tol), f"{what}: an item's score is not its own"
    best_first = sorted(expected.values(), reverse=True)
    assert own == pytest.approx(best_first, abs=tol), f"{what}: not ranked best first"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: "), err
    return err


def model_for(*overrides, seed=0):
    cfg = tiny_config(*overrides)
    torch.manual_seed(seed)
    return cfg, Data2VecStudent(cfg.model, cfg.objective, cfg.masking, tiny_specs(cfg))


def peak_extra_mb(base_kb: int, peak_kb: int) -> int:
    """MB of a peak (VmHWM) above a base, rounded; never negative. Both are reads of the kernel's
    approximate per-CPU RSS counters: when nothing was allocated in between, the peak can read a few KB
    under the base, which is 0 MB (floor division made it -1)."""
    return max(0, round((peak_kb - base_kb) / 1024))


# ---------------------------------------------------------------- shards for the reader tests

TOK = load_tokenizer("bytes")


def png(seed: int, size=(12, 10), mode="RGB") -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def audio(seconds: float, fmt="FLAC", sr=16000) -> bytes:
    t = np.arange(int(sr * seconds)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def good_sample(key: str, kind: int) -> dict:
    """kind 0: image+text pair, 1: speech+text pair, 2: text only."""
    s = {"__key__": key, "json": json.dumps({"pair": key}).encode()}
    n = int(key[-3:])
    if kind == 0:
        s["png"] = png(n)
        s["txt"] = f"picture number {n}".encode()
    elif kind == 1:
        s["flac"] = audio(0.2 + 0.1 * (n % 5))
        s["txt"] = ("said " * (1 + n % 6)).encode()
    else:
        s["txt"] = ("text " * (1 + n % 9)).encode()
    return s


def make_cfg(train, heldout=None, **over):
    data = {"train": train, "heldout": heldout or train, "tokenizer": "bytes", "image_size": 16, "patch_size": 8,
            "n_mels": 16, "frames_per_element": 4, "max_text_tokens": 32, "num_workers": 0, "shuffle_buffer": 20}
    train_over = {"micro_batch_size": over.pop("micro_batch_size", 8), "seed": over.pop("seed", 0)}
    data.update(over)
    return config_from_dict({"data": data, "train": train_over})


def row_keys(batch) -> list[tuple[str, str]]:
    return [(m, k) for m, p in batch.parts.items() for k in p.keys]


def png_header_only(width: int, height: int) -> bytes:
    """A real PNG signature + IHDR (valid CRC) claiming width x height, with a tiny IDAT and IEND."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar of (member name, bytes); name bytes that are not UTF-8 pass through as surrogates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", encoding="utf-8", errors="surrogateescape") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def undecodable_shards(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n):
        with wds.TarWriter(str(root / f"u-{s:06d}.tar")) as w:
            for i in range(20):
                w.write({"__key__": f"u{s}x{i}", "png": b"\x89PNG\r\n\x1a\nnot a png", "txt": b"a caption"})
    return root


# ---------------------------------------------------------------- a command's peak memory (hostile inputs)

WATCHDOG_MB = 1536  # a command past this is killed: a regression fails its test instead of taking the machine down


@dataclass
class Measured:
    rc: int  # -9 when the watchdog or the timeout killed it
    out: str
    err: str
    peak_mb: int  # the command's peak RSS (its VmHWM, polled every 20 ms while it runs)
    killed: str = ""  # "" or why it was killed ("timeout after 60 s", "RSS over 1536 MB")

    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_measured(cmd: list[str], timeout: float = 120, watchdog_mb: int = WATCHDOG_MB) -> Measured:
    """Run ``cmd`` from the checkout (this checkout on PYTHONPATH, one thread) and measure its peak RSS.

    The peak is the process's own high-water mark (/proc/PID/status VmHWM), read while it runs: wait4's
    ru_maxrss would count the RSS of this (pytest) process too, which the child inherits until it execs.
    A hang (a FIFO read without O_NONBLOCK) ends at ``timeout``, a memory bomb at ``watchdog_mb``; either way
    the result says so and the caller's assertions fail, quickly."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline, killed, peak_kb = time.monotonic() + timeout, "", 0
        while proc.poll() is None:
            memory = _status_kb(proc.pid)
            peak_kb = max(peak_kb, memory.get("VmHWM", 0))
            if not killed and time.monotonic() > deadline:
                killed = f"timeout after {timeout:g} s"
            elif not killed and memory.get("VmRSS", 0) > watchdog_mb * 1024:
                killed = f"RSS over {watchdog_mb} MB"
            if killed:
                proc.kill()
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        m = Measured(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                     peak_kb // 1024, killed)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    print(f"measured {test}: exit {m.rc}, peak RSS {m.peak_mb} MB {killed}".rstrip())  # pytest -s shows it
    return m


def _status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a running process in kB ({} once it has exited)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS:", "VmHWM:"))}


# ---------------------------------------------------------------- trainings: DeepSpeed launches (2 CPU ranks over gloo) and their session cache

DEEPSPEED = shutil.which("deepspeed")

needs_launcher = pytest.mark.skipif(DEEPSPEED is None, reason="the deepspeed launcher is not on PATH")

MAX_STEPS = 8

# Every run of the suite shares these, so any two runs are comparable step by step.
COMMON_SETS = [
    f"train.max_steps={MAX_STEPS}",
    "train.checkpoint_every=2",
    "train.keep_last=2",
    "train.log_every=1",
    "train.micro_batch_size=8",
    "eval.every=4",
    "eval.max_samples=16",
    "eval.max_time_share=1.0",
]

_lock = threading.Lock()

_cache: dict[str, object] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_up_deepspeed() -> None:
    """Build DeepSpeed's shm comm op once (~90 s the very first time, cached in ~/.cache/torch_extensions)."""
    with _lock:
        if "warm" in _cache:
            return
        # (importlib: `import deepspeed.comm.torch as t` would bind the torch package re-exported there)
        code = "import importlib; importlib.import_module('deepspeed.comm.torch').build_shm_op()"
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _cache["warm"] = True


def tiny_data(base: Path) -> Path:
    """Small demo corpus (train + heldout shards + sentencepiece tokenizer), made once per session."""
    with _lock:
        if "data" not in _cache:
            from unimodal_free.data.demo.build import ensure_demo_data

            _cache["data"] = Path(ensure_demo_data(base / "demo", n_train=48, n_heldout=16))
        return _cache["data"]  # type: ignore[return-value]

SPEECH_EVERY = 8  # the unbalanced corpus keeps the speech of one training sample in 8


def unbalanced_data(base: Path) -> Path:
    """The tiny demo corpus with speech dropped from all but every SPEECH_EVERY-th training sample.

    A real corpus where few captioned pictures also have a recording: at 8 rows per micro batch a rank
    often holds no speech row while the other does. Same held-out split and tokenizer. Made once.
    """
    from unimodal_free.config import DataConfig
    from unimodal_free.data.loading.sources import expand_shards
    from unimodal_free.data.reading.handlers import SkipCounter
    from unimodal_free.data.reading.samples import read_shard
    from unimodal_free.data.writing.shard_writer import ShardSink
    from unimodal_free.modalities import MODALITY

    data = tiny_data(base)
    with _lock:
        if "unbalanced" not in _cache:
            out = base / "unbalanced"
            counter = SkipCounter("unbalanced corpus")
            with ShardSink(out, maxcount=12) as sink:
                samples = (s for url in expand_shards(str(data / "train")) for s in read_shard(url, counter, DataConfig()))
                for i, sample in enumerate(samples):
                    drop = {"__url__"} | (set() if i % SPEECH_EVERY == 0 else set(MODALITY["speech"].extensions))
                    sink.write({k: v for k, v in sample.items() if k not in drop})
            assert counter.count == 0
            _cache["unbalanced"] = out
        return _cache["unbalanced"]  # type: ignore[return-value]


def train_cmd(data: Path, run_dir: Path, stage: int, *extra: str, launcher: bool = True) -> list[str]:
    sets = COMMON_SETS + [
        f"deepspeed.zero_stage={stage}",
        f"train.output_dir={run_dir}",
        f"data.train={data / 'train'}",
        f"data.heldout={data / 'heldout'}",
        f"data.tokenizer={data / 'tokenizer.model'}",
        *extra,
    ]
    args = ["launch/train.py", "--config", "configs/tiny.json"] + [a for s in sets for a in ("--set", s)]
    if not launcher:
        return [sys.executable] + args
    return [DEEPSPEED, "--num_gpus", "2", "--master_port", str(free_port())] + args


def node_cmds(cmd: list[str], hostfile: Path, nodes: int = 2) -> list[list[str]]:
    """A one-node launch (:func:`train_cmd`) as ``nodes`` launchers of one rank each on this machine: DeepSpeed's
    launcher with a hostfile of ``nodes`` one-slot hosts and ``--no_ssh --node_rank i`` (no ssh: each launcher
    starts its own node's rank, as one launcher per node under a scheduler would)."""
    hostfile.write_text("".join(f"node{i} slots=1\n" for i in range(nodes)))
    i = cmd.index("launch/train.py")
    port = cmd[cmd.index("--master_port") + 1]
    return [[DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(r), "--master_addr", "127.0.0.1",
             "--master_port", port] + cmd[i:] for r in range(nodes)]


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a training in its own session (so a test can kill the whole process group)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    out = open(log, "ab")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:]


def leftover_shm(cmd: list[str]) -> list[str]:
    """DeepSpeed's CPU shm segments of this launch still in /dev/shm (tmpfs: RAM that a suite of launches
    would otherwise fill until the machine runs out of memory)."""
    if "--master_port" not in cmd:
        return []
    port = cmd[cmd.index("--master_port") + 1]
    return [p.name for p in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*")]


def run(cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 600) -> int:
    proc = start(cmd, log, env)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"training timed out:\n{tail(log)}")
    assert not leftover_shm(cmd), leftover_shm(cmd)
    return rc


def run_until_file(cmd: list[str], log: Path, marker: Path, env: dict[str, str] | None = None,
                   timeout: float = 600) -> None:
    """Start a run that pauses at a test callback (train_callbacks.PauseAt), wait until its marker file
    appears, then SIGKILL everything."""
    proc = start(cmd, log, env)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"run ended (rc={proc.returncode}) before {marker.name}:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {marker.name} within {timeout}s:\n{tail(log)}")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not leftover_shm(cmd), leftover_shm(cmd)  # not even after SIGKILL


def stage_run(stage: int, base: Path, corpus: str = "balanced") -> Path:
    """The session's uninterrupted 8-step 2-rank run under ZeRO ``stage`` (made once per corpus).

    ``corpus``: "balanced" (the demo: every sample has all three modalities) or "unbalanced"
    (:func:`unbalanced_data`: the ranks' batches hold different modalities).
    """
    key = f"stage{stage}" if corpus == "balanced" else f"stage{stage}-{corpus}"
    with _lock:
        if key in _cache:
            return _cache[key]  # type: ignore[return-value]
    warm_up_deepspeed()
    data = tiny_data(base)
    name = key.replace("stage", "zero")
    run_dir = base / name
    log = base / f"{name}.log"
    t0 = time.perf_counter()
    # A kept checkpoint after every step (the EMA relation is checked step by step); ZeRO-3 evaluates
    # the student (a consolidated copy: its partitioned forward needs every rank).
    # ZeRO-3 also gathers the student for the EMA in many small chunks (~4k elements), not at once.
    zero3 = ["eval.model=student", "deepspeed.ema_gather_numel=4096"] if stage == 3 else []
    extra = ["train.checkpoint_every=1", f"train.keep_last={MAX_STEPS}"] + zero3
    if corpus == "unbalanced":
        extra.append(f"data.train={unbalanced_data(base)}")
    rc = run(train_cmd(data, run_dir, stage, *extra), log)
    assert rc == 0, tail(log)
    print(f"ZeRO-{stage} run: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    with _lock:
        _cache[key] = run_dir
    return run_dir


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of a scalar as TensorBoard shows it (EventAccumulator, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def run_trainer(tmp_path: Path, monkeypatch, *sets: str, observe=None) -> int:
    """One rank of launch/train.py in this process; ``observe(trainer)`` runs after the setup (engine built)."""
    from unimodal_free.train import trainer as trainer_mod
    from unimodal_free.train.callbacks import TrainerCallback
    from unimodal_free.train.cli import build_parser, prepare

    warm_up_deepspeed()
    data = tiny_data(tmp_path_base(tmp_path))
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    import deepspeed.utils.groups

    # DeepSpeed keeps its clone of the world group in a module global beyond destroy_process_group;
    # a second run in the same process must not find the first run's (launches are one run per process).
    monkeypatch.setattr(deepspeed.utils.groups, "_WORLD_GROUP", None)
    threads = torch.get_num_threads()
    args = ["--config", "configs/tiny.json"]
    for s in ["train.micro_batch_size=8", "eval.every=0", "train.checkpoint_every=1000",
              f"train.output_dir={tmp_path / 'run'}", f"data.train={data / 'train'}",
              f"data.heldout={data / 'heldout'}", f"data.tokenizer={data / 'tokenizer.model'}", *sets]:
        args += ["--set", s]

    class Observe(TrainerCallback):
        def on_setup_end(self, trainer):
            if observe is not None:
                observe(trainer)

    try:
        return trainer_mod.Trainer(prepare(build_parser().parse_args(args)), [Observe()]).run()
    finally:
        torch.set_num_threads(threads)


def tmp_path_base(tmp_path: Path) -> Path:
    base = tmp_path.parent.parent / "train_runs"  # the session's shared demo data (see tiny_data)
    base.mkdir(parents=True, exist_ok=True)
    return base


LABELLED_COLOURS = {"red": (220, 30, 30), "blue": (35, 70, 225)}
LABELLED_SHAPES = ("circle", "square", "triangle")


def write_labelled_shards(root: Path, n: int, seed: int) -> str:
    """Image + caption samples with json labels (colour by fill, shape by name only: 2 colours x 3 shapes)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(root / "shard-000000.tar")) as w:
        for i in range(n):
            colour, shape = list(LABELLED_COLOURS)[i % 2], LABELLED_SHAPES[(i // 2) % 3]
            img = np.full((32, 32, 3), 90, np.uint8) + rng.integers(0, 20, (32, 32, 3), dtype=np.uint8)
            img[8:24, 8:24] = LABELLED_COLOURS[colour]
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            key = f"s{seed}-{i:04d}"
            w.write({"__key__": key, "png": buf.getvalue(), "txt": f"a {colour} {shape}".encode(),
                     "json": json.dumps({"pair": key, "labels": {"colour": colour, "shape": shape}}).encode()})
    return str(root)
