"""Usage errors of every command line: one line ``error: ...`` on stderr and exit code 2.

argparse prints its usage block and an error line (several lines); a config key or a
missing input file raised from ``main`` would print a traceback. Both are the user's
typo, not a bug, so every CLI in the package builds its parser from :class:`ArgumentParser`
and wraps ``main`` in :func:`usage_errors`. Runtime failures keep their own codes
(1, or train's documented 3/4).
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import sys
from typing import Callable, NoReturn, Optional

from unimodal_free.config import ConfigError  # light: the config package imports no torch

EXIT_USAGE = 2


class UsageError(Exception):
    """A bad flag value, input file or option that the user can fix; the message names it."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` with its whitespace (newlines included) folded into one line."""
    return " ".join(str(exc).split())


def report_usage_error(exc: BaseException) -> int:
    """Print ``error: <message>`` (one line) and return the usage exit code."""
    print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
    return EXIT_USAGE


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (``error: ... (see PROG --help)``) and exit code 2."""

    @classmethod
    def from_docstring(cls, prog: str, doc: str) -> "ArgumentParser":
        """A parser whose --help is the module docstring: its first paragraph, then (verbatim) every
        paragraph after the second (the second is the usage line that argparse writes itself)."""
        paragraphs = doc.split("\n\n")
        return cls(prog=prog, description=paragraphs[0], epilog="\n\n".join(paragraphs[2:]),
                   formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str) -> NoReturn:
        print(f"error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)


def usage_errors(*kinds: type[BaseException]) -> Callable:
    """Decorate ``main(argv) -> int``: a ConfigError, UsageError or one of ``kinds`` becomes one line + exit 2."""
    caught = (ConfigError, UsageError, *kinds)

    def wrap(main: Callable[..., Optional[int]]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Optional[list[str]] = None) -> int:
            try:
                return main(argv) or 0
            except caught as exc:
                return report_usage_error(exc)

        return run

    return wrap


def parse_size(s: str) -> int:
    """argparse type of a size in bytes: 500000000, 5e8, 500MB (10**6) or 64MiB (2**20)."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMG]i?B?|B)?\s*", s, re.IGNORECASE)
    try:
        number = float(m.group(1)) if m else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 500000000, 5e8, 500MB)")
    unit = (m.group(2) or "").upper().rstrip("B")
    mult = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}[unit]
    return int(number * mult)
