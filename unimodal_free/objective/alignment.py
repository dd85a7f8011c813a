"""Cross-modal alignment loss: symmetric InfoNCE with negatives gathered from other ranks.

Gather contract (chosen so ranks may hold different numbers of pairs):

    gather_fn(t: Tensor (P, C)) -> (all: Tensor (P_total, C), offset: int)

``all`` concatenates every rank's ``t`` in rank order and ``all[offset:offset+P]``
must be the caller's own ``t`` *with its autograd history* (open_clip's
``gather_with_grad=False`` recipe: remote rows are constants, local rows keep
their gradient). ``offset`` is the number of rows on lower ranks; it shifts
the local positives' indices. ``None`` means a single rank: ``(t, 0)``. The
function is called once per modality pair on every rank, also with ``P = 0``,
so a collective implementation never deadlocks. A plain-Tensor return is
accepted only when it has exactly the local rows (offset 0).

Which student latents are pooled (``objective.align_input``): "masked" (the
default) averages the pooled final latents of the R masked views the
data2vec loss already computed: no extra compute. "full" runs the student once
more on the unmasked input, matching what retrieval sees at eval
(``pooled_embedding`` always uses the unmasked input), at the cost of one
extra encoder forward+backward per row: +30% step time at the CPU default
(R=2), measured; on the synthetic tiny task both reached similar retrieval.

The projection head (``model.heads.AlignmentProjection``) is the model's;
this module is the training side: which rows pair up, the all-rank batch
statistics that normalise them (and move the head's running statistics),
and the loss.
"""

from __future__ import annotations

import math

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from unimodal_free.batch import ModalityBatch, split_rows
from unimodal_free.model.heads import AlignmentProjection
from unimodal_free.objective.negative_queue import NegativeQueue


def paired_rows(pair_a: Sequence[int], pair_b: Sequence[int]) -> tuple[list[int], list[int]]:
    """Row indices (ia, ib) of rows of two modalities that share a pair id (>= 0), ordered by (ia, ib).

    On the host pair ids (``ModalityBatch.pairs``): the number of pairs decides shapes, and reading it
    from the device would make the step wait there.
    """
    rows_b: dict[int, list[int]] = {}
    for j, pair in enumerate(pair_b):
        rows_b.setdefault(pair, []).append(j)
    found = [(i, j) for i, pair in enumerate(pair_a) if pair >= 0 for j in rows_b.get(pair, ())]
    return [i for i, _ in found], [j for _, j in found]


@torch.compiler.disable  # host lists: traced, every batch's pair ids would be a new graph under compile
def pair_index_tensors(parts: Mapping[str, ModalityBatch], modalities: list[str],
                       device) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """:func:`paired_rows` of every modality pair (a, b), a before b in ``modalities``, from the rows'
    host pair ids (``ModalityBatch.pairs``), as (P,) long tensors on ``device`` (a host -> device copy, no
    read back); a modality absent from ``parts`` has no rows."""
    out = {}
    for i, a in enumerate(modalities):
        for b in modalities[i + 1:]:
            ia, ib = paired_rows(parts[a].pairs if a in parts else (), parts[b].pairs if b in parts else ())
            out[a, b] = (torch.tensor(ia, dtype=torch.long, device=device),
                         torch.tensor(ib, dtype=torch.long, device=device))
    return out


def _gather(t: torch.Tensor, gather_fn) -> tuple[torch.Tensor, int]:
    if gather_fn is None:
        return t, 0
    out = gather_fn(t)
    if isinstance(out, torch.Tensor):
        if out.shape != t.shape:
            raise ValueError(
                f"gather_fn returned a tensor of shape {tuple(out.shape)} without an offset; "
                f"return (gathered, offset) (see unimodal_free/objective/alignment.py)"
            )
        return out, 0
    gathered, offset = out
    if gathered.shape[1:] != t.shape[1:] or not 0 <= offset <= gathered.shape[0] - t.shape[0]:
        raise ValueError(
            f"gather_fn returned shape {tuple(gathered.shape)} with offset {offset} for local rows {tuple(t.shape)}"
        )
    return gathered, int(offset)


