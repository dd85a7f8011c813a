"""Matplotlib figures for TensorBoard, drawn on the Agg canvas without pyplot.

A figure is a plain ``matplotlib.figure.Figure``: pyplot's global figure
registry and backend are never touched, so a training process (or a notebook
that imports us) keeps whatever backend it has, and nothing stays open after
the figure is dropped.
"""

from __future__ import annotations

import numpy as np
import torch

# Cosine similarity lives in [-1, 1]: a fixed colour scale, so two steps (or runs) read alike.
SIMILARITY_RANGE = (-1.0, 1.0)
SIMILARITY_CMAP = "RdBu_r"  # diverging: red similar, white orthogonal, blue opposite


def similarity_figure(sims: torch.Tensor, query: str, candidate: str, step: int):
    """(P, P) cosine similarities of P pairs -> a Figure: rows are the pairs' ``query`` rows, columns
    their ``candidate`` rows in the same order, so a model that aligns the two modalities shows a red
    diagonal. The title names the direction and the step, the subtitle the diagonal's and the rest's mean.
    """
    from matplotlib.figure import Figure  # here: matplotlib is heavy, and only a run with a writer draws
    from matplotlib.ticker import MaxNLocator

    m = sims.detach().float().cpu().numpy()  # (P, P)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise ValueError(f"similarity matrix {m.shape}: need (P, P) with P >= 2")
    p = m.shape[0]
    diag = float(np.nanmean(np.diag(m)))
    off = float(np.nanmean(m[~np.eye(p, dtype=bool)]))
    fig = Figure(figsize=(5.6, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(m, cmap=SIMILARITY_CMAP, vmin=SIMILARITY_RANGE[0], vmax=SIMILARITY_RANGE[1],
                      interpolation="nearest", aspect="equal")
    ax.set_title(f"{query} \u2192 {candidate}, step {step}\n"
                 f"{p} pairs: same pair {diag:+.2f}, other pairs {off:+.2f} (mean)", fontsize=10)
    ax.set_ylabel(f"query: {query} (pair index)")
    ax.set_xlabel(f"candidate: {candidate} (pair index)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    fig.colorbar(image, ax=ax, label="cosine similarity", shrink=0.9)
    return fig

