"""Retrieval eval every ``eval.every`` steps, within ``eval.max_time_share`` of the wall time.

Rank 0 evaluates alone (the teacher is replicated; a ZeRO-3 student is first
gathered into a copy); the training RNG streams are saved and restored around
it so a run with evals resumes and trains exactly as one without.
"""

from __future__ import annotations

import copy
import time
from typing import Optional

import torch

from unimodal_free.config import DataConfig, EvalConfig, TrainConfig
from unimodal_free.data.loading.loader import make_eval_loader
from unimodal_free.eval import evaluate
from unimodal_free.model import EMATeacher
from unimodal_free.train import dist
from unimodal_free.train.ds_compat import load_into
from unimodal_free.train.rng import capture_rng, restore_rng
from unimodal_free.train.state import TrainerState
from unimodal_free.train.tblog import RunLogger
from unimodal_free.train.zero_gather import gathered_state_dict


class PeriodicEval:
    def __init__(self, eval_cfg: EvalConfig, data_cfg: DataConfig, train_cfg: TrainConfig, engine,
                 teacher: EMATeacher, heldout_sources: list, tokenizer, device: torch.device, logger: RunLogger,
                 rank: int):
        self.eval_cfg = eval_cfg
        self.data_cfg = data_cfg
        self.batch_size = train_cfg.micro_batch_size
        self.final_step = train_cfg.max_steps  # the projector entry is written for the final model only
        self.engine = engine
        self.teacher = teacher
        self.heldout_sources = heldout_sources
        self.tokenizer = tokenizer
        self.device = device
        self.logger = logger
        self.rank = rank
        self.zero3 = engine.zero_optimization_stage() == 3
        self.last_eval_s = 0.0  # the last eval's wall time: the estimate of the next one's
        self.last_eval: tuple[Optional[int], dict] = (None, {})  # (step, results): the model card's table
        self.evals_skipped = 0

    def maybe_run(self, state: TrainerState) -> None:
        """Evaluate if ``state.step`` is an eval step and the time budget allows it (rank 0 decides); collective."""
        ecfg = self.eval_cfg
        if ecfg.every <= 0 or state.step % ecfg.every:
            return
        run = False
        if self.rank == 0:
            est = self.last_eval_s
            share = (state.eval_time_s + est) / max(1e-9, state.train_time_s + state.eval_time_s + est)
            run = share <= ecfg.max_time_share
            if not run:
                self.evals_skipped += 1
                self.logger.message(
                    f"step {state.step}: eval skipped, it would take {share:.0%} of wall time "
                    f"> eval.max_time_share={ecfg.max_time_share}"
                )
                self.logger.scalars({"val/skipped_evals": self.evals_skipped}, state.step)
        (run,) = dist.any_flags([run])  # rank 0 decides
        if not run:
            return
        t0 = time.perf_counter()
        model = self._model_to_evaluate()
        if self.rank == 0:
            self._evaluate(model, state.step)
        dist.barrier()
        dt = dist.max_scalar(time.perf_counter() - t0)
        state.eval_time_s += dt
        self.last_eval_s = dt

    def _model_to_evaluate(self) -> Optional[torch.nn.Module]:
        """The module rank 0 evaluates (None on other ranks under ZeRO-3); collective under ZeRO-3."""
        if self.eval_cfg.model == "teacher":
            return self.teacher.module  # replicated: rank 0 alone
        if not self.zero3:
            return self.engine.module
        # ZeRO-3 modules fetch parameters with collectives inside every forward, so rank 0
        # cannot run them alone: evaluate a consolidated copy instead (collective gather).
        student = gathered_state_dict(self.engine.module, True, self.rank)
        model = None
        if self.rank == 0:
            model = copy.deepcopy(self.teacher.module)
            load_into(model, student)
        return model

    def _evaluate(self, model: torch.nn.Module, step: int) -> None:
        ecfg = self.eval_cfg
        rng = capture_rng()  # eval must not shift the training RNG streams (exact resume)
        try:
            # In the evaluated weights' dtype: the fp32 teacher, or the student as trained (docs/DESIGN.md "Precision").
            out = evaluate(
                model,
                make_eval_loader(self.data_cfg, self.heldout_sources, self.tokenizer, self.batch_size),
                ecfg,
                self.data_cfg,
                self.tokenizer,
                self.device,
                max_samples=ecfg.max_samples,
                model_name=ecfg.model,
                writer=self.logger.writer,
                step=step,
                # Heatmaps every eval; the (large) projector entry only for the final model.
                projector=step == self.final_step,
            )
        finally:
            restore_rng(rng)
        scalars = {f"val/{k}": float(v) for k, v in out.items()}
        scalars["val/seconds"] = out.seconds
        scalars["val/label_seconds"] = out.label_seconds
        self.logger.scalars(scalars, step)
        self.last_eval = (step, out.results)  # the model card's retrieval table
        r1 = {k: round(v, 3) for k, v in out.items() if k.endswith("R@1")}
        self.logger.message(f"step {step}: eval ({out.seconds:.1f}s) {r1}")