def hard_negative_bias(similarity: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """Additive logit bias (P, P_total) that reweights the negatives of each row by softmax(beta * similarity).

    Robinson et al.'s hard-negative InfoNCE: the negatives' sum becomes
    (P_total - 1) x their exp(beta s)-weighted mean, so beta = 0 gives a bias
    of exactly 0 (plain InfoNCE). The weights are constants (no gradient through
    them), as in the paper's importance-sampling estimate. The positive keeps bias 0.
    """
    if beta == 0 or similarity.shape[1] < 2:
        return torch.zeros_like(similarity)
    positive = torch.zeros_like(similarity, dtype=torch.bool)
    positive[torch.arange(similarity.shape[0], device=similarity.device), labels] = True
    weights = (beta * similarity.detach()).masked_fill(positive, float("-inf")).log_softmax(dim=1)  # (P, P_total)
    return (weights + math.log(similarity.shape[1] - 1)).masked_fill(positive, 0.0)


def info_nce(za: torch.Tensor, zb: torch.Tensor, scale: torch.Tensor, gather_fn=None,
             hard_negatives: float = 0.0, keys: tuple[torch.Tensor, torch.Tensor] | None = None,
             extra_a: torch.Tensor | None = None, extra_b: torch.Tensor | None = None) -> torch.Tensor | None:
    """Symmetric InfoNCE of L2-normalised paired rows za[i] <-> zb[i] (P, A).

    Returns None when no rank has a pair (nothing to learn), else the mean of
    both directions' cross-entropy over the local pairs (0-row locals give 0).
    ``hard_negatives``: beta of :func:`hard_negative_bias` (0: plain InfoNCE).
    ``keys`` (ka, kb) (P, A): what za / zb are scored against instead of each other (MoCo's
    momentum keys: constants); ``extra_a`` / ``extra_b`` (Q, A): more keys of a / b, negatives of
    zb's / za's rows (a :class:`~unimodal_free.objective.negative_queue.NegativeQueue`'s).
    """
    ka, kb = keys if keys is not None else (za, zb)
    both, offset = _gather(torch.cat([ka, kb], dim=1).to(za.dtype), gather_fn)  # (P_total, 2A)
    if both.shape[0] == 0:
        return None
    za_all, zb_all = both.split(za.shape[1], dim=1)  # 2 x (P_total, A)
    labels = torch.arange(za.shape[0], device=za.device) + offset  # (P,)
    # Summed over max(P, 1): a rank without local pairs runs the same ops (giving 0.0), so every rank
    # builds the same graph and meets ZeRO-3's and the statistics' backward collectives in the same order.
    sim_ab, sim_ba = za @ zb_all.T, zb @ za_all.T  # cosine similarities (P, P_total)
    if extra_b is not None:
        sim_ab = torch.cat([sim_ab, za @ extra_b.to(za.dtype).T], dim=1)  # (P, P_total + Q)
    if extra_a is not None:
        sim_ba = torch.cat([sim_ba, zb @ extra_a.to(zb.dtype).T], dim=1)  # (P, P_total + Q)
    logits_ab, logits_ba = scale * sim_ab, scale * sim_ba
    if hard_negatives:  # plain InfoNCE adds nothing: no bias tensor on the step's path
        logits_ab = logits_ab + hard_negative_bias(sim_ab, labels, hard_negatives)
        logits_ba = logits_ba + hard_negative_bias(sim_ba, labels, hard_negatives)
    loss_ab = F.cross_entropy(logits_ab, labels, reduction="sum")
    loss_ba = F.cross_entropy(logits_ba, labels, reduction="sum")
    return (loss_ab + loss_ba) / (2 * max(za.shape[0], 1))


def batch_moments(head: AlignmentProjection, pooled: dict[str, torch.Tensor], modalities: list[str],
                  sum_fn=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-modality (mean, biased var) (D,) over every rank's rows; moves ``head``'s running statistics.

    SyncBatchNorm's numbers: one ``sum_fn`` call (a differentiable
    all-reduce SUM over ranks, None on one rank) carries every modality's
    (count, sum, sum of squares), in float64 so the one-pass variance does
    not cancel. With per-rank statistics the rows of one rank (which hold
    each other's positives) would share a normalisation that remote
    negatives do not: a shortcut InfoNCE can learn (MoCo's BN leak).
    Every rank calls ``sum_fn`` once, whatever its modalities. Only local
    modalities get an entry; for one with fewer than two rows over all
    ranks that entry is the running statistics (as for retrieval).
    """
    dim = head.proj.in_features
    rows = []
    for m in modalities:
        x = pooled.get(m)
        if x is None:  # (zero rows still take the ops below: the same graph on every rank)
            rows.append(torch.zeros(1 + 2 * dim, dtype=torch.float64, device=head.proj.weight.device))
        else:
            x = x.double()
            rows.append(torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), (x * x).sum(0)]))
    stats = torch.stack(rows)  # (K, 1 + 2D): count, sum, sum of squares per modality
    if sum_fn is not None:
        stats = sum_fn(stats)
    moments = {}
    for m, row in zip(modalities, stats):
        # Decided on the device (no host read: a sync per step, and a graph break under torch.compile):
        # with fewer than two rows over all ranks the running statistics stand in and do not move.
        n = row[0]
        ok = n >= 2
        n_safe = torch.where(ok, n, torch.full_like(n, 2.0))  # finite values and gradients on both branches
        mean = row[1 : 1 + dim] / n_safe  # (D,)
        var = (row[1 + dim :] / n_safe - mean * mean).clamp_min(0.0)  # (D,) biased, as BatchNorm normalises
        norm = getattr(head, f"norm_{m}")
        with torch.no_grad():  # BatchNorm's running update (unbiased variance), weight 0 without a batch
            weight = ok.to(norm.running_mean.dtype) * norm.momentum
            norm.running_mean.lerp_(mean.detach().to(norm.running_mean.dtype), weight)
            norm.running_var.lerp_((var.detach() * n_safe / (n_safe - 1)).to(norm.running_var.dtype), weight)
        if m in pooled:  # the running statistics move on every rank alike, with rows here or not
            moments[m] = (torch.where(ok, mean.float(), norm.running_mean.float()),
                          torch.where(ok, var.float(), norm.running_var.float()))
    return moments


def alignment_loss(head: AlignmentProjection, pooled: dict[str, torch.Tensor],
                   pair_rows: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]], modalities: list[str],
                   gather_fn=None, sum_fn=None, hard_negatives: float = 0.0,
                   queue: NegativeQueue | None = None, keys: dict[str, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """pooled[m] (B_m, D), pair_rows[a, b] (:func:`pair_index_tensors`) -> (loss, logit scale), summed
    over every modality pair.

    ``modalities`` is the model's full, fixed modality list: every pair of
    it is visited in the same order on every rank (with empty tensors where
    a modality or its pairs are absent), so ``gather_fn`` collectives match.
    ``sum_fn``: see :func:`batch_moments` (training mode only; in eval mode
    the head normalises with its running statistics).
    ``keys`` {m: (B_m, A)} (:func:`momentum_keys`): every row is scored against the paired rows'
    keys instead of their student projections. ``queue`` (with ``keys``, training mode only): its
    rows are more keys, negatives of every pair; every modality's keys of all ranks are pushed
    into it after the loss (a row is never its own negative).
    """
    memory = queue if head.training and keys is not None else None
    moments = batch_moments(head, pooled, modalities, sum_fn) if head.training else {}
    # Every modality is projected, zero rows where absent: proj runs as often on every rank (ZeRO-3).
    ref = next(iter(pooled.values()))
    pooled = {m: pooled[m] if m in pooled else ref.new_zeros(0, ref.shape[1]) for m in modalities}
    z, scale = head(pooled, moments)  # {m: (B_m, A)}, ()
    total, count = scale * 0.0, 0
    for i, a in enumerate(modalities):
        for b in modalities[i + 1:]:
            ia, ib = pair_rows[a, b]
            za, zb = z[a][ia], z[b][ib]  # (P, A)
            pair_keys = (keys[a][ia], keys[b][ib]) if keys is not None else None  # (P, A) each
            extra_a, extra_b = (memory.negatives(a), memory.negatives(b)) if memory is not None else (None, None)
            loss = info_nce(za, zb, scale, gather_fn, hard_negatives, pair_keys, extra_a, extra_b)
            if loss is not None:
                total = total + loss * za.shape[0]
                count += za.shape[0]
    # Exactly 0.0 through the projection: it gets a gradient even on a rank without pairs (see Data2VecStudent).
    total = total + sum(zm[:0].sum() for zm in z.values())
    if memory is not None:  # every rank gathers every modality in the same order (zero rows where absent)
        for m in modalities:
            memory.push(m, _gather(keys[m], gather_fn)[0])
    return total / max(count, 1), scale.detach()


@torch.no_grad()
def momentum_keys(teacher, final_latents: torch.Tensor, parts: Mapping[str, ModalityBatch], modalities: list[str]
                  ) -> dict[str, torch.Tensor]:
    """The EMA teacher's retrieval embeddings of the full input (MoCo's keys): per modality (B_m, A),
    L2-normalised; 0 rows for a modality absent from ``parts``.

    ``final_latents`` (sum B_m, N, D): the teacher's last latent block of its one pass. Normalised
    with the teacher head's running statistics (the student's, copied at every EMA update).
    """
    pooled = split_rows(teacher.norm(final_latents).mean(1), parts)  # (sum B_m, D) -> {m: (B_m, D)}
    dim = teacher.align.proj.out_features
    return {m: F.normalize(teacher.align.embed(m, pooled[m]).float(), dim=-1) if m in pooled
            else final_latents.new_zeros(0, dim, dtype=torch.float32) for m in modalities}
