"""What the experiments read off a run: TensorBoard tails from real event files, recall from a real eval result,
latent-stack parameter share."""

from __future__ import annotations

import math

import torch
from torch.utils.tensorboard import SummaryWriter

from helpers import model_for
from unimodal_free.eval.retrieval import cross_modal_retrieval
from unimodal_free.experiments.measures import latent_stack_share, recall, tail_mean


def test_tail_mean_reads_the_last_logged_points_back_from_tensorboard(tmp_path):
    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(1, 11):
        writer.add_scalar("train/loss/image", float(step), step * 10)
    writer.close()
    assert tail_mean(tmp_path, "train/loss/image") == (6 + 7 + 8 + 9 + 10) / 5
    assert tail_mean(tmp_path, "train/loss/image", points=2) == 9.5
    assert math.isnan(tail_mean(tmp_path, "train/loss/speech"))


def test_recall_reads_a_retrieval_result_and_its_chance():
    ids = torch.arange(4)
    emb = torch.eye(4)
    results = cross_modal_retrieval({"image": emb, "text": emb[[0, 1, 3, 2]]}, {"image": ids, "text": ids},
                                    min_queries=1)
    assert recall(results, "image_to_text") == 0.5  # rows 2 and 3 swapped in text
    assert recall(results, "image_to_text", chance=True) == 0.25
    assert recall(results, "image_to_text", k=5) == 1.0
    assert math.isnan(recall(results, "speech_to_text"))


def test_latent_stack_share_counts_every_stack():
    _, shared = model_for()
    _, separate = model_for("model.latent_stacks=per_modality")
    total, stack = latent_stack_share(shared)
    total3, stack3 = latent_stack_share(separate)
    assert stack3 == 3 * stack and total3 - total == 2 * stack
    assert stack == sum(p.numel() for p in shared.encoder.blocks.parameters())
