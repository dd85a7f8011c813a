"""The training loop: DeepSpeed engine (student) + EMA teacher outside it + data2vec loss.

One optimizer step = ``train.grad_accum`` micro-batches. Inside a step the
host waits on the device only where the step's outcome is decided:
DeepSpeed's (or, without ZeRO in fp32, our optimizer's) non-finite check,
and one small all-reduce of the stop request after it. Metrics, row counts
and the collapse statistics stay device tensors / local counts until the log
interval, where one all-reduce and one host read turn them into TensorBoard
scalars.

A non-finite loss on any rank refuses the step on every rank by
construction: that rank multiplies its loss by NaN (on the device), its
gradients turn NaN, and the gradient all-reduce carries the NaN to every
rank, where DeepSpeed's overflow check (or our optimizer's check without
ZeRO) skips the step. The teacher follows only applied steps, and only
applied steps' metrics are logged.

Exit codes (see cli.py): 0 done or stopped by SIGTERM/SIGINT after a
checkpoint, 2 user error before start, 3 collapse guard, 4 too many
non-finite steps in a row (after a checkpoint).
"""

from __future__ import annotations

import copy
import os
import sys
import time
from typing import Any, Optional

import torch

from unimodal_free.batch import modality_specs
from unimodal_free.config import ConfigError, config_to_dict, save_config
from unimodal_free.provenance import provenance
from unimodal_free.train import dist, testhooks
from unimodal_free.train.ds_compat import load_into, model_shapes
from unimodal_free.train.checkpoint import CheckpointError, CheckpointManager, TrainerState
from unimodal_free.train.cli import (
    EXIT_COLLAPSE,
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_USAGE,
    RunSetup,
    SetupError,
    build_parser,
    config_changes,
    prepare,
    print_config,
)
from unimodal_free.train.export import EXPORT_NAME, gathered_state_dict, save_export
from unimodal_free.train.model_folder import MODEL_DIR, TrainingSummary, write_model_folder
from unimodal_free.train.mfu import measure_matmul_peak, mfu
from unimodal_free.train.rng import capture_rng, restore_rng, seed_everything
from unimodal_free.train.signals import StopRequest, StopWhileWaiting
from unimodal_free.train.tblog import RunLogger, config_markdown
from unimodal_free.train.textlog import StepClock, command_line, format_duration, format_fields, now_utc, progress_fields
from unimodal_free.usage import report_usage_error


