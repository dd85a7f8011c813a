"""The experiment runner reuses a finished run of the same command and refuses any other folder."""

import fcntl
import json
import threading

import pytest

from unimodal_free.experiments.runner import (
    ARM_FILE,
    EXPORT_FILE,
    Arm,
    ExperimentError,
    arm_recipe,
    train_arm,
    train_seconds,
)

CONFIG = "configs/tiny.json"
ARM = Arm("a", ("train.max_steps=3",))


def finished(root, arm=ARM, config=CONFIG, ranks=1, common=()):
    """A run folder as train_arm leaves a finished run (recipe stamp + export)."""
    run = root / arm.name
    run.mkdir(parents=True)
    (run / ARM_FILE).write_text(json.dumps(arm_recipe(config, [*common, *arm.overrides], ranks)))
    (run / EXPORT_FILE).write_bytes(b"")
    return run


def test_a_finished_run_of_the_same_command_is_reused_without_a_launch(tmp_path):
    run = finished(tmp_path)
    lines = []
    assert train_arm(ARM, tmp_path, CONFIG, 1, log=lines.append) == run.resolve()
    assert lines == [f"a: reusing {run.resolve()}"]
    assert not (run / "train.log").exists()  # nothing was launched


@pytest.mark.parametrize("change", ["config", "overrides", "ranks"])
def test_a_folder_made_by_another_command_is_refused(tmp_path, change):
    run = finished(tmp_path)
    config, arm, ranks = CONFIG, ARM, 1
    if change == "config":
        config = "configs/joint.json"
    elif change == "overrides":
        arm = Arm("a", ("train.max_steps=4",))
    else:
        ranks = 2
    with pytest.raises(ExperimentError, match=f"{run.resolve()}: made by another command"):
        train_arm(arm, tmp_path, config, ranks, log=lambda _: None)
    assert (run / EXPORT_FILE).exists()  # nothing overwritten


def test_a_folder_not_made_by_an_experiment_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("mine")
    with pytest.raises(ExperimentError, match="exists but was not made by an experiment"):
        train_arm(ARM, tmp_path, CONFIG, 1, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["notes.txt"]


def test_an_unfinished_run_is_launched_again_and_a_failed_launch_names_its_log(tmp_path):
    run = finished(tmp_path, config="no/such/config.json")
    (run / EXPORT_FILE).unlink()  # the earlier launch died before exporting
    with pytest.raises(ExperimentError, match=r"a: training exited 2; see .*train\.log"):
        train_arm(ARM, tmp_path, "no/such/config.json", 1, log=lambda _: None)
    assert "no/such/config.json: config file not found" in (run / "train.log").read_text()
    assert train_seconds(run) is None  # only a finished training records its wall time


def test_a_run_being_trained_is_waited_for_then_reused(tmp_path):
    """A second experiment needing the arm that another process is training waits for its lock."""
    lines = []
    lock = open(tmp_path / ".a.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # as train_arm holds it while training
    result = {}
    waiter = threading.Thread(target=lambda: result.setdefault(
        "run", train_arm(ARM, tmp_path, CONFIG, 1, log=lines.append)))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and lines == ["a: another process is training it; waiting"]
    run = finished(tmp_path)  # the other process finishes its run, then lets go
    lock.close()
    waiter.join(timeout=30)
    assert result["run"] == run.resolve() and lines[-1] == f"a: reusing {run.resolve()}"


def test_experiment_wide_overrides_get_a_folder_of_their_own(tmp_path):
    """A shorter budget for every arm (--set train.max_steps=200) never meets the default run of the arm."""
    default = finished(tmp_path)
    short = finished(tmp_path, common=("train.max_steps=200",), arm=Arm("a@train.max_steps=200", ARM.overrides))
    assert train_arm(ARM, tmp_path, CONFIG, 1, log=lambda _: None) == default.resolve()
    assert train_arm(ARM, tmp_path, CONFIG, 1, ("train.max_steps=200",), log=lambda _: None) == short.resolve()


def test_evaluation_is_kept_until_the_export_changes(tmp_path):
    """A table is rebuilt from the kept evaluation; a retrained export (new mtime) is evaluated again."""
    from unimodal_free.experiments.runner import evaluate_arm

    run = finished(tmp_path)
    export = (run / EXPORT_FILE).stat()
    kept = {"image_to_text": {"R@1": 0.5}}
    key = {"export": [export.st_size, export.st_mtime_ns], "heldout": None, "which": "teacher"}
    (run / "experiment-eval-teacher.json").write_text(json.dumps({"key": key, "results": kept}))
    assert evaluate_arm(run) == kept
    (run / EXPORT_FILE).write_bytes(b"retrained")  # not a real export: evaluating it again must fail
    with pytest.raises(Exception):
        evaluate_arm(run)
