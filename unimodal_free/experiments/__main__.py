"""python -m unimodal_free.experiments NAME: train the arms of one experiment, evaluate them, write its table.

Every module of this package with a ``run(ctx)`` function and a one-line
``ABOUT`` is an experiment; ``run`` returns the experiment's table (markdown),
written to ``<root>/<NAME>.md`` and printed. Its ``ARM_TITLES`` name its arms
in ``--help``, which prices them as trainer runs of the default config (or
quotes the module's ``COST``, when its arms are not). An experiment with options of its
own defines ``add_options(group)`` (argparse arguments); their values reach it
as ``ctx.options`` (a dict by dest), and giving one to another experiment is a
usage error.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import unimodal_free.experiments as package
from unimodal_free.config import CONFIG_DIR, load_config
from unimodal_free.experiments.runner import ExperimentError
from unimodal_free.usage import ArgumentParser, usage_errors

NOT_EXPERIMENTS = {"runner", "__main__"}
DEFAULT_CONFIG = "configs/joint.json"
# The default run (configs/joint.json, 540 steps) took 5 min 28 s of trainer wall on 2 gloo CPU ranks of the 2-core
# reference machine (the trainer's end line): what one step of an arm costs there, its evals included, the launch not.
SECONDS_PER_STEP = (5 * 60 + 28) / 540


@dataclass
class Context:
    """What every experiment gets from the command line."""

    root: Path  # run folders of the arms, and the tables
    config: str  # base config of every arm
    ranks: int  # DeepSpeed ranks per training (GPUs; gloo CPU ranks here)
    common: tuple[str, ...] = ()  # --set overrides for every arm (e.g. train.max_steps=100 for a smoke run)
    heldout: Optional[list[str]] = None  # held-out shards (default: each run's own held-out split)
    options: dict = field(default_factory=dict)  # the experiment's own options (add_options), by dest
    log: Callable[[str], None] = field(default=print)


def experiments() -> dict[str, object]:
    found = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in NOT_EXPERIMENTS:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if callable(getattr(module, "run", None)) and hasattr(module, "ABOUT"):
            found[info.name] = module
    return found


def cost(module, steps: int) -> str:
    """What an experiment's arms cost with the default config: its own measured ``COST``, else trainings x steps x
    the default run's seconds per step."""
    if hasattr(module, "COST"):
        return module.COST
    n = len(module.ARM_TITLES)
    minutes = n * steps * SECONDS_PER_STEP / 60
    return (f"{n} trainings x {steps} steps (train.max_steps) = about {minutes:.0f} min "
            f"({SECONDS_PER_STEP:.2f} s a step on 2 CPU ranks)")


def experiments_help(names: list[str]) -> str:
    """--help's list: each experiment, its arms and what they cost to train."""
    steps = load_config(CONFIG_DIR / "joint.json").train.max_steps  # the shipped copy of DEFAULT_CONFIG
    lines = ["experiments (arms, and their cost with the default --config):"]
    for name in names:
        module = experiments()[name]
        lines += [f"  {name}: {module.ABOUT}", f"      arms: {'; '.join(module.ARM_TITLES)}",
                  f"      cost: {cost(module, steps)}"]
    return "\n".join(lines + [
        "",
        "Times are of the 2-core CPU machine the default run was measured on (540 steps in 5 min 28 s on 2 gloo",
        "ranks); --set train.max_steps=N scales a training's. An arm already trained under --root by the same",
        "command is reused, not retrained: the joint arm (the default config as it is) serves depth, emergent,",
        "pairing and sharing.",
    ])


def parse_args(argv: Optional[list[str]], names: list[str]) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m unimodal_free.experiments", description=__doc__.split("\n\n")[0],
                                epilog=experiments_help(names), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=names)
    p.add_argument("--root", default="runs/experiments",
                   help="run folders of the arms and the tables (default: runs/experiments)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"base config of every arm (default: {DEFAULT_CONFIG})")
    p.add_argument("--ranks", type=int, default=2,
                   help="DeepSpeed ranks per training (default: 2; 1: one process, no launcher)")
    p.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every arm (e.g. train.max_steps=100; default: none)")
    p.add_argument("--heldout", nargs="+", default=None, help="held-out shards (default: each run's own split)")
    owned = {name: experiment_options(p, name) for name in names}
    args = p.parse_args(argv)
    if args.ranks < 1:
        p.error(f"--ranks: must be >= 1, got {args.ranks}")
    for name, actions in owned.items():
        given = [a for a in actions if getattr(args, a.dest) != a.default]
        if name != args.name and given:
            p.error(f"{given[0].option_strings[0]}: an option of the {name} experiment, not of {args.name}")
    args.options = {a.dest: getattr(args, a.dest) for a in owned.get(args.name, [])}
    return args


def experiment_options(p: argparse.ArgumentParser, name: str) -> list[argparse.Action]:
    """The arguments an experiment's ``add_options`` adds to ``p`` (in a help group of their own)."""
    add = getattr(experiments()[name], "add_options", None)
    if add is None:
        return []
    group = p.add_argument_group(f"options of {name}")
    add(group)
    return list(group._group_actions)


@usage_errors(ExperimentError)
def main(argv: Optional[list[str]] = None) -> int:
    found = experiments()
    args = parse_args(argv, sorted(found))
    load_config(args.config, args.common)  # a bad --config or --set fails here, before any arm trains
    ctx = Context(root=Path(args.root), config=args.config, ranks=args.ranks, common=tuple(args.common),
                  heldout=args.heldout, options=args.options)
    table = found[args.name].run(ctx)
    ctx.root.mkdir(parents=True, exist_ok=True)
    out = ctx.root / f"{args.name}.md"
    out.write_text(table)
    print(table)
    print(f"table written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
