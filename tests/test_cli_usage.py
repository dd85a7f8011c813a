"""Every command line: a usage error (bad flag, bad --set key, missing input file) exits 2 with
exactly one stderr line ``error: ...`` naming the culprit, and no traceback. Run as real processes:
most CLIs import torch before parsing (5-10 s each on a loaded 2-core machine), so only the bad flags of
those that parse first (FAST) run with the unit tests; the rest are marked slow."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOWHERE = "/nonexistent/unimodal_free-missing"

TINY = str(ROOT / "configs" / "tiny.json")
OUT = f"{NOWHERE}.json"

# Every CLI of the repository: (how to start it, the arguments it requires, whether it takes --set).
# The required arguments let argparse get as far as the unknown flag (it reports missing ones first).
CLIS = {
    "launch/train.py": ([sys.executable, str(ROOT / "launch" / "train.py")], ["--config", TINY], True),
    "unimodal_free.eval": ([sys.executable, "-m", "unimodal_free.eval"], ["--checkpoint", NOWHERE, "--data", NOWHERE],
                           False),
    "unimodal_free.eval.cli": ([sys.executable, "-m", "unimodal_free.eval.cli"], ["--checkpoint", NOWHERE, "--data",
                                                                               NOWHERE], False),
    "unimodal_free.eval.query": ([sys.executable, "-m", "unimodal_free.eval.query"],
                                 ["--checkpoint", NOWHERE, "--text", "a red circle", "a blue square"], False),
    "unimodal_free.search": ([sys.executable, "-m", "unimodal_free.search"],
                             ["--model", NOWHERE, "--gallery", NOWHERE, "--text", "a red circle"], False),
    "unimodal_free.explore": ([sys.executable, "-m", "unimodal_free.explore"], ["--model", NOWHERE, "--gallery", NOWHERE],
                              False),
    "unimodal_free.data.reading.tokenizer": ([sys.executable, "-m", "unimodal_free.data.reading.tokenizer"],
                                     ["train", "--input", NOWHERE, "--vocab-size", "32", "--output", NOWHERE], False),
    "unimodal_free.data.writing.shards": ([sys.executable, "-m", "unimodal_free.data.writing.shards"], ["text", NOWHERE, NOWHERE], False),
    "unimodal_free.data.rewriting.pairing": ([sys.executable, "-m", "unimodal_free.data.rewriting.pairing"], [NOWHERE, f"{NOWHERE}-out"],
                                   False),
    "unimodal_free.data.rewriting.split": ([sys.executable, "-m", "unimodal_free.data.rewriting.split"], [NOWHERE, f"{NOWHERE}-out"],
                                 False),
    "unimodal_free.data.corpora": ([sys.executable, "-m", "unimodal_free.data.corpora"],
                                   ["librispeech", NOWHERE, f"{NOWHERE}-out"], False),
    "unimodal_free.data.demo": ([sys.executable, "-m", "unimodal_free.data.demo"], [NOWHERE], False),
    "unimodal_free.data.corpora.icons": ([sys.executable, "-m", "unimodal_free.data.corpora.icons"], [NOWHERE], False),
    "unimodal_free.data.corpora.digits": ([sys.executable, "-m", "unimodal_free.data.corpora.digits"], [NOWHERE],
                                          False),
    "unimodal_free.data.corpora": ([sys.executable, "-m", "unimodal_free.data.corpora"],
                                   ["spokencoco", NOWHERE, f"{NOWHERE}-out", "--images", NOWHERE], False),
    "unimodal_free.bench.caption_groups": ([sys.executable, "-m", "unimodal_free.bench.caption_groups"],
                                           [NOWHERE, f"{NOWHERE}-out"], False),
    "unimodal_free.bench.loader": ([sys.executable, "-m", "unimodal_free.bench.loader"], [], True),
    "unimodal_free.model.sizes": ([sys.executable, "-m", "unimodal_free.model.sizes"], [], False),
    "unimodal_free.config_reference": ([sys.executable, "-m", "unimodal_free.config_reference"], [], False),
    "unimodal_free.bench": ([sys.executable, "-m", "unimodal_free.bench"], [], False),
    "unimodal_free.bench.config_run": ([sys.executable, "-m", "unimodal_free.bench.config_run"],
                                       ["--config", TINY, "--rows", "1", "--out", OUT], True),
    "unimodal_free.bench.encoder_profile": ([sys.executable, "-m", "unimodal_free.bench.encoder_profile"], [], False),
    "unimodal_free.experiments": ([sys.executable, "-m", "unimodal_free.experiments"], ["sharing", "--config", TINY], True),
    "unimodal_free.train.model_folder": ([sys.executable, "-m", "unimodal_free.train.model_folder"],
                                         [NOWHERE, f"{NOWHERE}-out"], False),
    "unimodal_free.bench.zero_state": ([sys.executable, "-m", "unimodal_free.bench.zero_state"],
                                       ["--config", TINY, "--out", OUT], True),
}

# These parse their flags before torch loads: a bad flag costs well under a second (bench.loader also
# checks its config keys first; the trainer loads torch before it reads the config).
FAST = {"launch/train.py", "unimodal_free.data.reading.tokenizer", "unimodal_free.data.corpora.icons", "unimodal_free.data.corpora",
        "unimodal_free.data.corpora.digits",
        "unimodal_free.bench.loader", "unimodal_free.config_reference", "unimodal_free.bench.encoder_profile"}
FAST_SET = {"unimodal_free.bench.loader"}

# Missing input files, one per CLI that reads one: (CLI, arguments, what the line must name).
MISSING_INPUTS = [
    ("launch/train.py", ["--config", f"{NOWHERE}.json"], f"{NOWHERE}.json"),
    ("launch/train.py", ["--config", TINY, "--set", f"data.train={NOWHERE}"], NOWHERE),
    ("unimodal_free.bench.loader", ["--config", f"{NOWHERE}.json"], f"{NOWHERE}.json"),
    ("unimodal_free.data.reading.tokenizer", CLIS["unimodal_free.data.reading.tokenizer"][1], NOWHERE),
    ("unimodal_free.data.writing.shards", ["text", NOWHERE, "{tmp}/out"], NOWHERE),
    ("unimodal_free.eval", CLIS["unimodal_free.eval"][1], NOWHERE),
    ("unimodal_free.eval.query", CLIS["unimodal_free.eval.query"][1], NOWHERE),
    ("unimodal_free.search", CLIS["unimodal_free.search"][1], NOWHERE),
    ("unimodal_free.explore", CLIS["unimodal_free.explore"][1], NOWHERE),
    ("unimodal_free.bench.encoder_profile", ["--config", f"{NOWHERE}.json"], f"{NOWHERE}.json"),
    ("unimodal_free.data.rewriting.pairing", CLIS["unimodal_free.data.rewriting.pairing"][1], NOWHERE),
    ("unimodal_free.data.rewriting.split", CLIS["unimodal_free.data.rewriting.split"][1], NOWHERE),
    ("unimodal_free.data.corpora", CLIS["unimodal_free.data.corpora"][1], NOWHERE),
    ("unimodal_free.train.model_folder", CLIS["unimodal_free.train.model_folder"][1], NOWHERE),
    ("unimodal_free.data.corpora", CLIS["unimodal_free.data.corpora"][1], f"{NOWHERE}/SpokenCOCO_train.json"),
    ("unimodal_free.bench.caption_groups", CLIS["unimodal_free.bench.caption_groups"][1], NOWHERE),
]


def run_cli(name: str, args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(CLIS[name][0] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def assert_usage_error(proc: subprocess.CompletedProcess, names: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], proc.stderr


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow]) for n in sorted(CLIS)])
def test_bad_flag_exits_2_with_one_line(name, tmp_path):
    assert_usage_error(run_cli(name, CLIS[name][1] + ["--no-such-flag"], cwd=tmp_path), "--no-such-flag")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST_SET else [pytest.mark.slow])
                                  for n in sorted(n for n, (_, _, takes_set) in CLIS.items() if takes_set)])
def test_bad_set_key_exits_2_with_one_line(name, tmp_path):
    assert_usage_error(run_cli(name, CLIS[name][1] + ["--set", "nosuch.key=1"], cwd=tmp_path), "nosuch: unknown key")


@pytest.mark.slow
@pytest.mark.parametrize("name, args, names", MISSING_INPUTS, ids=[f"{n}:{a[0]}" for n, a, _ in MISSING_INPUTS])
def test_missing_input_exits_2_with_one_line(name, args, names, tmp_path):
    assert_usage_error(run_cli(name, [a.replace("{tmp}", str(tmp_path)) for a in args], cwd=tmp_path), names)


def test_every_cli_is_covered():
    """A new ``__main__`` (or launch script) must join CLIS, so its usage errors are tested too."""
    found = {"launch/" + p.name for p in (ROOT / "launch").glob("*.py")}
    for path in (ROOT / "unimodal_free").rglob("*.py"):
        text = path.read_text()
        if path.name == "__main__.py" or re.search(r'^if __name__ == "__main__":', text, re.M):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.add(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    assert found == set(CLIS)


def test_parser_and_main_wrapper_print_one_line_and_return_2(capsys):
    """The shared helpers every CLI uses (unimodal_free/usage.py), in-process and fast."""
    from unimodal_free.config import load_config
    from unimodal_free.usage import ArgumentParser, UsageError, usage_errors

    parser = ArgumentParser(prog="prog")
    parser.add_argument("--count", type=int, required=True)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--count", "many"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: argument --count: invalid int value: 'many' (see prog --help)"]

    @usage_errors(KeyError)
    def main(argv):
        if argv == ["set"]:
            load_config(None, ["nosuch.key=1"])
        if argv == ["file"]:
            raise UsageError("input x.txt:\n  not found")
        if argv == ["bug"]:
            raise RuntimeError("a bug keeps its traceback")
        return 0

    assert main(["set"]) == 2 and capsys.readouterr().err.startswith("error: nosuch: unknown key (known: data,")
    assert main(["file"]) == 2 and capsys.readouterr().err == "error: input x.txt: not found\n"
    assert main([]) == 0
    with pytest.raises(RuntimeError):
        main(["bug"])


def test_experiments_help_shows_each_experiments_arms_defaults_and_cost():
    """``python -m unimodal_free.experiments --help``: the defaults of the common flags, and for every experiment
    its arms and what training them costs (trainings x the default config's train.max_steps x the default run's
    seconds per step on the 2-core machine; front_end's own measured time)."""
    from unimodal_free.config import CONFIG_DIR, load_config

    proc = run_cli("unimodal_free.experiments", ["--help"])
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps the flags' help
    for default in ("(default: runs/experiments)", "(default: configs/joint.json)", "(default: 2;"):
        assert default in text, default
    steps = load_config(CONFIG_DIR / "joint.json").train.max_steps

    def minutes(trainings: int) -> str:
        return f"about {trainings * steps * (5 * 60 + 28) / 540 / 60:.0f} min"

    for name, arms in {
        "sharing": "separate + align; shared, data2vec only; separate, data2vec only; shared + align (joint)",
        "depth": "shared + align (joint); shared, data2vec only",
        "emergent": "full triples (control); no image+speech pair",
        "pairing": "100%; 30%; 10%; 3%",
    }.items():
        trainings = arms.count(";") + 1
        block = text.split(f" {name}: ", 1)[1]
        assert block.split(" cost: ")[0].endswith(f"arms: {arms}"), block[:300]
        assert block.split(" cost: ")[1].startswith(
            f"{trainings} trainings x {steps} steps (train.max_steps) = {minutes(trainings)} (0.61 s a step on 2 CPU "
            "ranks)"), block[:400]
    assert "arms: perceiver; perceiver+summary; bag cost: 3 supervised trainings in this process, 300 steps" in text
    assert "540 steps in 5 min 28 s on 2 gloo ranks" in text
