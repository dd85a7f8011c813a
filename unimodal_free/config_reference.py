"""docs/CONFIG.md, generated from the ``option(...)`` declarations in :mod:`unimodal_free.config.sections`.

    python -m unimodal_free.config_reference > docs/CONFIG.md

The declarations are the one source of every key's default, rule, resume rule and help
text; ``tests/test_repository.py::test_config_reference_is_current`` fails when the committed file differs from this
output, so the reference cannot go stale.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from typing import Any, Iterator, Optional

from unimodal_free.config import Config, Source
from unimodal_free.config.budget import MAX_ACTIVATION_BYTES, MAX_PARAMETERS
from unimodal_free.usage import ArgumentParser, usage_errors

COMMAND = "python -m unimodal_free.config_reference > docs/CONFIG.md"


def type_text(tp: Any) -> str:
    """A field annotation as a reader of JSON sees it: ``list[int]`` -> "list of int"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return "object" if args[1] is Any else f"object of {type_text(args[1])}"
    if tp is Source:
        return "source"
    return getattr(tp, "__name__", str(tp))


def default_text(f: dataclasses.Field) -> str:
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return json.dumps(value)


def fixed_text(fixed: Any) -> str:
    return "partly" if callable(fixed) else "yes" if fixed else ""


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def section(cls: type, prefix: str) -> Iterator[str]:
    """One table: a row per option of dataclass ``cls``, dotted under ``prefix``."""
    yield " ".join((cls.__doc__ or "").split())
    yield ""
    yield "| key | default | type | accepts | fixed on resume | description |"
    yield "|---|---|---|---|---|---|"
    yield from rows(cls, prefix)
    yield ""


def rows(cls: type, prefix: str) -> Iterator[str]:
    """A row per option of ``cls``; a nested section's options follow as rows of their own (``data.image_augment.*``)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if dataclasses.is_dataclass(hints[f.name]):
            yield from rows(hints[f.name], f"{prefix}{f.name}.")
            continue
        yield (f"| `{prefix}{f.name}` | `{cell(default_text(f))}` | {type_text(hints[f.name])} | "
               f"{cell(meta['rule'].text)} | {fixed_text(meta['fixed'])} | {cell(meta['help'])} |")


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the `option(...)` declarations in `unimodal_free/config/sections.py` by `{COMMAND}`; "
        "do not edit by hand (`tests/test_repository.py` fails when this file is stale).",
        "",
        "A run's config is these defaults, replaced by a JSON file (`--config configs/joint.json`) and then by "
        "dotted overrides (`--set optim.lr=3e-4`, the value parsed as JSON when it can be). "
        "`launch/train.py --config X --set ... --print-config` prints the resolved config as JSON and exits. "
        "An unknown key, a wrong type or a value outside *accepts* stops the run before any process starts, "
        "with exit code 2 and one line naming the dotted key. *fixed on resume*: the key cannot change when "
        "a run resumes from a checkpoint (*partly*: see the description). The shipped configs are in "
        "`unimodal_free/configs/` (`configs/` in a checkout).",
        "",
        "**Bounds and budgets.** Every integer key has an upper bound (*accepts*), far above any real run, so "
        "a config from anyone (a `--set`, a model folder's `config.json`, an export's metadata) is refused "
        "before anything is built from it. Together the keys must also fit two budgets, computed from the "
        f"numbers alone in `unimodal_free/config/budget.py`: at most {MAX_PARAMETERS:.0e} model parameters "
        "(counted exactly, the text embedding with the tokenizer's vocabulary once it is known; a "
        "1B-parameter model passes) and at most "
        f"{MAX_ACTIVATION_BYTES >> 40} TiB of activations per micro-batch (an upper estimate: fp32, every row "
        "in `objective.num_views` views plus the teacher pass, through the cross-attention over its most "
        "elements and every latent block). Training checks them before any process starts; "
        "`unimodal_free.load`, eval and query before any weight is read or tensor allocated.",
        "",
    ]
    for f in dataclasses.fields(Config):
        lines += [f"## `{f.name}`", "", *section(f.default_factory, f"{f.name}.")]
    lines += [
        "## Sources (`data.train[]`, `data.heldout[]`)",
        "",
        "Each item of `data.train` and `data.heldout` is a path string (weight 1) or an object:",
        "",
        *section(Source, ""),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


@usage_errors()
def main(argv: Optional[list[str]] = None) -> int:
    ArgumentParser(prog="python -m unimodal_free.config_reference", description=__doc__.split("\n")[0]).parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
