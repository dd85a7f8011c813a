"""Rank-0 TensorBoard writer and progress bar; every other rank gets no-ops.

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
from typing import Optional

from tqdm import tqdm


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
        if not self.enabled:
            return
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(Path(run_dir) / "tb"),
                purge_step=start_step + 1,
                flush_secs=10,
            )
        if progress:
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

    def message(self, text: str) -> None:
        """A line for the user that does not break the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

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
