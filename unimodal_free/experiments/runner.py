"""Train an arm (one launch of launch/train.py), reuse it when it already finished, evaluate it in-process.

An arm is a name plus ``--set`` overrides on a base config. Its run folder is
``<root>/<name>`` (``<root>/<name>@<overrides>`` with experiment-wide ``--set``
overrides, e.g. a shorter budget); the command that made it is stored there as
``arm.json``, so a second experiment that needs the same arm reuses the run,
and a folder made by a different command is refused instead of overwritten.
One process trains a folder at a time (a lock file beside it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from unimodal_free.config import DataConfig, Source
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.data.loading.sources import resolve_sources
from unimodal_free.eval.evaluate import evaluate
from unimodal_free.store.rebuild import load_model, resolve_tokenizer
from unimodal_free.store.weights import load_weights

REPO = Path(__file__).resolve().parents[2]
ARM_FILE = "arm.json"
EXPORT_FILE = "model.safetensors"
TIMING_FILE = "trained.json"  # wall time of the training, written when it finished (not part of the recipe)


class ExperimentError(RuntimeError):
    """An arm could not be trained or reused; the message is one line naming the run folder."""


@dataclass(frozen=True)
class Arm:
    name: str  # the run folder under the experiments root; equal names must mean equal commands
    overrides: tuple[str, ...] = ()  # ``key=value`` for ``--set``, applied after the experiment-wide ones
    label: str = ""  # how the table names it (default: name)

    def title(self) -> str:
        return self.label or self.name


def train_command(config: str, overrides: list[str], run_dir: Path, ranks: int) -> list[str]:
    """The launch: DeepSpeed's launcher for several ranks (GPUs, or gloo CPU ranks), one process otherwise."""
    sets = [a for kv in [*overrides, f"train.output_dir={run_dir}"] for a in ("--set", kv)]
    script = [str(REPO / "launch" / "train.py"), "--config", config, *sets]
    if ranks <= 1:
        return [sys.executable, *script]
    launcher = shutil.which("deepspeed")
    if launcher is None:
        raise ExperimentError("the deepspeed launcher is not on PATH (activate the environment launch/setup.sh made)")
    # A free rendezvous port: the launcher's default (29500) is taken by any other training on this host.
    return [launcher, "--num_gpus", str(ranks), "--master_port", str(free_port()), *script]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_dir_of(root: Path, arm: Arm, common: tuple[str, ...] = ()) -> Path:
    """``<root>/<name>``, or ``<root>/<name>@<common overrides>`` with experiment-wide overrides
    (e.g. a shorter budget), so such a run never collides with the default one."""
    name = arm.name
    if common:
        tag = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", ",".join(common))
        if len(tag) > 60:
            tag = tag[:40] + "-" + hashlib.sha1(",".join(common).encode()).hexdigest()[:12]
        name = f"{name}@{tag}"
    return (root / name).resolve()


def arm_recipe(config: str, overrides: list[str], ranks: int) -> dict:
    """What ``arm.json`` holds: the command that makes a run folder (equal recipes = reusable run)."""
    return {"config": config, "overrides": list(overrides), "ranks": ranks}


