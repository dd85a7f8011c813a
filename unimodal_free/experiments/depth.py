"""Where alignment appears: retrieval and cross-modal CKA after every latent block, student and teacher.

Reuses the sharing experiment's ``joint`` (shared stack + alignment) and
``shared-d2v`` (shared stack, data2vec alone) runs. Levels: see
:mod:`unimodal_free.experiments.blockwise`. One table per run and one plot
per run (``<root>/depth-<arm>.png``).
"""

from __future__ import annotations

from pathlib import Path

from unimodal_free.experiments.blockwise import PAIRS, blockwise
from unimodal_free.experiments.measures import fmt, recall
from unimodal_free.experiments.results import DIRECTIONS
from unimodal_free.experiments.runner import train_arm
from unimodal_free.experiments.sharing import ARMS

ABOUT = "per latent block (student and teacher): retrieval R@1 and cross-modal linear CKA, aligned vs data2vec-only"

RUNS = [arm for name in ("joint", "shared-d2v") for arm in ARMS if arm.name == name]
ARM_TITLES = [arm.title() for arm in RUNS]  # for --help
MODELS = ("student", "teacher")


def run(ctx) -> str:
    out = []
    for arm in RUNS:
        run_dir = train_arm(arm, ctx.root, ctx.config, ctx.ranks, ctx.common, ctx.log)
        levels = {which: blockwise(run_dir, which, ctx.heldout) for which in MODELS}
        plot = ctx.root / f"depth-{arm.name}.png"
        draw(levels, f"{arm.title()} ({run_dir})", plot)
        ctx.log(f"{arm.name}: plot written to {plot}")
        out.append(table(arm.title(), levels, plot))
    return "\n".join(out)


def table(title: str, levels: dict, plot: Path) -> str:
    head = (["model", "level"] + [f"R@1 {d.replace('_to_', '->')}" for d in DIRECTIONS]
            + [f"CKA {a}-{b}" for a, b in PAIRS])
    lines = [f"#### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for which, rows in levels.items():
        for level in rows:
            cells = [which, level.name] + [f"{100 * recall(level.retrieval, d):.1f}" for d in DIRECTIONS]
            cells += [f"{fmt(level.cka.get(f'{a}-{b}', float('nan')), 2)} "
                      f"({fmt(level.cka_shuffled.get(f'{a}-{b}', float('nan')), 2)})" for a, b in PAIRS]
            lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(levels.values()))[0].retrieval
    chance = max((recall(first, d, chance=True) for d in DIRECTIONS), default=float("nan"))
    lines += ["", f"R@1 in % (chance {100 * chance:.2f}); CKA (in brackets: pairs broken by shuffling one side); "
              f"plot: `{plot.name}`", ""]
    return "\n".join(lines)


def draw(levels: dict, title: str, path: Path) -> None:
    """Two panels over depth: R@1 per direction and CKA per modality pair; solid student, dashed teacher."""
    import matplotlib  # here: heavy, and only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.get_cmap("tab10")
    for which, style in zip(MODELS, ("-", "--")):
        rows = levels[which]
        x = list(range(len(rows)))
        for i, d in enumerate(DIRECTIONS):
            ax_r.plot(x, [100 * recall(r.retrieval, d) for r in rows], style, marker="o", color=colours(i),
                      label=f"{d.replace('_to_', '->')} ({which})")
        for i, (a, b) in enumerate(PAIRS):
            ax_c.plot(x, [r.cka.get(f"{a}-{b}", float("nan")) for r in rows], style, marker="o", color=colours(i),
                      label=f"{a}-{b} ({which})")
            if which == MODELS[0]:
                ax_c.plot(x, [r.cka_shuffled.get(f"{a}-{b}", float("nan")) for r in rows], ":", color=colours(i),
                          label=f"{a}-{b} pairs shuffled ({which})")
    names = [r.name for r in levels[MODELS[0]]]
    chance = 100 * recall(levels[MODELS[0]][0].retrieval, DIRECTIONS[0], chance=True)
    ax_r.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax_r.set(title="held-out R@1 (%)", xlabel="level", ylabel="R@1 (%)")
    ax_c.set(title="linear CKA between modalities (same samples)", xlabel="level", ylabel="CKA", ylim=(0, 1))
    for ax in (ax_r, ax_c):
        ax.set_xticks(range(len(names)), names)
        ax.grid(alpha=0.3)
    ax_r.legend(fontsize=6, ncol=2)
    ax_c.legend(fontsize=6)
    fig.suptitle(f"{title} (solid: student, dashed: teacher)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
