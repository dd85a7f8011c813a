"""Experiment 1, emergent alignment: does speech<->image retrieval appear when no training sample joins
speech with image, only each of them with text?

Arms (same steps, same rows per step): ``joint``, the base config on its train sources (the demo: 2000
image+speech+text triples); ``drop-image+speech``, the same sources rewritten by
``python -m unimodal_free.data.rewriting.pairing SRC DST --drop image+speech`` (each triple -> an image+text and
a speech+text sample, so every image and recording is kept and the caption is seen twice). Both are
evaluated in all six directions on the held-out triples (the demo's 256 by default).
"""

from __future__ import annotations

import json

from unimodal_free.experiments.corpora import Corpus, paired_corpus
from unimodal_free.experiments.results import DIRECTIONS, arrow, markdown, metric, pct, seconds
from unimodal_free.experiments.runner import Arm, train_and_evaluate

ABOUT = "speech<->image retrieval without any speech+image training pair (pairs only through text) vs full triples"
CONTROL = Arm("joint", label="full triples (control)")
DROPPED = "no image+speech pair"  # the other arm's title (its corpus is written on first use: see arms)
ARM_TITLES = [CONTROL.title(), DROPPED]  # for --help


def cells(results: dict, direction: str) -> list[str]:
    """R@1, R@10 (%) and median rank of one arm in one direction."""
    median = metric(results, direction, "median_rank")
    return [pct(metric(results, direction, "R@1")), pct(metric(results, direction, "R@10")),
            "-" if median is None else f"{median:g}"]


def arms(ctx) -> tuple[list[Arm], Corpus]:
    """The control and the arm without image+speech pairs (its corpus written on first use)."""
    corpus = paired_corpus(ctx, "drop-image+speech", drop=["image+speech"])
    return [CONTROL, Arm("drop-image+speech", (corpus.override,), label=DROPPED)], corpus


def run(ctx) -> str:
    planned, corpus = arms(ctx)
    done = train_and_evaluate(ctx, planned)
    header = ["direction", "chance R@1 / R@10"] + [
        f"{d.arm.title()} {what}" for d in done for what in ("R@1", "R@10", "median rank")]
    rows = [[arrow(direction), " / ".join(pct(metric(done[0].results, direction, f"chance_R@{k}")) for k in (1, 10))]
            + [c for d in done for c in cells(d.results, direction)]
            for direction in DIRECTIONS]
    queries = metric(done[0].results, "speech_to_image", "num_queries")
    kinds = ", ".join(f"{k} {n}" for s in corpus.stamps for k, n in sorted(s["kinds"].items()))
    notes = [
        f"Held-out retrieval (teacher, R@k in %) over {queries:.0f} held-out triples; base config {ctx.config}, "
        f"ranks {ctx.ranks}, overrides {list(ctx.common) or 'none'}.",
        f"Training corpus of the drop arm: {kinds} (from {corpus.count('read')} samples, seed "
        f"{corpus.stamps[0]['seed']}).",
        "Training wall time (s): " + ", ".join(f"{d.arm.name} {seconds(d.wall_s)}" for d in done) + ".",
    ]
    (ctx.root / "emergent.json").write_text(json.dumps(
        {d.arm.name: {"run_dir": str(d.run_dir), "wall_s": d.wall_s, "results": d.results} for d in done},
        indent=1, sort_keys=True))
    return markdown(header, rows) + "\n" + "\n".join(notes) + "\n"
