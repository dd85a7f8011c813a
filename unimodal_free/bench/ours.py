"""Our joint step, as the trainer runs it, without DeepSpeed: what the bench times.

One step = the student task (R masked student views + one teacher pass) + backward
+ grad clipping + the trainer's AdamW step + EMA teacher update (DeepSpeed's
ZeRO-0 engine adds nothing but the clipping on one rank). ``encoder_fwd_bwd`` is the
like-for-like counterpart of a peer's fwd+bwd: embedding + Perceiver encoder on
the full (unmasked) input, mean-square loss on the final latents.
"""

from __future__ import annotations

import contextlib

import torch

from unimodal_free.batch import Batch, modality_specs
from unimodal_free.bench.synthetic import SYNTHETIC_VOCAB
from unimodal_free.config import Config
from unimodal_free.model import EMATeacher
from unimodal_free.objective import Data2VecStudent, LossOutput, make_all_views, step_flops
from unimodal_free.train.optim import build_optimizer


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class OursHarness:
    """Student + EMA teacher + AdamW for ``cfg`` on ``device``; steps on given batches."""

    def __init__(self, cfg: Config, device: torch.device | str = "cpu", precision: str = "fp32", seed: int = 0):
        self.cfg = cfg
        self.device = torch.device(device)
        self.precision = precision
        self.specs = modality_specs(cfg.data, SYNTHETIC_VOCAB)
        torch.manual_seed(seed)
        self.student = Data2VecStudent(cfg.model, cfg.objective, cfg.masking, self.specs).to(self.device).train()
        self.teacher = EMATeacher(self.student, cfg.objective)  # a copy of the student: already on ``device``
        # The trainer's optimizer (AdamW, decay split, non-finite check as under ZeRO 0 fp32).
        self.optimizer = build_optimizer(self.student, cfg.optim, check_finite=True)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0

    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.student.parameters())
        embed = sum(p.numel() for p in self.student.embed.parameters())
        return {"student": total, "teacher": sum(p.numel() for p in self.teacher.module.parameters()),
                "element_embedding": embed}

    def loss(self, batch: Batch, cfg: Config | None = None) -> LossOutput:
        """The student task's LossOutput on ``batch``; ``cfg`` may differ from the build config in num_views."""
        cfg = cfg or self.cfg
        with autocast(self.device, self.precision):
            views = make_all_views(batch, cfg.masking, cfg.objective.num_views, self.generator)
            return self.student(batch, self.teacher.module, self.generator, views=views)

    def train_step(self, batch: Batch, cfg: Config | None = None) -> float:
        """One full joint step; ``cfg`` may differ from the build config in objective fields (num_views)."""
        cfg = cfg or self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        out = self.loss(batch, cfg)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.teacher.update(self.student, self.steps)
        self.steps += 1
        return float(out.loss.detach())

    def encoder_fwd_bwd(self, batch: Batch) -> None:
        """Embedding + encoder on the full input, forward and backward (no masking, no teacher, no optimizer)."""
        for p in self.student.parameters():
            p.grad = None
        with autocast(self.device, self.precision):
            z = self.student.final(batch.parts)  # (B, N, D)
        z.float().pow(2).mean().backward()

    def flops(self, batch: Batch, cfg: Config | None = None) -> dict:
        cfg = cfg or self.cfg
        f = step_flops(cfg.model, cfg.objective, cfg.masking, cfg.data, batch)
        return {"student": float(f["student"]), "teacher": float(f["teacher"])}
