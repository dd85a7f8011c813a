"""python -m unimodal_free.experiments NAME: train the arms of one experiment, evaluate them, write its table.

Every module of this package with a ``run(ctx)`` function and a one-line
``ABOUT`` is an experiment; ``run`` returns the experiment's table (markdown),
written to ``<root>/<NAME>.md`` and printed. An experiment with options of its
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
from unimodal_free.config import load_config
from unimodal_free.experiments.runner import ExperimentError
from unimodal_free.usage import ArgumentParser, usage_errors

NOT_EXPERIMENTS = {"runner", "__main__"}


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


def parse_args(argv: Optional[list[str]], names: list[str]) -> argparse.Namespace:
    epilog = "experiments:\n" + "\n".join(f"  {n}: {experiments()[n].ABOUT}" for n in names)
    p = ArgumentParser(prog="python -m unimodal_free.experiments", description=__doc__.split("\n\n")[0],
                                epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=names)
    p.add_argument("--root", default="runs/experiments", help="run folders of the arms and the tables")
    p.add_argument("--config", default="configs/joint.json", help="base config of every arm")
    p.add_argument("--ranks", type=int, default=2, help="DeepSpeed ranks per training (1: one process, no launcher)")
    p.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every arm (e.g. train.max_steps=100)")
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
