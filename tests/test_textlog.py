"""Plain log lines (train/textlog.py), where RunLogger sends them, and the DeepSpeed noise filter (train/ds_noise.py)."""

from __future__ import annotations

import logging

import pytest

from unimodal_free.train.textlog import (WARMUP_STEPS, StepClock, format_duration, format_fields, parse_fields,
                                         progress_fields)


def test_durations_are_fixed_fields():
    assert [format_duration(s) for s in (0, 4.6, 59, 60, 83, 3599, 3600, 7509, 90061)] == \
        ["0s", "5s", "59s", "1m00s", "1m23s", "59m59s", "1h00m00s", "2h05m09s", "25h01m01s"]


def test_fields_round_trip_and_the_last_field_keeps_its_spaces():
    line = format_fields([("end", "2026-01-01T00:00:00Z"), ("step", "3/9"), ("reason", "exception"),
                          ("detail", "ValueError: a b  c")])
    assert line == "end 2026-01-01T00:00:00Z  step 3/9  reason exception  detail ValueError: a b  c"
    assert parse_fields(line)["step"] == "3/9" and parse_fields(line)["reason"] == "exception"


def test_eta_waits_for_steady_steps():
    """Start-up and compilation take 60 s over the first steps, then 1 s per step, a line every step: no ETA
    (``eta -``) until steps after the warm-up are measured, then 1 s per remaining step; elapsed counts from the
    session start. The first line used to promise 60 s per step."""
    clock = StepClock(start_step=0, max_steps=300, started=0.0)
    times = {1: 60.0, 2: 60.5, **{s: 58.0 + s for s in range(3, 301)}}  # steps 1-2 compile, 3+ take 1 s
    etas = {s: clock.tick(s, now=times[s])[1] for s in range(1, 301)}
    assert [etas[s] for s in range(1, WARMUP_STEPS + 1)] == [None] * WARMUP_STEPS
    assert etas[WARMUP_STEPS + 1] == pytest.approx(300.0 - WARMUP_STEPS - 1)
    assert etas[150] == pytest.approx(150.0) and etas[300] == 0.0
    assert clock.tick(300, now=400.0)[0] == 400.0
    line = format_fields(progress_fields(1, 300, {"train/lr": 1e-3, "train/samples_per_s": 2.0}, [], times[1], etas[1]))
    assert parse_fields(line)["eta"] == "-"


def test_eta_with_log_lines_every_10_steps_and_a_resumed_session():
    """The real cadence (train.log_every=10): the first line is the warm-up, the second gives the rate; a resumed
    session measures its own steps."""
    clock = StepClock(start_step=0, max_steps=1000, started=0.0)
    assert clock.tick(10, now=100.0) == (100.0, None)  # start-up and compile: not a rate
    assert clock.tick(20, now=110.0) == (110.0, pytest.approx(980.0))
    assert clock.tick(1000, now=1090.0) == (1090.0, 0.0)
    resumed = StepClock(start_step=500, max_steps=1000, started=0.0)
    assert resumed.tick(510, now=20.0)[1] is None
    assert resumed.tick(520, now=40.0)[1] == pytest.approx(2.0 * 480)


def test_progress_fields():
    scalars = {"train/loss": 3.21044, "train/loss/image": 1.5, "train/loss/text": 1.25, "train/lr": 2.9149e-4,
               "train/grad_norm": 0.8123, "train/samples_per_s": 95.06, "train/skipped_steps": 0.0}
    line = format_fields(progress_fields(120, 400, scalars, ["image", "speech", "text"], 83.0, 192.0))
    assert line == ("step 120/400  loss 3.2104  loss/image 1.5000  loss/text 1.2500  lr 2.91e-04  grad_norm 0.812  "
                    "samples/s 95.1  elapsed 1m23s  eta 3m12s")
    skipped = {"train/lr": 1e-3, "train/samples_per_s": 0.0, "train/skipped_steps": 3.0}  # no step applied
    assert parse_fields(format_fields(progress_fields(3, 9, skipped, ["image"], 1, 2)))["loss"] == "nan"
    assert parse_fields(format_fields(progress_fields(3, 9, skipped, ["image"], 1, 2)))["skipped_steps"] == "3"


def test_cross_loss_field_only_when_logged():
    """objective.cross_weight > 0 logs train/cross_loss: the step line shows it after align_loss; otherwise no field."""
    scalars = {"train/loss": 1.0, "train/align_loss": 0.5, "train/lr": 1e-3, "train/samples_per_s": 10.0}
    without = [name for name, _ in progress_fields(1, 9, scalars, ["image"], 1, 2)]
    assert "cross_loss" not in without
    fields = progress_fields(1, 9, scalars | {"train/cross_loss": 0.123456}, ["image"], 1, 2)
    assert [name for name, _ in fields] == without[:3] + ["cross_loss"] + without[3:]
    assert parse_fields(format_fields(fields))["cross_loss"] == "0.1235"


def test_run_logger_sends_lines_where_they_belong(tmp_path, capsys):
    """Not a terminal (captured): no bar; step lines to stdout and log.txt, messages to stderr and log.txt,
    log.txt appended to by a second session; other ranks write nothing."""
    from unimodal_free.train.tblog import LOG_NAME, RunLogger

    logger = RunLogger(tmp_path, rank=0, max_steps=4, start_step=0, tensorboard=False, progress=True)
    assert logger.bar is None
    logger.message("hello")
    logger.line("step 1/4  loss 1.0000")
    logger.message("printed before", echo=False)
    logger.close()
    second = RunLogger(tmp_path, rank=0, max_steps=4, start_step=1, tensorboard=False, progress=False)
    second.message("again")
    second.close()
    out, err = capsys.readouterr()
    assert out == "step 1/4  loss 1.0000\n" and err == "hello\nagain\n"
    assert (tmp_path / LOG_NAME).read_text() == "hello\nstep 1/4  loss 1.0000\nprinted before\nagain\n"
    other = RunLogger(tmp_path / "r1", rank=1, max_steps=4, start_step=0, tensorboard=False, progress=True)
    other.line("step 1/4")
    other.message("x")
    assert capsys.readouterr() == ("", "") and not (tmp_path / "r1").exists()


@pytest.fixture
def deepspeed_logger():
    """The "DeepSpeed" logger with a recording handler, the noise filter at its default (quiet) after."""
    from unimodal_free.train import ds_noise

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("DeepSpeed")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    yield logger, records
    logger.removeHandler(handler)
    logger.setLevel(level)
    for name in ds_noise.LOGGER_NOISE:
        ds_noise._filter(name).verbose = False


def test_noise_is_demoted_and_real_warnings_pass(deepspeed_logger):
    from unimodal_free.train import ds_noise

    logger, records = deepspeed_logger
    ds_noise._filter("DeepSpeed").verbose = False
    logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
    logger.warning("**** You are using ZeRO with an untested optimizer, proceed with caution *****")
    logger.warning("a real warning")
    assert [r.getMessage() for r in records] == ["a real warning"]
    ds_noise._filter("DeepSpeed").verbose = True
    logger.warning("Setting accelerator to CPU.")
    assert [r.levelname for r in records] == ["WARNING", "WARNING"]
