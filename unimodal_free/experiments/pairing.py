"""Experiment 4, how much pairing is needed: held-out retrieval against the share of training samples
that keep their pairing; the rest are split into single-modality samples (no pair id: no alignment
term), and the data2vec loss trains on every row in all arms.

Share 100% is ``joint`` (the base config on its train sources); the others are the same sources
rewritten by ``python -m unimodal_free.data.rewriting.pairing SRC DST --paired F`` (seeded by train.seed). A
split triple is three single rows, so every arm trains on the same rows per step and the same
images, recordings and captions; only which rows are tied together differs.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from unimodal_free.config import load_config
from unimodal_free.data.loading.loader import make_train_loader
from unimodal_free.data.loading.sources import resolve_sources
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.experiments.corpora import paired_corpus
from unimodal_free.experiments.results import DIRECTIONS, arrow, markdown, mean_metric, metric, pct, seconds
from unimodal_free.experiments.runner import Arm, ArmResult, train_and_evaluate

ABOUT = "held-out retrieval vs the share of paired training samples (100%, 30%, 10%, 3%; the rest unpaired)"
SHARES = (1.0, 0.3, 0.1, 0.03)
PROBE_BATCHES = 20  # training batches read to count pairs per batch


def arm_for(ctx, share: float) -> tuple[Arm, int | None, float]:
    """The arm training with ``share`` of the samples paired, its number of pair ids (None: all) and the
    share of multi-modality samples the seeded draw actually kept paired."""
    if share == 1.0:
        return Arm("joint", label=share_label(share)), None, 1.0
    corpus = paired_corpus(ctx, f"paired-{share:g}", paired=share)
    kept = corpus.count("kept") / max(1, corpus.count("kept") + corpus.count("split"))
    return Arm(f"paired-{share:g}", (corpus.override,), label=share_label(share)), corpus.count("paired_ids"), kept


def share_label(share: float) -> str:
    return f"{100 * share:g}%"


ARM_TITLES = [share_label(share) for share in SHARES]  # for --help


def pairs_per_batch(ctx, arm: Arm, batches: int = PROBE_BATCHES) -> float:
    """Mean number of pairs (pair ids with rows of two or more modalities) in rank 0's first training
    batches of ``arm``: how many positives the alignment loss has per step and rank."""
    cfg = load_config(ctx.config, [*ctx.common, *arm.overrides, "data.num_workers=0"])  # same stream, in-process
    sources = resolve_sources(cfg.data)
    tokenizer = load_tokenizer(sources.tokenizer_spec(cfg.data))
    loader = make_train_loader(cfg.data, cfg.train, sources.train, tokenizer, 0, ctx.ranks)
    total = 0
    try:
        for _, batch in zip(range(batches), loader):
            modalities = collections.defaultdict(set)
            for name, part in batch.parts.items():
                for index in part.pair_index.tolist():
                    if index >= 0:
                        modalities[index].add(name)
            total += sum(len(m) > 1 for m in modalities.values())
    finally:
        loader.close()
    return total / batches


def plot(done: list[ArmResult], shares: list[float], out: Path) -> None:
    """R@1 and R@10 (mean over the six directions, and each direction) against the paired share kept."""
    import matplotlib  # here: heavy, and only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    x = [100 * s for s in shares]
    for ax, k in zip(axes, (1, 10)):
        for direction in DIRECTIONS:
            ax.plot(x, [100 * (metric(d.results, direction, f"R@{k}") or 0) for d in done], lw=0.8, alpha=0.6,
                    marker=".", label=arrow(direction))
        ax.plot(x, [100 * (mean_metric(d.results, f"R@{k}") or 0) for d in done], color="black", lw=2.2,
                marker="o", label="mean of 6")
        ax.plot(x, [100 * (mean_metric(d.results, f"chance_R@{k}") or 0) for d in done], color="grey", ls="--",
                label="chance")
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:.3g}%" for v in x])
        ax.minorticks_off()
        ax.set_xlabel("share of training samples kept paired (rest unpaired)")
        ax.set_ylabel(f"held-out R@{k} (%)")
        ax.set_title(f"R@{k}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def run(ctx) -> str:
    planned = [arm_for(ctx, share) for share in SHARES]
    done = train_and_evaluate(ctx, [arm for arm, _, _ in planned])
    per_batch = [pairs_per_batch(ctx, d.arm) for d in done]
    header = ["paired share (drawn)", "pair ids in training", "pairs per batch", "mean R@1", "mean R@10"] + [
        f"{arrow(d)} R@1" for d in DIRECTIONS] + ["train s"]
    rows = [[f"{d.arm.title()} ({100 * kept:.3g}%)", "all" if pairs is None else pairs, f"{n:.1f}", pct(mean_metric(d.results, "R@1")),
             pct(mean_metric(d.results, "R@10"))] + [pct(metric(d.results, x, "R@1")) for x in DIRECTIONS]
            + [seconds(d.wall_s)] for d, (_, pairs, kept), n in zip(done, planned, per_batch)]
    chance = done[0].results
    notes = [f"Pairs per batch: mean over rank 0's first {PROBE_BATCHES} training batches of pair ids with rows "
             f"of two or more modalities.",
             f"Held-out retrieval (teacher, R@k in %); chance: mean R@1 {pct(mean_metric(chance, 'chance_R@1'))}, "
             f"mean R@10 {pct(mean_metric(chance, 'chance_R@10'))}; base config {ctx.config}, ranks {ctx.ranks}, "
             f"overrides {list(ctx.common) or 'none'}."]
    ctx.root.mkdir(parents=True, exist_ok=True)
    plot(done, [kept for _, _, kept in planned], ctx.root / "pairing.png")
    (ctx.root / "pairing.json").write_text(json.dumps(
        {d.arm.name: {"share": s, "pair_ids": p, "pairs_per_batch": n, "run_dir": str(d.run_dir), "wall_s": d.wall_s,
                      "results": d.results}
         for d, s, (_, p, _), n in zip(done, SHARES, planned, per_batch)}, indent=1, sort_keys=True))
    return markdown(header, rows) + "\n" + "\n".join(notes) + f"\n\nPlot: {ctx.root / 'pairing.png'}\n"
