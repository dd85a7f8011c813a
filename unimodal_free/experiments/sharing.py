"""Shared vs separate latent stacks: what does one latent stack for every modality add?

Four arms, everything else equal (``model.latent_stacks`` changes only the
latent blocks: the latent array, cross-attention, embedding, predictor and
alignment head stay shared; separate stacks keep the width, so the same
FLOPs per sample and num-modalities x the latent-stack parameters):

    joint              shared stack, data2vec + alignment (configs/joint.json as it is: the control)
    per-modality       one stack per modality, data2vec + alignment
    shared-d2v         shared stack, data2vec alone (objective.align_weight=0)
    per-modality-d2v   one stack per modality, data2vec alone

Table: parameters, the data2vec loss per modality (mean of the last logged
points), held-out retrieval R@1 per direction (teacher; through the alignment
head when the arm has one, else the pooled latents, as ``evaluate`` does),
and linear CKA between the modalities' pooled final latents (see ``depth``).
"""

from __future__ import annotations

from unimodal_free.config import alignment_on
from unimodal_free.modalities import MODALITIES
from unimodal_free.experiments.blockwise import PAIRS, blockwise
from unimodal_free.experiments.measures import TAIL_POINTS, fmt, latent_stack_share, recall, tail_mean
from unimodal_free.experiments.results import DIRECTIONS, seconds
from unimodal_free.experiments.runner import Arm, evaluate_arm, load_trained, train_arm, train_seconds

ABOUT = "shared vs per-modality latent stacks, with and without alignment: data2vec loss and retrieval"

SEPARATE = "model.latent_stacks=per_modality"
DATA2VEC_ONLY = "objective.align_weight=0"
ARMS = [
    Arm("per-modality", (SEPARATE,), "separate + align"),
    Arm("shared-d2v", (DATA2VEC_ONLY,), "shared, data2vec only"),
    Arm("per-modality-d2v", (SEPARATE, DATA2VEC_ONLY), "separate, data2vec only"),
    Arm("joint", (), "shared + align (joint)"),  # last: another experiment may be training it already
]
ARM_TITLES = [arm.title() for arm in ARMS]  # for --help


def run(ctx) -> str:
    rows = []
    for arm in ARMS:
        run_dir = train_arm(arm, ctx.root, ctx.config, ctx.ranks, ctx.common, ctx.log)
        model, cfg, _ = load_trained(run_dir, "teacher")
        total, stack = latent_stack_share(model)
        results = evaluate_arm(run_dir, ctx.heldout)
        final = next(level for level in blockwise(run_dir, "teacher", ctx.heldout) if level.name == "final")
        rows.append((arm, cfg, total, stack, run_dir, results, final.cka))
    return table(rows)


def table(rows) -> str:
    head = (["arm", "latent stacks", "align", "params (M)", "latent-stack params (M)", "train s"]
            + [f"d2v loss {m}" for m in MODALITIES] + ["align loss"]
            + [f"R@1 {d.replace('_to_', '->')}" for d in DIRECTIONS]
            + ["R@10 mean"] + [f"CKA {a}-{b}" for a, b in PAIRS])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, cfg, total, stack, run_dir, results, cka in rows:
        cells = [arm.title(), cfg.model.latent_stacks, "yes" if alignment_on(cfg.objective) else "no",
                 f"{total / 1e6:.2f}", f"{stack / 1e6:.2f}", seconds(train_seconds(run_dir))]
        cells += [fmt(tail_mean(run_dir, f"train/loss/{m}")) for m in MODALITIES]
        cells.append(fmt(tail_mean(run_dir, "train/align_loss")) if alignment_on(cfg.objective) else "-")
        cells += [f"{100 * recall(results, d):.1f}" for d in DIRECTIONS]
        cells.append(f"{100 * sum(recall(results, d, 10) for d in DIRECTIONS) / len(DIRECTIONS):.1f}")
        cells += [fmt(cka.get(f"{a}-{b}", float("nan")), 2) for a, b in PAIRS]
        lines.append("| " + " | ".join(cells) + " |")
    cfg, results = rows[0][1], rows[0][5]
    chance = ", ".join(f"{d.replace('_to_', '->')} {100 * recall(results, d, chance=True):.2f}" for d in DIRECTIONS)
    chance10 = 100 * recall(results, DIRECTIONS[0], 10, chance=True)
    n = max(int(r.get("num_queries", 0)) for r in results.values()) if results else 0
    lines += ["", f"seed {cfg.train.seed}; {cfg.train.max_steps} steps; held-out queries per direction: {n}; "
              f"R@k in %, R@1 chance: {chance}; R@10 mean over the six directions (chance {chance10:.1f}). "
              f"Losses: mean of the last {TAIL_POINTS} logged `train/loss/{{m}}` and `train/align_loss` points (every "
              f"{cfg.train.log_every} steps); each arm regresses its own teacher's targets. CKA: linear CKA "
              f"between the modalities' pooled final latents (no head) of the same held-out samples, teacher."]
    return "\n".join(lines) + "\n"
