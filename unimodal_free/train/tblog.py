"""Rank-0 TensorBoard writer, progress bar and text log; every other rank gets no-ops.

Progress: the tqdm bar only where stderr is a terminal (and ``log.progress``);
plain ``step ...`` lines (train/textlog.py) on stdout wherever it is not a
terminal showing the bar (a cluster job's log, a pipe), and always in
``run_dir/log.txt``, which also gets every message. Resuming appends to it.

The x-axis of every scalar is the optimizer step. The writer is opened with
``purge_step`` = first step of this session, so TensorBoard drops events a
killed session logged after its last checkpoint (or, on a fresh start, all
events of a session that died before its first checkpoint): no step appears
twice, none is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, TextIO

from tqdm import tqdm

from unimodal_free.run_dir import RunDir

LOG_NAME = "log.txt"
TB_DIR = "tb"


def config_markdown(config: dict, provenance: dict) -> str:
    """The resolved config as TensorBoard's text tab shows it: the code's version and commit, then a JSON block."""
    commit = provenance.get("git_commit")
    code = f"unimodal_free {provenance.get('version') or '(not installed)'}" + (
        f", git {commit}{' with uncommitted changes' if provenance.get('git_dirty') else ''}" if commit else "")
    return f"{code}\n\n```json\n{json.dumps(config, indent=2, sort_keys=True)}\n```"


class RunLogger:
    def __init__(
        self,
        run_dir: Path,
        rank: int,
        max_steps: int,
        start_step: int,
        tensorboard: bool = True,
        progress: bool = True,
    ):
        self.enabled = rank == 0
        self.writer = None
        self.bar: Optional[tqdm] = None
        self.log_file: Optional[TextIO] = None
        if not self.enabled:
            return
        files = RunDir(run_dir)
        self.log_file = files.open_append(files.root / LOG_NAME)  # line-buffered; never through a link
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # The writer opens its own files: its folder must be a real one with no link inside.
            log_dir = files.makedirs(files.root / TB_DIR)
            files.check_no_links(log_dir)
            self.writer = SummaryWriter(
                log_dir=str(log_dir),
                purge_step=start_step + 1,
                flush_secs=10,
            )
        if progress and sys.stderr.isatty():
            self.bar = tqdm(
                total=max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr
            )

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def figure(self, tag: str, figure, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, figure, global_step=step)

    def text(self, tag: str, markdown: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, markdown, global_step=step)

    def image(self, tag: str, image, step: int, dataformats: str = "CHW") -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, global_step=step, dataformats=dataformats)

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        if self.bar is None:
            return
        self.bar.n = step
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def line(self, text: str) -> None:
        """A plain progress line: log.txt, and stdout unless the bar shows progress on that terminal."""
        if not self.enabled:
            return
        self._to_file(text)
        if self.bar is None or not sys.stdout.isatty():
            print(text, file=sys.stdout, flush=True)

    def message(self, text: str, echo: bool = True) -> None:
        """A line for the user (stderr, without breaking the bar) and log.txt; ``echo=False``: log.txt only
        (a line printed before the logger existed)."""
        if not self.enabled:
            return
        self._to_file(text)
        if not echo:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _to_file(self, text: str) -> None:
        if self.log_file is not None:
            self.log_file.write(text.rstrip("\n") + "\n")

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