class IntervalStats:
    """What the trainer accumulates between two log lines, without reading anything back.

    ``sums``/``counts``: metric sums (device tensors) and how many values each
    holds; ``moments``: the collapse guard's row moments (device tensors);
    ``local``: this rank's row/element/skip counts (host numbers from the
    loader, never a device read). :meth:`reduce` sums all of it over ranks in
    one all-reduce.
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, float] = {}
        self.moments: dict[str, torch.Tensor] = {}
        self.local: dict[str, float] = {}
        self.counted: dict[str, float] = {}  # global counts already summed this interval (at a checkpoint)
        self.seconds = 0.0

    def add(self, key: str, value: torch.Tensor | float) -> None:
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0.0) + 1

    def add_moments(self, key: str, value: torch.Tensor) -> None:
        self.moments[key] = self.moments[key] + value if key in self.moments else value.detach()

    def merge(self, other: "IntervalStats") -> None:
        """Add ``other``'s metric sums and moments (an applied step's) to these."""
        for key, value in other.sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0.0) + other.counts[key]
        for key, value in other.moments.items():
            self.add_moments(key, value)

    def count(self, key: str, value: float) -> None:
        self.local[key] = self.local.get(key, 0.0) + value

    def take_counts(self, summed: dict[str, float], state: TrainerState) -> None:
        """Global counts (``local`` summed over ranks) into the run state and this interval."""
        for k, v in summed.items():
            self.counted[k] = self.counted.get(k, 0.0) + v
        state.samples_seen += int(summed.get("rows", 0))
        for key, n in summed.items():
            if key.startswith("rows/"):
                state.rows_seen[key[5:]] = state.rows_seen.get(key[5:], 0) + int(n)
        state.skipped_samples += int(summed.get("skipped", 0))
        self.local = {}

    def flush_counts(self, state: TrainerState) -> None:
        """Sum pending counts over ranks now (a checkpoint must record global totals); collective."""
        summed = dist.sum_tensors(self.local)  # ranks may hold different keys (modalities absent here)
        keys = sorted(summed)
        host = torch.stack([summed[k] for k in keys]).tolist() if keys else []
        self.take_counts(dict(zip(keys, host)), state)

    def reduce(self, state: TrainerState) -> tuple[dict[str, float], ...]:
        """(metric means, collapse stds, rows behind them, global counts) over the interval and all ranks.

        One all-reduce of everything; stds are computed on the comm device
        and everything is read back in one transfer.
        """
        from unimodal_free.objective.collapse import std_from_moments

        summed = dist.sum_tensors({
            **{f"sum:{k}": v for k, v in self.sums.items()},
            **{f"count:{k}": v for k, v in self.counts.items()},
            **{f"moments:{k}": v for k, v in self.moments.items()},
            **{f"local:{k}": v for k, v in self.local.items()},
        })
        scalars = {k: v for k, v in summed.items() if not k.startswith("moments:")}
        for k, v in summed.items():
            if k.startswith("moments:"):  # "moments:target/image" -> "target_std/image"
                kind, modality = k[len("moments:"):].split("/")
                scalars[f"std:{kind}_std/{modality}"] = std_from_moments(v)
                scalars[f"std_rows:{kind}/{modality}"] = v[0]
        keys = sorted(scalars)
        host = dict(zip(keys, torch.stack([scalars[k].reshape(()) for k in keys]).tolist())) if keys else {}
        means = dist.means_of(host)
        stds = {k[4:]: v for k, v in host.items() if k.startswith("std:")}
        std_rows = {k[9:]: v for k, v in host.items() if k.startswith("std_rows:")}
        self.take_counts({k[6:]: v for k, v in host.items() if k.startswith("local:")}, state)
        return means, stds, std_rows, dict(self.counted)


class Trainer:
    def __init__(self, setup: RunSetup):
        self.setup = setup
        self.cfg = setup.cfg
        self.run_dir = setup.run_dir
        self.logger: Optional[RunLogger] = None
        self.state: Optional[TrainerState] = None
        self.loader = None
        self.notes: list[tuple[str, bool]] = []  # (line, already printed) for log.txt, before the logger opens
        self.exit_reason = "exception"  # the end line's reason; set where _run returns

    # ------------------------------------------------------------------ setup
    def _init_distributed(self) -> None:
        from deepspeed.accelerator import get_accelerator

        dist.ensure_env_for_single_process()
        acc = get_accelerator()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if acc.device_name() == "cpu":
            # N ranks on one CPU machine share its cores; oversubscribed threads crawl.
            if "OMP_NUM_THREADS" not in os.environ:
                local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))
            self.device = torch.device("cpu")
        else:
            acc.set_device(local_rank)
            self.device = torch.device(acc.device_name(local_rank))
        dist.init_deepspeed_distributed(acc.communication_backend_name())
        dist.set_comm_device(self.device)  # the one place that decides where collectives run
        self.rank, self.world = dist.rank(), dist.world_size()

    def _build(self) -> None:
        import deepspeed

        from unimodal_free.model import EMATeacher
        from unimodal_free.objective import Data2VecStudent
        from unimodal_free.train.ds_compat import lift_zero_dim_params
        from unimodal_free.train.ds_config import build_ds_config
        from unimodal_free.train.optim import build_optimizer
        from unimodal_free.train.schedule import lambda_lr, lr_schedule

        cfg = self.cfg
        self.zero3 = cfg.deepspeed.zero_stage == 3
        specs = modality_specs(cfg.data, self.setup.tokenizer.vocab_size)
        self.modalities = list(specs)
        # Same seed on every rank: identical initial weights (ZeRO-3 partitions each rank's own copy).
        torch.manual_seed(cfg.train.seed)
        student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, specs)
        self.lifted = lift_zero_dim_params(student)  # see ds_compat: DeepSpeed cannot move 0-dim parameters
        # Full fp32 copy, before any partitioning; it stays fp32 under bf16 too (README "Precision").
        self.teacher = EMATeacher(student, cfg.objective)
        self.teacher.module.to(self.device)
        if cfg.train.compile:  # in place: parameter names (and checkpoints) unchanged; after the teacher's copy
            from unimodal_free.model.joint import unwrap

            unwrap(student).encoder.compile()
        # Without ZeRO (fp32) nothing in DeepSpeed refuses an inf/NaN step, so the optimizer does.
        optimizer = build_optimizer(
            student, cfg.optim, check_finite=cfg.deepspeed.zero_stage == 0 and cfg.train.precision == "fp32"
        )
        scheduler = lambda_lr(optimizer, lr_schedule(cfg.optim, cfg.train.max_steps))
        self.engine, _, _, _ = deepspeed.initialize(
            model=student, optimizer=optimizer, lr_scheduler=scheduler, config=build_ds_config(cfg, self.world)
        )
        # Per-rank streams from here on (data order is seeded by the reader itself).
        seed_everything(cfg.train.seed + 1_000_003 * (self.rank + 1))
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(cfg.train.seed * 7919 + self.rank)

    def _restore_or_start(self) -> TrainerState:
        cfg, setup = self.cfg, self.setup
        ckpt = self.ckpt
        state = TrainerState(
            world_size=self.world, tokenizer=setup.tokenizer.reference, config=config_to_dict(cfg)
        )
        if setup.resume_dir is not None:
            state, teacher_sd, rank_state = ckpt.load(self.engine, setup.resume_dir, setup.trust_checkpoint)
            load_into(self.teacher.module, teacher_sd)
            restore_rng(rank_state["rng"], self.generator)
            if rank_state["micro_batches"] != state.micro_batches:
                raise CheckpointError(f"{setup.resume_dir}: rank {self.rank} data position disagrees with rank 0")
            changes = config_changes(state.config, cfg)
            state.config = config_to_dict(cfg)
            self.notes.append((f"resuming from {setup.resume_dir} at step {state.step}", False))
            self.notes += [(f"  config changed since the checkpoint: {line}", False) for line in changes]
            if self.rank == 0:
                ckpt.remove_incomplete_after(state.step)
        if self.rank == 0:
            save_config(cfg, self.run_dir / "config.json")
        dist.barrier()
        return state

    # ------------------------------------------------------------------ one step
    def _local_grad_norm(self) -> Optional[torch.Tensor]:
        """Global grad norm without ZeRO (gradients are already all-reduced at the boundary); on the device."""
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        if not grads:
            return None
        return torch.nn.utils.get_total_norm(grads)

    def _train_step(self, state: TrainerState, stats: IntervalStats, stop: StopRequest) -> dict[str, Any]:
        from unimodal_free.objective import step_flops

        cfg, engine = self.cfg, self.engine
        # The LR this step uses; the schedule advances only on applied steps (DeepSpeed skips it on overflow).
        lr = float(engine.get_lr()[0])
        grad_norm = None
        step_stats = IntervalStats()  # this step's metrics: into ``stats`` only if the step is applied
        t0 = time.perf_counter()
        for _ in range(cfg.train.grad_accum):
            with stop.waiting_for_data():
                batch = next(self.loader)  # on the host: its counts cost no device read
            state.micro_batches += 1
            flops = step_flops(cfg.model, cfg.objective, cfg.masking, cfg.data, batch)
            stats.count("flops", flops["student"] + flops["teacher"])
            stats.count("rows", batch.rows)
            stats.count("elements", batch.num_elements())
            stats.count("skipped", batch.skipped)
            stats.count("batches", 1)
            for name, part in batch.parts.items():
                stats.count(f"rows/{name}", part.rows)
            batch = batch.to(self.device)
            out = engine(batch, self.teacher.module, self.generator, dist.gather_with_local_grad, dist.all_reduce_sum)
            loss = out.loss.float().reshape(())
            if testhooks.nan_loss(state.step + 1, self.rank):
                loss = loss * float("nan")
            # Non-finite here -> NaN gradients here -> NaN everywhere after the gradient all-reduce, where the
            # overflow check refuses the step on every rank. Decided on the device: no host read per micro-batch.
            loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
            step_stats.add("loss", loss)
            for key, value in out.metrics.items():
                if not key.startswith(("target_std/", "pred_std/")):  # the guard's stds come from the moments
                    step_stats.add(key, value)
            for key, value in out.moments.items():
                step_stats.add_moments(key, value)
            engine.backward(loss)
            if engine.is_gradient_accumulation_boundary() and engine.zero_optimization_stage() == 0:
                grad_norm = self._local_grad_norm()
            engine.step()
        applied = engine.was_step_applied()  # read by DeepSpeed from its own overflow check: no extra sync
        (stop_now,) = dist.any_flags([stop.requested])  # the one collective of ours per step
        if applied:
            norm = engine.get_global_grad_norm()
            grad_norm = norm if norm is not None else grad_norm
            if grad_norm is not None:
                step_stats.add("grad_norm", grad_norm)
            stats.merge(step_stats)
            self._update_teacher(state.step)
            state.nonfinite_in_row = 0
        else:
            state.skipped_steps += 1
            state.nonfinite_in_row += 1
        state.step += 1
        dt = time.perf_counter() - t0
        state.train_time_s += dt
        stats.seconds += dt
        return {"lr": lr, "applied": applied, "stop": stop_now}

    def _update_teacher(self, step: int) -> None:
        """EMA from the full student; under ZeRO-3 its partitions are gathered one chunk at a time."""
        gather = None
        if self.zero3:
            import deepspeed

            def gather(params):
                return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        self.teacher.update(self.engine.module, step, gather=gather, chunk_numel=self.cfg.deepspeed.ema_gather_numel)

    # ------------------------------------------------------------------ logging / eval / save
    def _log(self, state: TrainerState, stats: IntervalStats, info: dict[str, Any]) -> Optional[str]:
        """Rank-summed interval metrics to TensorBoard; returns a collapse message (agreed by all ranks)."""
        from unimodal_free.objective import check_collapse

        metrics, stds, std_rows, counts = stats.reduce(state)
        step = state.step
        seconds = dist.max_scalar(stats.seconds)
        per_s = (lambda n: n / seconds) if seconds > 0 else (lambda n: 0.0)
        scalars = {f"train/{k}": v for k, v in metrics.items() if k != "padding_fraction"}
        if "padding_fraction" in metrics:
            scalars["train/padding_waste"] = metrics["padding_fraction"]
        target_rows = {k.split("/")[1]: n for k, n in std_rows.items() if k.startswith("target/")}
        for key, value in stds.items():  # "target_std/image": logged where its rows make a std (>= 2)
            kind, modality = key.split("_std/")
            if std_rows[f"{kind}/{modality}"] >= 2:
                scalars[f"train/{key}"] = value
        if seconds > 0 and self.peak_flops > 0:  # per-rank mean FLOPs over the slowest rank's time
            scalars["train/mfu"] = mfu(counts.get("flops", 0.0) / self.world, seconds, self.peak_flops)
        scalars["train/lr"] = info["lr"]
        scalars["train/ema_decay"] = self.teacher.decay(step - 1)
        scalars["train/samples_per_s"] = per_s(counts.get("rows", 0.0))
        scalars["train/elements_per_s"] = per_s(counts.get("elements", 0.0))
        for name in self.modalities:
            scalars[f"train/rows/{name}"] = counts.get(f"rows/{name}", 0.0)
            scalars[f"train/rows_per_s/{name}"] = per_s(counts.get(f"rows/{name}", 0.0))
        scalars["train/skipped_samples"] = state.skipped_samples
        scalars["train/skipped_steps"] = state.skipped_steps
        scalars["train/samples_seen"] = state.samples_seen
        scalars["train/epoch"] = state.samples_seen / self.cfg.data.epoch_samples
        self.logger.scalars(scalars, step)
        if self.first_log:
            self.first_log = False
            missing = [name for name in self.modalities if not counts.get(f"rows/{name}", 0)]
            if missing:
                self.logger.message(
                    f"warning: configured modality {', '.join(map(repr, missing))} appeared in none of the first "
                    f"{int(counts.get('batches', 0))} batches (steps {self.start_step + 1}-{step}, {self.world} "
                    f"rank(s)); is it in data.train?"
                )
        message = check_collapse(stds, self.cfg.objective, step, target_rows)
        (collapsed,) = dist.any_flags([message is not None])
        if collapsed and message is None:
            message = f"representation collapse at step {step} detected on another rank"
        self.last_log = scalars
        stats.reset()
        return message

    def _maybe_eval(self, state: TrainerState) -> None:
        cfg = self.cfg
        if cfg.eval.every <= 0 or state.step % cfg.eval.every:
            return
        run = False
        if self.rank == 0:
            est = self.last_eval_s
            share = (state.eval_time_s + est) / max(1e-9, state.train_time_s + state.eval_time_s + est)
            run = share <= cfg.eval.max_time_share
            if not run:
                self.evals_skipped += 1
                self.logger.message(
                    f"step {state.step}: eval skipped, it would take {share:.0%} of wall time "
                    f"> eval.max_time_share={cfg.eval.max_time_share}"
                )
                self.logger.scalars({"val/skipped_evals": self.evals_skipped}, state.step)
        (run,) = dist.any_flags([run])  # rank 0 decides
        if not run:
            return
        t0 = time.perf_counter()
        if cfg.eval.model == "teacher":
            model = self.teacher.module  # replicated: rank 0 alone
        elif not self.zero3:
            model = self.engine.module
        else:
            # ZeRO-3 modules fetch parameters with collectives inside every forward, so rank 0
            # cannot run them alone: evaluate a consolidated copy instead (collective gather).
            student = gathered_state_dict(self.engine.module, True, self.rank)
            model = None
            if self.rank == 0:
                model = copy.deepcopy(self.teacher.module)
                load_into(model, student)
        if self.rank == 0:
            self._evaluate(model, state.step)
        dist.barrier()
        dt = dist.max_scalar(time.perf_counter() - t0)
        state.eval_time_s += dt
        self.last_eval_s = dt

    def _evaluate(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        from unimodal_free.eval import evaluate

        cfg = self.cfg
        rng = capture_rng()  # eval must not shift the training RNG streams (exact resume)
        try:
            # In the evaluated weights' dtype: the fp32 teacher, or the student as trained (README "Precision").
            out = evaluate(
                model,
                cfg,
                self.setup.heldout_sources,
                self.setup.tokenizer,
                self.device,
                max_samples=cfg.eval.max_samples,
                model_name=cfg.eval.model,
                writer=self.logger.writer,
                step=step,
                # Heatmaps every eval; the (large) projector entry only for the final model.
                projector=step == cfg.train.max_steps,
            )
        finally:
            restore_rng(rng)
        scalars = {f"val/{k}": float(v) for k, v in out.items()}
        scalars["val/seconds"] = out.seconds
        self.logger.scalars(scalars, step)
        self.last_eval = (step, out.results)  # the model card's retrieval table
        r1 = {k: round(v, 3) for k, v in out.items() if k.endswith("R@1")}
        self.logger.message(f"step {step}: eval ({out.seconds:.1f}s) {r1}")
        return scalars

    def _save(self, state: TrainerState) -> None:
        if self.last_saved_step == state.step:
            return
        self.stats.flush_counts(state)  # samples_seen / skipped_samples: global totals up to this step
        rank_state = {"rng": capture_rng(self.generator), "micro_batches": state.micro_batches}
        self.logger.flush()  # events up to this step are on disk before the checkpoint can be resumed
        self.ckpt.save(self.engine, self._teacher_state(), state, rank_state)
        self.last_saved_step = state.step

    def _teacher_state(self) -> dict[str, torch.Tensor]:
        return model_shapes(self.teacher.module.state_dict(), self.lifted)

    def _export(self, state: TrainerState) -> None:
        student = model_shapes(gathered_state_dict(self.engine.module, self.zero3, self.rank), self.lifted)
        if self.rank == 0:
            path = save_export(
                self.run_dir / EXPORT_NAME,
                student,
                self._teacher_state(),
                self.cfg,
                self.setup.tokenizer.reference,
                state.step,
            )
            self.logger.message(f"exported {path}")
            folder = write_model_folder(self.run_dir / MODEL_DIR, self._teacher_state(), self.cfg, self.setup.tokenizer,
                                        state.step, self._summary(state))
            self.logger.message(f"model folder {folder} (unimodal_free.load({str(folder)!r}))")
        dist.barrier()

    def _summary(self, state: TrainerState) -> TrainingSummary:
        eval_step, results = self.last_eval
        return TrainingSummary(
            samples_seen=state.samples_seen, rows=dict(state.rows_seen), skipped_samples=state.skipped_samples,
            final_loss=self.last_log.get("train/loss"), world_size=self.world, train_time_s=state.train_time_s,
            eval_step=eval_step, eval_results=results,
        )

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        from unimodal_free.data.reader import DataSourceError

        self.started = time.monotonic()
        code = 1  # an exception's exit status
        with StopRequest() as stop:
            self._init_distributed()
            try:
                code = self._run(stop)
                return code
            except DataSourceError as exc:  # this rank's exit ends the launch (the launcher stops the others)
                self._say(f"error: rank {self.rank}: {exc}")
                self.exit_reason, code = "data_error", EXIT_USAGE
                return code
            except StopWhileWaiting as exc:
                self._say(f"rank {self.rank}: stopped while waiting for data ({exc}); nothing saved, the last "
                          "checkpoint is the resume point")
                self.exit_reason, code = "signal_while_waiting_for_data", 128 + exc.signum
                return code
            except BaseException as exc:
                self.exit_reason = f"exception  detail {type(exc).__name__}: {' '.join(str(exc).split())}"
                raise
            finally:
                if self.logger is not None:
                    self._end_line(code)
                # Stop DataLoader workers now: they ignore stop signals, so at interpreter exit
                # multiprocessing's terminate + join would wait on them forever (TrainBatches.close).
                if self.loader is not None:
                    self.loader.close()
                    self.loader = None
                if self.logger is not None:
                    self.logger.close()
                self.engine = None  # its process-group references and pending work go before the groups do
                dist.shutdown()

    def _say(self, text: str) -> None:
        """A message of this rank: through the logger on rank 0 (stderr + log.txt), else to stderr."""
        if self.logger is not None and self.logger.enabled:
            self.logger.message(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def _start_line(self, step: int) -> None:
        cfg = self.cfg
        self.logger.message(format_fields([
            ("start", now_utc()), ("step", f"{step}/{cfg.train.max_steps}"), ("run_dir", self.run_dir),
            ("world_size", self.world), ("device", self.device.type), ("precision", cfg.train.precision),
            ("zero_stage", cfg.deepspeed.zero_stage), ("matmul_peak_tflops", f"{self.peak_flops / 1e12:.3f}"),
            ("config", self.setup.config_path or "defaults"), ("command", command_line()),
        ]))
        for text, printed in [(n, True) for n in self.setup.notes] + self.notes:
            self.logger.message(text, echo=not printed)

    def _end_line(self, code: int) -> None:
        step = self.state.step if self.state is not None else 0
        self.logger.message(format_fields([
            ("end", now_utc()), ("step", f"{step}/{self.cfg.train.max_steps}"),
            ("wall", format_duration(time.monotonic() - self.started)), ("exit", code), ("reason", self.exit_reason),
        ]))

    def _run(self, stop: StopRequest) -> int:
        from unimodal_free.data.reader import make_train_loader

        cfg = self.cfg
        self.ckpt = CheckpointManager(self.run_dir, cfg.train.keep_last)
        self._build()
        state = self.state = self._restore_or_start()
        self.last_saved_step = state.step if self.setup.resume_dir is not None else -1
        self.last_eval_s = 0.0
        self.last_eval: tuple[Optional[int], dict] = (None, {})
        self.evals_skipped = 0
        self.last_log: dict[str, float] = {}
        self.start_step, self.first_log = state.step, True
        self.loader = make_train_loader(
            cfg, self.setup.tokenizer, self.rank, self.world, start_batch=state.micro_batches
        )
        # The peak of the precision we train in (fp32 probe for fp32, bf16 for bf16).
        probe_dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        self.peak_flops = measure_matmul_peak(self.device, probe_dtype)
        self.logger = RunLogger(
            self.run_dir, self.rank, cfg.train.max_steps, state.step, cfg.log.tensorboard, cfg.log.progress
        )
        if self.rank == 0:  # at the session's first step (0 on a fresh start; a resumed session: its own config)
            self.logger.text("config", config_markdown(config_to_dict(cfg), provenance()), state.step)
        self._start_line(state.step)
        clock = StepClock(state.step, cfg.train.max_steps, self.started)
        stats = self.stats = IntervalStats()
        while state.step < cfg.train.max_steps:
            info = self._train_step(state, stats, stop)
            step = state.step
            last = step == cfg.train.max_steps
            collapse = None
            if step % cfg.train.log_every == 0 or last or info["stop"]:
                collapse = self._log(state, stats, info)
                self.logger.line(format_fields(progress_fields(
                    step, cfg.train.max_steps, self.last_log, self.modalities, *clock.tick(step))))
            # The last logged values: a per-step loss on the bar would cost a device read every step.
            throughput = self.last_log.get("train/samples_per_s", 0.0)
            loss = self.last_log.get("train/loss", float("nan"))
            self.logger.progress(step, {"loss": f"{loss:.4f}", "samples/s": f"{throughput:.1f}"})
            if collapse is not None:
                self.logger.message(f"stopping: {collapse}")
                self.exit_reason = "collapse"
                return EXIT_COLLAPSE
            if state.nonfinite_in_row >= cfg.train.max_nonfinite_in_row:
                self._save(state)
                self.logger.message(
                    f"stopping at step {step}: {state.nonfinite_in_row} non-finite steps in a row "
                    f"(train.max_nonfinite_in_row={cfg.train.max_nonfinite_in_row}); last good weights saved"
                )
                self.exit_reason = "nonfinite"
                return EXIT_NONFINITE
            self._maybe_eval(state)
            if step % cfg.train.checkpoint_every == 0 or last or info["stop"]:
                self._save(state)
            testhooks.hook("after_step", step, self.run_dir, self.rank)
            if info["stop"]:
                self.logger.message(f"stopping at step {step} on request (signal); checkpoint saved")
                self.logger.flush()
                self.exit_reason = "signal"
                return EXIT_OK
        self._save(state)
        self._export(state)
        self.logger.flush()
        self.exit_reason = "done"
        return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``launch/train.py``; returns the process exit code."""
    from unimodal_free.data.tokenizer import TokenizerMismatchError

    args = build_parser().parse_args(argv)
    try:
        if args.print_config:
            return print_config(args)
        setup = prepare(args)
    except (ConfigError, SetupError, CheckpointError, TokenizerMismatchError) as exc:
        return report_usage_error(exc)
    return Trainer(setup).run()