@contextlib.contextmanager
def _exclusive(run_dir: Path, log: Callable[[str], None]) -> Iterator[None]:
    """One process at a time per run folder: a second experiment needing an arm that is being
    trained waits for it and then reuses it, instead of launching into the same folder."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.with_name(f".{run_dir.name}.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{run_dir.name}: another process is training it; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # the lock goes with the file's close


def train_arm(arm: Arm, root: Path, config: str, ranks: int, common: tuple[str, ...] = (),
              log: Callable[[str], None] = print) -> Path:
    """The run folder of ``arm``, trained now unless a finished run of the same command is there."""
    run_dir = run_dir_of(root, arm, common)
    overrides = [*common, *arm.overrides]
    with _exclusive(run_dir, log):
        return _train_or_reuse(arm, run_dir, config, overrides, ranks, log)


def _train_or_reuse(arm: Arm, run_dir: Path, config: str, overrides: list[str], ranks: int,
                    log: Callable[[str], None]) -> Path:
    recipe = arm_recipe(config, overrides, ranks)
    stamp = run_dir / ARM_FILE
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        if made != recipe:
            raise ExperimentError(f"{run_dir}: made by another command ({made}); remove it or pick another --root")
        if (run_dir / EXPORT_FILE).is_file():
            log(f"{arm.name}: reusing {run_dir}")
            return run_dir
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ExperimentError(f"{run_dir}: exists but was not made by an experiment; remove it or pick another --root")
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(recipe, indent=1))
    cmd = train_command(config, overrides, run_dir, ranks)
    log(f"{arm.name}: training ({' '.join(cmd)})")
    start = time.monotonic()
    with open(run_dir / "train.log", "w") as out:
        rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not (run_dir / EXPORT_FILE).is_file():
        raise ExperimentError(f"{arm.name}: training exited {rc}; see {run_dir / 'train.log'}")
    wall_s = time.monotonic() - start
    (run_dir / TIMING_FILE).write_text(json.dumps({"wall_s": round(wall_s, 1), "ranks": ranks}, indent=1))
    log(f"{arm.name}: trained in {wall_s:.0f} s")
    return run_dir


def train_seconds(run_dir: Path) -> Optional[float]:
    """Wall time of the launch that trained ``run_dir``; None while it is unfinished.

    A run trained before ``trained.json`` was written: from its arm.json (written just before the
    launch) to its export (written last).
    """
    run_dir = Path(run_dir)
    stamp = run_dir / TIMING_FILE
    if stamp.is_file():
        return json.loads(stamp.read_text())["wall_s"]
    if (run_dir / EXPORT_FILE).is_file() and (run_dir / ARM_FILE).is_file():
        return (run_dir / EXPORT_FILE).stat().st_mtime - (run_dir / ARM_FILE).stat().st_mtime
    return None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_trained(run_dir: Path, which: str = "teacher", device: Optional[torch.device] = None):
    """(model, config, tokenizer) of a finished run, read from its safetensors export as eval does."""
    weights = load_weights(run_dir / EXPORT_FILE)
    cfg = weights.cfg
    tokenizer = resolve_tokenizer(weights.tokenizer_ref, None, str(run_dir), cfg.data.demo_dir)
    model = load_model(weights, which, tokenizer.vocab_size, str(run_dir)).to(device or default_device())
    return model, cfg, tokenizer


def heldout_sources(data_cfg: DataConfig, heldout: Optional[list[str]] = None):
    """The held-out shards to evaluate on: the given paths, else the run's own held-out split (demo by default)."""
    if heldout:
        return [Source(path=p) for p in heldout]
    return resolve_sources(data_cfg).heldout


def evaluate_arm(run_dir: Path, heldout: Optional[list[str]] = None, which: str = "teacher",
                 device: Optional[torch.device] = None) -> dict[str, dict]:
    """Retrieval per direction (``{a}_to_{b}`` -> metrics) of a finished run on the held-out shards.

    Kept in ``<run_dir>/experiment-eval-<which>.json`` with the export's size and mtime and the
    held-out paths, so tables are rebuilt without re-evaluating, and a retrained run is evaluated again.
    """
    export = (Path(run_dir) / EXPORT_FILE).stat()
    key = {"export": [export.st_size, export.st_mtime_ns], "heldout": heldout, "which": which}
    cache = Path(run_dir) / f"experiment-eval-{which}.json"
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("key") == key:
            return kept["results"]
    device = device or default_device()
    model, cfg, tokenizer = load_trained(run_dir, which, device)
    loader = make_eval_loader(cfg.data, heldout_sources(cfg.data, heldout), tokenizer, cfg.train.micro_batch_size)
    out = evaluate(model, loader, cfg.eval, cfg.data, tokenizer, device, cfg.eval.max_samples, which)
    cache.write_text(json.dumps({"key": key, "results": out.results}, indent=1, sort_keys=True))
    return out.results


@dataclass
class ArmResult:
    arm: Arm
    run_dir: Path
    results: dict  # evaluate_arm's retrieval per direction (read it through experiments.results)
    wall_s: Optional[float]  # training wall time (None: trained before timing was recorded)


def train_and_evaluate(ctx, arms: list[Arm]) -> list[ArmResult]:
    """Train (or reuse) each arm of an experiment, one after the other, and evaluate it on the held-out shards."""
    out = []
    for arm in arms:
        run_dir = train_arm(arm, ctx.root, ctx.config, ctx.ranks, ctx.common, ctx.log)
        ctx.log(f"{arm.name}: evaluating")
        out.append(ArmResult(arm, run_dir, evaluate_arm(run_dir, ctx.heldout), train_seconds(run_dir)))
    return out
