"""Fixtures shared by several test files (plain helper functions: helpers.py)."""

import copy

import pytest
import torch

from helpers import tiny_cfg, tiny_model, write_labelled_shards, write_raw_corpus
from unimodal_free.config import config_to_dict
from unimodal_free.data.reading import tokenizer as tokenizer_cli
from unimodal_free.data.reading.tokenizer import load_tokenizer
from unimodal_free.data.writing import shards as shard_cli
from unimodal_free.store.export import save_export


@pytest.fixture
def one_torch_thread():
    """Featurizing runs one thread per DataLoader worker; in-process tests do the same (2 shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def checkpoint_signing_key(tmp_path_factory):
    """Checkpoints written by the suite (and the trainings it launches) are signed with a key of its own,
    never the user's ~/.config/unimodal_free/checkpoint.key."""
    import os

    KEY_ENV = "UNIMODAL_FREE_CHECKPOINT_KEY"  # unimodal_free.store.signing.KEY_ENV
    path = tmp_path_factory.getbasetemp() / "keys" / "checkpoint.key"
    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(KEY_ENV, None)
    else:
        os.environ[KEY_ENV] = old


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Shards, a sentencepiece tokenizer trained on them, and an export of a tiny model (teacher != student)."""
    root = tmp_path_factory.mktemp("eval_cli")
    manifest, coco = write_raw_corpus(root / "raw")
    assert shard_cli.main(["manifest", str(manifest), str(root / "shards"), "--maxcount", "4"]) == 0
    assert shard_cli.main(["coco", str(coco), str(root / "coco")]) == 0
    shards = [str(root / "shards"), str(root / "coco" / "shard-{000000..000000}.tar")]  # dir + brace pattern
    assert tokenizer_cli.main(["train", "--input", *shards[:1], "--vocab-size", "40", "--output", str(root / "tok")]) == 0
    tok = load_tokenizer(str(root / "tok.model"))
    cfg = tiny_cfg()
    student = tiny_model(cfg, tok)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    export = save_export(root / "model.safetensors", student.state_dict(), teacher.state_dict(), config_to_dict(cfg), tok.reference, 7)
    return {"root": root, "shards": shards, "export": export, "tok": root / "tok.model"}


@pytest.fixture(scope="module")
def labelled(setup, tmp_path_factory):
    """Labelled train (24) and held-out (12) image + caption shards beside ``setup``'s export and tokenizer."""
    root = tmp_path_factory.mktemp("labelled")
    return {"train": write_labelled_shards(root / "train", 24, 0), "heldout": write_labelled_shards(root / "heldout", 12, 1),
            "unlabelled": setup["shards"][0], "export": str(setup["export"]), "tok": str(setup["tok"])}
