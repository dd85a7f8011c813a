"""Command line -> validated run setup -> the run (:func:`main`); the setup before any process group starts.

Every user error found here (config, data sources, tokenizer, resume target)
ends the process with exit code 2 and exactly one line on stderr, on every
rank, before ``deepspeed.init_distributed``; so a typo never leaves ranks
hanging in a collective.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from unimodal_free.config import Config, ConfigError, check_budget, config_to_dict, fixed_on_resume, load_config
from unimodal_free.run_dir import RunDirError, preflight
from unimodal_free.train import ds_noise
from unimodal_free.train.run_setup import EXIT_OK, RunSetup, SetupError
from unimodal_free.usage import ArgumentParser, report_usage_error

if TYPE_CHECKING:
    from unimodal_free.train.callbacks import TrainerCallback


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="launch/train.py",
        description="Train the joint image/speech/text model (run it with `deepspeed launch/train.py ...`).",
    )
    p.add_argument("--config", default=None, help="JSON config file (defaults: unimodal_free/config/sections.py)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), value parsed as JSON if it can be, e.g. "
        "--set train.max_steps=100 --set data.train=/shards/train "
        "--set 'data.train=[{\"path\": \"a/{000..009}.tar\", \"weight\": 2}, \"b/*.tar\"]'",
    )
    p.add_argument("--resume", default=None, help="shorthand for --set train.resume=PATH ('auto' = latest good)")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="resume from a checkpoint not signed with your key even if DeepSpeed's files need full unpickling "
        "(runs code from them: only for checkpoints whose origin you trust; see docs/RUNS.md 'What is safe to load')",
    )
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults, --config, --set, --resume) as JSON and exit")
    # Set by the deepspeed launcher; the rank is read from the environment.
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def load_run_config(args: argparse.Namespace) -> Config:
    overrides = list(args.overrides)
    if args.resume is not None:
        overrides.append(f"train.resume={json.dumps(args.resume)}")
    return load_config(args.config, overrides)


def print_config(args: argparse.Namespace) -> int:
    """``--print-config``: the config this command line would train with, as JSON on stdout; starts nothing."""
    print(json.dumps(config_to_dict(load_run_config(args)), indent=2, sort_keys=True))
    return EXIT_OK


def prepare(args: argparse.Namespace) -> RunSetup:
    """Config, DeepSpeed dict, data sources, tokenizer and resume target; raises one-line errors."""
    # Imported here, not at the top: build_parser (this module) answers a bad flag before torch loads.
    from unimodal_free.data.demo.scenes import DemoDataError
    from unimodal_free.data.loading.sources import resolve_sources
    from unimodal_free.data.reading.tokenizer import check_tokenizer_compatible, load_tokenizer
    from unimodal_free.store.checkpoints import announce, resolve_resume
    from unimodal_free.train.checkpoint_manager import CheckpointManager
    from unimodal_free.train.ds_config import build_ds_config
    from unimodal_free.train.model_card import demo_heldout_for_own_data
    from unimodal_free.train.reshard import needs_universal

    cfg = load_run_config(args)
    ds_noise.configure(cfg.log.deepspeed_verbose)  # before anything imports deepspeed
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, world_size)  # refuses contradicting deepspeed.extra keys now
    if cfg.train.precision == "bf16":
        from deepspeed.accelerator import get_accelerator

        if not get_accelerator().is_bf16_supported():
            raise ConfigError(f"train.precision: bf16 is not supported on {get_accelerator().device_name()}; use fp32")
    run_dir = Path(cfg.train.output_dir).expanduser()
    preflight(run_dir)  # writable, no link inside: every later write into it goes through RunDir
    notes: list[str] = []

    def say(message: str) -> None:
        announce(message)
        notes.append(message)

    resume_dir = resolve_resume(cfg.train.resume, run_dir, args.trust_checkpoint, say)
    state = CheckpointManager.read_state(resume_dir) if resume_dir is not None else None
    if state is not None:
        check_resume_config(state.config, cfg, resume_dir)
    try:
        sources = resolve_sources(cfg.data)
    except (ValueError, OSError, DemoDataError) as exc:
        raise SetupError(f"data: {exc}") from None
    if demo_heldout_for_own_data(cfg):
        say(f"warning: data.heldout is unset: the periodic eval and the model card measure retrieval on the demo's "
            f"held-out split ({sources.heldout[0].path}), not on your data; set data.heldout to your held-out shards "
            f"(python -m unimodal_free.data.rewriting.split makes them)")
    try:
        tokenizer = load_tokenizer(sources.tokenizer_spec(cfg.data))
    except (ValueError, OSError, RuntimeError) as exc:
        raise SetupError(f"data.tokenizer: {cfg.data.tokenizer!r}: {exc}") from None
    check_budget(cfg, tokenizer.vocab_size)  # the text embedding with the real vocabulary
    if state is not None:
        check_tokenizer_compatible(state.tokenizer, tokenizer.reference, f"resume from {resume_dir}")
    resharded = state is not None and state.world_size != world_size
    if resharded and cfg.deepspeed.zero_stage == 0 and cfg.train.precision == "bf16":
        raise SetupError(
            f"resume from {resume_dir}: it was written by {state.world_size} ranks, this run has {world_size}; "
            f"bf16 without ZeRO keeps DeepSpeed's bf16 optimizer state per rank (untested across rank counts): "
            f"resume with {state.world_size} ranks"
        )
    return RunSetup(cfg, run_dir, world_size, tokenizer, sources.train, sources.heldout, resume_dir,
                    args.trust_checkpoint, notes, args.config, resharded,
                    universal=resharded and needs_universal(cfg.deepspeed.zero_stage))


def check_resume_config(stored: dict, cfg: Config, resume_dir: Path) -> None:
    """Refuse, before anything is built, changed keys that the checkpoint's weights or data position
    depend on (``fixed`` in config/sections.py; without this a changed shape ends in a size-mismatch traceback)."""
    changed = fixed_on_resume(stored, cfg)
    if changed:
        raise SetupError(
            f"resume from {resume_dir}: these keys cannot change on resume: {'; '.join(changed)} "
            f"(set them back, or start a fresh run in another train.output_dir)"
        )


def main(argv: Optional[list[str]] = None, callbacks: Sequence[TrainerCallback] = ()) -> int:
    """Entry point of ``launch/train.py``; returns the process exit code. ``callbacks``: see callbacks.py."""
    args = build_parser().parse_args(argv)
    # Imported here, not at the top: build_parser (this module) answers a bad flag before torch loads.
    from unimodal_free.data.reading.tokenizer import TokenizerMismatchError
    from unimodal_free.store.checkpoints import CheckpointError
    from unimodal_free.train.dist import PortInUseError
    from unimodal_free.train.trainer import Trainer

    try:
        if args.print_config:
            return print_config(args)
        setup = prepare(args)
    except (ConfigError, SetupError, CheckpointError, TokenizerMismatchError, RunDirError) as exc:
        return report_usage_error(exc)
    try:
        return Trainer(setup, callbacks).run()
    except PortInUseError as exc:  # raised before the process group exists: nothing to close
        return report_usage_error(exc)
