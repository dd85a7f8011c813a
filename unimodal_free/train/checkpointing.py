"""The trainer's side of checkpoints and exports: restore or start, save at a step, export at the end.

The files and their write order are :mod:`unimodal_free.store.checkpoints`' (the format) and
:mod:`unimodal_free.train.checkpoint_manager`'s (the engine's state); this module decides what goes into them from the running trainer (engine,
EMA teacher, counters, per-rank RNG and data position).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from unimodal_free.config import Config, as_data, config_json, config_to_dict
from unimodal_free.run_dir import RunDir
from unimodal_free.model import EMATeacher
from unimodal_free.train import dist
from unimodal_free.store.checkpoints import CheckpointError
from unimodal_free.store.export import EXPORT_NAME, save_export
from unimodal_free.store.model_folder import CONFIG_NAME, MODEL_DIR
from unimodal_free.train.checkpoint_manager import CheckpointManager
from unimodal_free.train.ds_compat import load_into, model_shapes
from unimodal_free.train.zero_gather import gathered_state_dict
from unimodal_free.train.metrics import IntervalStats
from unimodal_free.train.model_folder import TrainingSummary, write_model_folder
from unimodal_free.train.reshard import resharded_start_batch
from unimodal_free.train.rng import capture_rng, rank_seeds, restore_rng, seed_everything
from unimodal_free.train.run_setup import RunSetup
from unimodal_free.train.state import TrainerState
from unimodal_free.train.tblog import RunLogger


def restore_or_start(setup: RunSetup, manager: CheckpointManager, engine, teacher: EMATeacher,
                     generator: torch.Generator, rank: int, world: int) -> tuple[TrainerState, list[str]]:
    """The run's state: fresh, or restored from ``setup.resume_dir`` (engine, teacher, RNG); collective.

    Returns the state and the lines for log.txt (what was resumed, which config keys changed).
    """
    cfg = setup.cfg
    state = TrainerState(world_size=world, tokenizer=setup.tokenizer.reference, config=config_to_dict(cfg))
    notes: list[str] = []
    if setup.resume_dir is not None:
        state, teacher_sd, rank_state = manager.load(engine, setup.resume_dir, setup.trust_checkpoint,
                                                     setup.universal, setup.resharded)
        load_into(teacher.module, teacher_sd)
        if setup.resharded:  # docs/INSTALL.md "Resume on another number of ranks": per-rank streams restart, reseeded
            start = resharded_start_batch(state.micro_batches, cfg.data.num_workers)
            notes.append(f"the checkpoint was written by {state.world_size} ranks, this run has {world}: "
                         f"weights, optimizer, teacher and step carried over; RNG reseeded from (seed, rank, step), "
                         f"data streams restart at batch {start} (the next fresh segment) instead of "
                         f"{state.micro_batches}")
            everything_seed, mask_seed = rank_seeds(cfg.train.seed, rank, state.step)
            seed_everything(everything_seed)
            generator.manual_seed(mask_seed)
            state.micro_batches, state.world_size = start, world
        else:
            restore_rng(rank_state["rng"], generator)
            if rank_state["micro_batches"] != state.micro_batches:
                raise CheckpointError(f"{setup.resume_dir}: rank {rank} data position disagrees with rank 0")
        changes = config_changes(state.config, cfg)
        state.config = config_to_dict(cfg)
        notes.insert(0, f"resuming from {setup.resume_dir} at step {state.step}")
        notes += [f"  config changed since the checkpoint: {line}" for line in changes]
        if rank == 0:
            manager.remove_incomplete_after(state.step)
    if rank == 0:
        RunDir(setup.run_dir).write_atomic(setup.run_dir / CONFIG_NAME, config_json(cfg))
    dist.barrier()
    return state, notes


class Checkpointing:
    """Saves checkpoints during the run and the export + model folder at its end (collective calls)."""

    def __init__(self, manager: CheckpointManager, engine, teacher: EMATeacher, lifted: set[str],
                 generator: torch.Generator, stats: IntervalStats, logger: RunLogger, run_dir: Path,
                 tokenizer, rank: int, last_saved_step: int):
        self.manager = manager
        self.engine = engine
        self.teacher = teacher
        self.lifted = lifted  # 0-dim parameters the engine trains as (1,) (ds_compat)
        self.generator = generator
        self.stats = stats
        self.logger = logger
        self.run_dir = run_dir
        self.tokenizer = tokenizer
        self.rank = rank
        self.zero3 = engine.zero_optimization_stage() == 3
        self.last_saved_step = last_saved_step  # -1: none yet in this run dir's session

    def save(self, state: TrainerState) -> None:
        """Checkpoint at ``state.step`` unless this step is saved already."""
        if self.last_saved_step == state.step:
            return
        self.stats.flush_counts(state)  # samples_seen / skipped_samples: global totals up to this step
        rank_state = {"rng": capture_rng(self.generator), "micro_batches": state.micro_batches}
        self.logger.flush()  # events up to this step are on disk before the checkpoint can be resumed
        self.manager.save(self.engine, self.teacher_state(), state, rank_state)
        self.last_saved_step = state.step

    def teacher_state(self) -> dict[str, torch.Tensor]:
        return model_shapes(self.teacher.module.state_dict(), self.lifted)

    def export(self, state: TrainerState, cfg: Config, summary: TrainingSummary) -> None:
        """``model.safetensors`` (student + teacher) and the model folder (teacher) of the final weights."""
        student = model_shapes(gathered_state_dict(self.engine.module, self.zero3, self.rank), self.lifted)
        if self.rank == 0:
            teacher = self.teacher_state()
            path = save_export(self.run_dir / EXPORT_NAME, student, teacher, state.config, self.tokenizer.reference,
                               state.step, root=self.run_dir)
            self.logger.message(f"exported {path}")
            folder = write_model_folder(self.run_dir / MODEL_DIR, teacher, cfg, self.tokenizer, state.step, summary,
                                        root=self.run_dir)
            self.logger.message(f"model folder {folder} (unimodal_free.load({str(folder)!r}))")
        dist.barrier()


def training_summary(state: TrainerState, last_log: dict[str, float], last_eval: tuple[Optional[int], dict],
                     world: int) -> TrainingSummary:
    """The model card's facts about this run."""
    eval_step, results = last_eval
    return TrainingSummary(
        samples_seen=state.samples_seen, rows=dict(state.rows_seen), skipped_samples=state.skipped_samples,
        final_loss=last_log.get("train/loss"), world_size=world, train_time_s=state.train_time_s,
        eval_step=eval_step, eval_results=results,
    )


def config_changes(old: dict, new: Config) -> list[str]:
    """Dotted keys whose value differs between a checkpoint's config and this run's.

    Values are written as JSON with every non-ASCII and control character escaped: the old ones come from a
    checkpoint's file, which may be anyone's, and end up in log.txt and on the terminal."""
    out = []
    new_d = config_to_dict(new)
    for section, values in new_d.items():
        for key, value in values.items():
            before = (old.get(section) or {}).get(key, value)
            if before != value and f"{section}.{key}" != "train.resume":
                out.append(f"{section}.{key}: {as_data(before)} -> {as_data(value)}")
    return out
