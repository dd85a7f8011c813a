"""The training run: orchestrates the step, interval metrics, periodic eval and checkpointing components.

One optimizer step (step.py) = ``train.grad_accum`` micro-batches through the
DeepSpeed engine (the student), then the EMA teacher outside it. Metrics stay
on the device until the log interval (metrics.py); retrieval evals run every
``eval.every`` steps (periodic_eval.py); checkpoints and the final export are
written by checkpointing.py into checkpoint.py's layout. The decisions to stop
are made here, in the loop, and nowhere else.

Exit codes (see run_setup.py): 0 done or stopped by SIGTERM/SIGINT after a
checkpoint, 2 user error before start, 3 collapse guard, 4 too many
non-finite steps in a row (after a checkpoint), 5 a checkpoint could not be
written (its partial folder removed).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import torch

from unimodal_free.batch import Batch, modality_specs
from unimodal_free.config import ObjectiveConfig, config_to_dict
from unimodal_free.data.loading.loader import DataSourceError, make_train_loader
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent, check_collapse, step_flops
from unimodal_free.provenance import provenance
from unimodal_free.run_dir import RunDirError
from unimodal_free.train import dist
from unimodal_free.train.callbacks import Callbacks, TrainerCallback
from unimodal_free.train.checkpoint_manager import CheckpointManager, CheckpointSaveError
from unimodal_free.train.checkpoint_timer import CheckpointTimer
from unimodal_free.train.checkpointing import Checkpointing, restore_or_start, training_summary
from unimodal_free.train.ds_compat import lift_zero_dim_params
from unimodal_free.train.ds_config import build_ds_config
from unimodal_free.train.launcher_watch import follow_launcher
from unimodal_free.train.metrics import IntervalMetrics, IntervalReport
from unimodal_free.train.mfu import measure_matmul_peak
from unimodal_free.train.optim import build_optimizer
from unimodal_free.train.periodic_eval import PeriodicEval
from unimodal_free.train.rng import rank_seeds, seed_everything
from unimodal_free.train.run_setup import EXIT_COLLAPSE, EXIT_NONFINITE, EXIT_OK, EXIT_SAVE_FAILED, RunSetup
from unimodal_free.train.schedule import lambda_lr, lr_schedule
from unimodal_free.train.signals import StopRequest, StopWhileWaiting
from unimodal_free.train.state import TrainerState
from unimodal_free.train.step import TrainStep
from unimodal_free.train.tblog import RunLogger, config_markdown
from unimodal_free.train.textlog import StepClock, command_line, format_duration, format_fields, now_utc, progress_fields
from unimodal_free.usage import EXIT_USAGE

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine


class Trainer:
    """One run of ``launch/train.py``; ``callbacks``: named points for tests and tools (production: none).

    Every attribute is declared here. Those that need the process group (device,
    rank, the DeepSpeed engine, per-rank seeds and data, rank 0's logger) are
    None until :meth:`_setup` builds them inside :meth:`run`, which first
    installs the signal handlers and initialises the process group so that a
    failure anywhere in the setup still ends with the end line and a clean
    shutdown.
    """

    def __init__(self, setup: RunSetup, callbacks: Sequence[TrainerCallback] = ()):
        self.setup = setup
        self.cfg = setup.cfg
        self.run_dir = setup.run_dir
        self.callbacks = Callbacks(callbacks)
        self.manager = CheckpointManager(self.run_dir, self.cfg.train.keep_last, self.callbacks)
        self.notes: list[tuple[str, bool]] = []  # (line, already printed) for log.txt, before the logger opens
        self.exit_reason = "exception"  # the end line's reason; set where the loop returns
        self.started = time.monotonic()  # wall clock of the end line and the step clock (reset by run)
        # _init_distributed:
        self.device: Optional[torch.device] = None
        self.rank = 0
        self.world = 1
        # _setup, after the process group exists:
        self.engine: Optional["DeepSpeedEngine"] = None  # the student
        self.teacher: Optional[EMATeacher] = None  # fp32 EMA copy, outside the engine
        self.lifted: set[str] = set()  # 0-dim parameters the engine trains as (1,) (ds_compat)
        self.generator: Optional[torch.Generator] = None  # this rank's masking/view stream
        self.modalities: list[str] = []
        self.state: Optional[TrainerState] = None
        self.loader: Optional[Iterator[Batch]] = None
        self.peak_flops = 0.0  # matmul peak of this device in the training precision (MFU)
        self.logger: Optional[RunLogger] = None
        self.train_step: Optional[TrainStep] = None
        self.metrics: Optional[IntervalMetrics] = None
        self.evaluation: Optional[PeriodicEval] = None
        self.checkpoints: Optional[Checkpointing] = None

    # ------------------------------------------------------------------ setup
    def _init_distributed(self) -> None:
        from deepspeed.accelerator import get_accelerator  # heavy: imported when a run starts

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

    def _setup(self) -> None:
        """Everything that needs the process group, in an order the seeded numbers depend on."""
        cfg = self.cfg
        self._build_models()
        self.state, notes = restore_or_start(self.setup, self.manager, self.engine, self.teacher, self.generator,
                                             self.rank, self.world)
        self.notes += [(line, False) for line in notes]
        state = self.state
        self.loader = make_train_loader(cfg.data, cfg.train, self.setup.train_sources, self.setup.tokenizer,
                                        self.rank, self.world, start_batch=state.micro_batches)
        # The peak of the precision we train in (fp32 probe for fp32, bf16 for bf16).
        probe_dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        self.peak_flops = measure_matmul_peak(self.device, probe_dtype)
        self.logger = RunLogger(
            self.run_dir, self.rank, cfg.train.max_steps, state.step, cfg.log.tensorboard, cfg.log.progress
        )
        if self.rank == 0:  # at the session's first step (0 on a fresh start; a resumed session: its own config)
            self.logger.text("config", config_markdown(config_to_dict(cfg), provenance()), state.step)
        self.train_step = self._build_step()
        self.metrics = IntervalMetrics(self.logger, self.modalities, self.world, self.peak_flops,
                                       cfg.data.epoch_samples, self.teacher.decay, state.step)
        self.evaluation = PeriodicEval(cfg.eval, cfg.data, cfg.train, self.engine, self.teacher,
                                       self.setup.heldout_sources, self.setup.tokenizer, self.device, self.logger,
                                       self.rank)
        last_saved = state.step if self.setup.resume_dir is not None else -1
        self.checkpoints = Checkpointing(self.manager, self.engine, self.teacher, self.lifted, self.generator,
                                         self.metrics.stats, self.logger, self.run_dir, self.setup.tokenizer,
                                         self.rank, last_saved)
        self.callbacks.on_setup_end(self)

    def _build_models(self) -> None:
        """Student (in the DeepSpeed engine), EMA teacher and this rank's generator; collective."""
        import deepspeed  # heavy: imported when a run starts

        cfg = self.cfg
        specs = modality_specs(cfg.data, self.setup.tokenizer.vocab_size)
        self.modalities = list(specs)
        # Same seed on every rank: identical initial weights (ZeRO-3 partitions each rank's own copy).
        torch.manual_seed(cfg.train.seed)
        student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, specs)
        self.lifted = lift_zero_dim_params(student)  # see ds_compat: DeepSpeed cannot move 0-dim parameters
        # Full fp32 copy, before any partitioning; it stays fp32 under bf16 too (docs/DESIGN.md "Precision").
        self.teacher = EMATeacher(student, cfg.objective)
        self.teacher.module.to(self.device)
        if cfg.train.compile:  # in place: parameter names (and checkpoints) unchanged; after the teacher's copy
            # The whole step's forward (teacher targets, student, alignment, loss) and its backward; the
            # masking and the pair indices run eagerly (host-sized), so batch sizes are dynamic shapes.
            # Sizes that happen to be equal in one batch (rows of two modalities) are not tied together,
            # else the next batch recompiles.
            import torch.fx.experimental._config as fx_config

            fx_config.use_duck_shape = False
            student.compile(dynamic=True)
        # Without ZeRO (fp32) nothing in DeepSpeed refuses an inf/NaN step, so the optimizer does.
        optimizer = build_optimizer(
            student, cfg.optim, check_finite=cfg.deepspeed.zero_stage == 0 and cfg.train.precision == "fp32"
        )
        scheduler = lambda_lr(optimizer, lr_schedule(cfg.optim, cfg.train.max_steps))
        ds_config = build_ds_config(cfg.train, cfg.optim, cfg.deepspeed, self.world, self.setup.universal)
        self.engine, _, _, _ = deepspeed.initialize(
            model=student, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        # Per-rank streams from here on (data order is seeded by the reader itself).
        everything_seed, mask_seed = rank_seeds(cfg.train.seed, self.rank)
        seed_everything(everything_seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(mask_seed)

    def _build_step(self) -> TrainStep:
        """The step with the objective bound to this run: the one place the loss and its FLOPs are called."""
        cfg, engine, teacher, generator = self.cfg, self.engine, self.teacher, self.generator

        def loss(batch: Batch):
            return engine(batch, teacher.module, generator, dist.gather_with_local_grad, dist.all_reduce_sum)

        def flops(batch: Batch) -> dict[str, float]:
            return step_flops(cfg.model, cfg.objective, cfg.masking, cfg.data, batch)

        return TrainStep(engine, teacher, self.loader, self.device, loss, flops, cfg.train, cfg.deepspeed,
                         self.callbacks, self.rank)

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        self.started = time.monotonic()
        code = 1  # an exception's exit status
        with StopRequest() as stop:
            follow_launcher()  # the launcher gone (its runner SIGTERMed alone, or itself killed): a clean stop
            self._init_distributed()
            try:
                self._setup()
                self._start_line(self.state.step)
                code = self._loop(stop)
                return code
            except DataSourceError as exc:  # this rank's exit ends the launch (the launcher stops the others)
                self._say(f"error: rank {self.rank}: {exc}")
                self.exit_reason, code = "data_error", EXIT_USAGE
                return code
            except (CheckpointSaveError, RunDirError) as exc:
                self._say(f"error: rank {self.rank}: {exc}")
                saving = isinstance(exc, CheckpointSaveError)
                self.exit_reason = "checkpoint_save_failed" if saving else "run_dir_refused"
                code = EXIT_SAVE_FAILED if saving else EXIT_USAGE
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
                self._close(code)

    def _loop(self, stop: StopRequest) -> int:
        """Steps until ``train.max_steps``, a stop request, the collapse guard or too many non-finite steps."""
        cfg, state = self.cfg, self.state
        clock = StepClock(state.step, cfg.train.max_steps, self.started)
        timer = CheckpointTimer(cfg.train.checkpoint_every_minutes)
        while state.step < cfg.train.max_steps:
            result = self.train_step.run(state, self.metrics.stats, stop)
            step = state.step
            last = step == cfg.train.max_steps
            collapse, timed = None, False
            if step % cfg.train.log_every == 0 or last or result.stop:
                report = self.metrics.log_interval(state, result.lr)
                self.logger.line(format_fields(progress_fields(
                    step, cfg.train.max_steps, self.metrics.last_log, self.modalities, *clock.tick(step))))
                collapse, timed = agreed_checks(report, cfg.objective, step, timer.due())
            self._progress(step)
            if collapse is not None:
                self.logger.message(f"stopping: {collapse}")
                self.exit_reason = "collapse"
                return EXIT_COLLAPSE
            if state.nonfinite_in_row >= cfg.train.max_nonfinite_in_row:
                self.checkpoints.save(state)
                self.logger.message(
                    f"stopping at step {step}: {state.nonfinite_in_row} non-finite steps in a row "
                    f"(train.max_nonfinite_in_row={cfg.train.max_nonfinite_in_row}); last good weights saved"
                )
                self.exit_reason = "nonfinite"
                return EXIT_NONFINITE
            self.evaluation.maybe_run(state)
            if step % cfg.train.checkpoint_every == 0 or last or result.stop or timed:
                self.checkpoints.save(state)
                timer.restart()
            self.callbacks.on_step_end(self, step)
            if result.stop:
                self.logger.message(f"stopping at step {step} on request (signal); checkpoint saved")
                self.logger.flush()
                self.exit_reason = "signal"
                return EXIT_OK
        self.checkpoints.save(state)
        summary = training_summary(state, self.metrics.last_log, self.evaluation.last_eval, self.world)
        self.checkpoints.export(state, cfg, summary)
        self.logger.flush()
        self.exit_reason = "done"
        return EXIT_OK

    def _progress(self, step: int) -> None:
        # The last logged values: a per-step loss on the bar would cost a device read every step.
        last_log = self.metrics.last_log
        throughput = last_log.get("train/samples_per_s", 0.0)
        loss = last_log.get("train/loss", float("nan"))
        self.logger.progress(step, {"loss": f"{loss:.4f}", "samples/s": f"{throughput:.1f}"})

    def _close(self, code: int) -> None:
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
        self.train_step = self.evaluation = self.checkpoints = None  # they hold the engine too
        dist.shutdown()

    # ------------------------------------------------------------------ text log
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


def agreed_checks(report: IntervalReport, objective_cfg: ObjectiveConfig, step: int,
                  checkpoint_due: bool) -> tuple[Optional[str], bool]:
    """What every rank decides at a log step, in one collective: the collapse guard's message if any
    rank's interval statistics trip it (else None), and whether any rank's checkpoint timer is due."""
    message = check_collapse(report.stds, objective_cfg, step, report.target_rows)
    collapsed, due = dist.any_flags([message is not None, checkpoint_due])
    if collapsed and message is None:
        message = f"representation collapse at step {step} detected on another rank"
    return message, due
