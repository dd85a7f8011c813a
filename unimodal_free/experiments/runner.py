"""Train an arm (one launch of launch/train.py), reuse it when it already finished, evaluate it in-process.

An arm is a name plus ``--set`` overrides on a base config. Its run folder is
``<root>/<name>``; the command that made it is stored there as ``arm.json``,
so a second experiment that needs the same arm reuses the run, and a folder
made by a different command is refused instead of overwritten.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

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
    return [launcher, "--num_gpus", str(ranks), *script]


def train_arm(arm: Arm, root: Path, config: str, ranks: int, common: tuple[str, ...] = (),
              log: Callable[[str], None] = print) -> Path:
    """The run folder of ``arm``, trained now unless a finished run of the same command is there."""
    run_dir = (root / arm.name).resolve()
    overrides = [*common, *arm.overrides]
    recipe = {"config": config, "overrides": overrides, "ranks": ranks}
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
    """Wall time of the launch that trained ``run_dir`` (None for a run trained before timing was recorded)."""
    stamp = Path(run_dir) / TIMING_FILE
    return json.loads(stamp.read_text())["wall_s"] if stamp.is_file() else None


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_trained(run_dir: Path, which: str = "teacher", device: Optional[torch.device] = None):
    """(model, config, tokenizer) of a finished run, read from its safetensors export as eval does."""
    from unimodal_free.eval.cli import load_model, resolve_tokenizer
    from unimodal_free.train.export import load_weights

    weights = load_weights(run_dir / EXPORT_FILE)
    cfg = weights.cfg
    tokenizer = resolve_tokenizer(weights.tokenizer_ref, None, str(run_dir), cfg.data.demo_dir)
    model = load_model(weights, which, tokenizer.vocab_size, str(run_dir)).to(device or default_device())
    return model, cfg, tokenizer


def heldout_sources(cfg, heldout: Optional[list[str]] = None):
    """The held-out shards to evaluate on: the given paths, else the run's own held-out split (demo by default)."""
    from unimodal_free.config import Source
    from unimodal_free.data.reader import resolve_sources

    if heldout:
        return [Source(path=p) for p in heldout]
    return resolve_sources(cfg.data)[1]


def evaluate_arm(run_dir: Path, heldout: Optional[list[str]] = None, which: str = "teacher",
                 device: Optional[torch.device] = None) -> dict[str, dict]:
    """Retrieval per direction (``{a}_to_{b}`` -> metrics) of a finished run on the held-out shards."""
    from unimodal_free.eval.evaluate import evaluate

    device = device or default_device()
    model, cfg, tokenizer = load_trained(run_dir, which, device)
    out = evaluate(model, cfg, heldout_sources(cfg, heldout), tokenizer, device, cfg.eval.max_samples, which)
    return out.results
