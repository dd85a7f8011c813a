"""The consolidated export: student + teacher of a real (tiny) model in one safetensors file,
read back without pickle by load_weights, into a freshly built model of the recorded config."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from unimodal_free.config import config_to_dict
from unimodal_free.model import EMATeacher, build_model
from unimodal_free.train.ds_compat import lift_zero_dim_params, load_into, model_shapes
from unimodal_free.store.export import EXPORT_NAME, save_export
from unimodal_free.store.weights import load_weights
from unimodal_free.train.zero_gather import gathered_state_dict

from synthetic_batches import tiny_config, tiny_specs

TOKENIZER = {"kind": "sentencepiece", "path": "/data/tok.model", "sha256": "ab" * 32}


def _student_and_teacher():
    cfg = tiny_config("train.max_steps=3")
    torch.manual_seed(0)
    student = build_model(cfg.model, cfg.objective, tiny_specs(cfg))
    teacher = EMATeacher(student, cfg.objective)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.01)  # the student moved away from its EMA teacher
    return cfg, student, teacher


def test_export_round_trip_without_pickle(tmp_path):
    cfg, student, teacher = _student_and_teacher()
    path = save_export(tmp_path / EXPORT_NAME, student.state_dict(), teacher.module.state_dict(), config_to_dict(cfg), TOKENIZER, 3)
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: no pickle anywhere
        keys = set(f.keys())
        meta = f.metadata()
    assert {k.split(".", 1)[0] for k in keys} == {"student", "teacher"}
    assert json.loads(meta["config"]) == json.loads(json.dumps(config_to_dict(cfg)))
    assert json.loads(meta["tokenizer"]) == TOKENIZER and meta["step"] == "3"

    for source in (path, tmp_path):  # the file, or a run dir that has only the export
        w = load_weights(source)
        assert w.cfg == cfg and w.tokenizer_ref == TOKENIZER and w.step == 3
        fresh = build_model(w.cfg.model, w.cfg.objective, tiny_specs(w.cfg))
        fresh.load_state_dict(w.student)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), student.state_dict().values()))
        fresh.load_state_dict(w.teacher)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), teacher.module.state_dict().values()))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write cleaned up


def test_zero_dim_parameters_leave_the_trainer_in_model_shape(tmp_path):
    """The engine trains 0-dim parameters as (1,) (DeepSpeed 0.19.8); exports and checkpoints use model shapes."""
    cfg, student, teacher = _student_and_teacher()
    zero_dim = {n for n, p in student.named_parameters() if p.dim() == 0}
    lifted = lift_zero_dim_params(student)
    assert lifted == zero_dim
    assert all(p.dim() > 0 for p in student.parameters())
    sd = model_shapes(gathered_state_dict(student, zero3=False, rank=0), lifted)
    path = save_export(tmp_path / EXPORT_NAME, sd, teacher.module.state_dict(), config_to_dict(cfg), TOKENIZER, 1)
    fresh = build_model(cfg.model, cfg.objective, tiny_specs(cfg))
    fresh.load_state_dict(load_weights(path).student)  # strict: shapes match the model's
    lift_zero_dim_params(fresh)
    load_into(fresh, teacher.module.state_dict())  # model-shaped state into a lifted module


def test_not_an_export_is_refused(tmp_path):
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a unimodal_free export"):
        load_weights(other)
    with pytest.raises(FileNotFoundError, match="neither a complete checkpoint nor model.safetensors"):
        load_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such export file or run directory"):
        load_weights(tmp_path / "missing")
