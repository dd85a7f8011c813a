"""Hostile files handed to the command lines and to ``unimodal_free.load``: links to devices, FIFOs, sparse
gigabytes, a million lines, non-UTF-8 names, JSON nested 100000 deep, empty shards.

Each is refused in one line naming the file (and the limit, where size is the attack) or skipped and
counted, within a timeout (a FIFO opened without O_NONBLOCK would hang) and, where memory was the attack,
under 1 GB peak RSS for the whole command (``helpers.run_measured``: a watchdog kills it at 1.5 GB).
Sparse files (``truncate``) stand in for gigabytes that occupy no disk.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from helpers import good_sample, png, run_measured, write_tar
from unimodal_free.data.reading.tokenizer import MAX_LINE_BYTES, load_tokenizer
from unimodal_free.embedder import MAX_CAPTION_FILE_BYTES, MAX_CAPTION_FILE_LINES
from unimodal_free.store.checkpoints import MAX_METADATA_BYTES, MAX_POINTER_BYTES, CheckpointError, tag_for
from unimodal_free.store.model_folder import MAX_CONFIG_BYTES, MODEL_FORMAT
from unimodal_free.store.weights import load_weights

PEAK_MB = 1024
GIB = 1 << 30
PY = sys.executable


def sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def dev_zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


def one_error(m, expected: str) -> None:
    """Exit 2 with exactly one stderr line, ``error: <expected>``, under the memory limit, in time."""
    assert not m.killed, (m.killed, m.peak_mb, m.err[-2000:])
    assert m.rc == 2 and m.err_lines() == [f"error: {expected}"], (m.rc, m.err[-2000:])
    assert m.peak_mb < PEAK_MB, m.peak_mb


def run_dir_with_export(setup, base: Path) -> Path:
    """A run directory as eval and query read it: the final export and nothing else yet."""
    base.mkdir(parents=True)
    shutil.copy(setup["export"], base / "model.safetensors")
    return base


# ---------------------------------------------------------------- metadata: config.json, COMPLETE, latest, trainer_state.json


@pytest.mark.parametrize("cli,attack", [("eval", "dev_zero"), ("query", "sparse")])
def test_eval_and_query_refuse_a_hostile_config_json_in_one_line(setup, tmp_path, cli, attack):
    run = run_dir_with_export(setup, tmp_path / "run")
    config = run / "config.json"
    if attack == "dev_zero":
        dev_zero(config)
        why = "not a regular file"
    else:
        sparse(config, GIB)
        why = f"{GIB} bytes > the {MAX_CONFIG_BYTES}-byte limit (model config)"
    if cli == "eval":
        cmd = [PY, "-m", "unimodal_free.eval", "--checkpoint", str(run), "--data", setup["shards"][0]]
    else:
        cmd = [PY, "-m", "unimodal_free.eval.query", "--checkpoint", str(run), "--text", "a", "b"]
    one_error(run_measured(cmd), f"{config}: {why}")


def test_train_refuses_a_config_file_that_is_a_fifo(tmp_path):
    config = fifo(tmp_path / "shared.json")
    m = run_measured([PY, "launch/train.py", "--config", str(config), "--print-config"], timeout=60)
    one_error(m, f"{config}: not a regular file")


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_load_refuses_a_model_folder_with_a_fifo(setup, tmp_path, name):
    """``unimodal_free.load`` of a model folder whose config.json or weights are a FIFO: one line, no hang."""
    folder = run_dir_with_export(setup, tmp_path / "model")
    (folder / "config.json").write_text(json.dumps({"format": MODEL_FORMAT}))
    (folder / name).unlink()
    fifo(folder / name)
    code = ("import sys, unimodal_free\n"
            "try:\n    unimodal_free.load(sys.argv[1], device='cpu')\n"
            "except ValueError as exc:\n    print(f'error: {exc}', file=sys.stderr)\n    sys.exit(2)\n")
    one_error(run_measured([PY, "-c", code, str(folder)], timeout=60), f"{folder / name}: not a regular file")


def write_checkpoint(setup, run: Path, step: int = 2) -> Path:
    """A checkpoint dir with what eval and resume read first (its consolidation, trainer_state.json), signed."""
    from unimodal_free.store.checkpoints import mark_complete
    from unimodal_free.train.state import TrainerState

    tag_dir = run / "checkpoints" / tag_for(step)
    tag_dir.mkdir(parents=True)
    shutil.copy(setup["export"], tag_dir / "model.safetensors")
    state = TrainerState(step=step, micro_batches=step, world_size=1, tokenizer={"kind": "bytes"})
    (tag_dir / "trainer_state.json").write_text(json.dumps(state.__dict__))
    mark_complete(tag_dir, step)
    return tag_dir


def resume_cmd(run: Path) -> list[str]:
    return [PY, "launch/train.py", "--config", "configs/tiny.json", "--set", f"train.output_dir={run}",
            "--set", "train.resume=auto"]


def test_resume_refuses_a_complete_marker_linked_to_dev_zero(setup, tmp_path):
    run = tmp_path / "run"
    complete = write_checkpoint(setup, run) / "COMPLETE"
    complete.unlink()
    dev_zero(complete)
    # The trainer's pre-flight of its run directory (no link anywhere in it) refuses before anything is read;
    # eval and query, which read a run without writing, meet the bounded reader's refusal (tests below).
    one_error(run_measured(resume_cmd(run)),
              f"{complete}: is a symbolic link; refusing to write through it (remove it, or write elsewhere)")
    m = run_measured([PY, "-m", "unimodal_free.eval", "--checkpoint", str(complete.parent), "--data", setup["shards"][0]])
    assert m.rc == 2 and len(m.err_lines()) == 1 and m.peak_mb < PEAK_MB, (m.rc, m.err[-2000:], m.peak_mb)
    assert m.err_lines()[0].startswith(f"error: {complete}: a symbolic link, refused"), m.err_lines()


def test_resume_refuses_a_sparse_gigabyte_trainer_state_that_complete_vouches_for(setup, tmp_path):
    """COMPLETE need not be signed for a weights-only resume: it can list a 1 GiB trainer_state.json."""
    from unimodal_free.store.checkpoints import mark_complete

    run = tmp_path / "run"
    tag_dir = write_checkpoint(setup, run)
    state = sparse(tag_dir / "trainer_state.json", GIB)
    mark_complete(tag_dir, 2)
    one_error(run_measured(resume_cmd(run)),
              f"{state}: {GIB} bytes > the {MAX_METADATA_BYTES}-byte limit (checkpoint metadata)")


def test_query_reads_a_run_past_a_sparse_gigabyte_latest_pointer(setup, tmp_path):
    """An unusable ``latest`` is ignored (the newest complete checkpoint is found anyway), unread."""
    run = tmp_path / "run"
    tag_dir = write_checkpoint(setup, run)
    sparse(run / "checkpoints" / "latest", GIB)
    m = run_measured([PY, "-m", "unimodal_free.eval.query", "--checkpoint", str(run), "--text", "a red", "a blue"])
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    assert f"checkpoint {run} (step 7" in m.out and m.peak_mb < PEAK_MB, (m.out, m.peak_mb)
    assert GIB > MAX_POINTER_BYTES and tag_dir.is_dir()


# ---------------------------------------------------------------- text files handed to embed() and query


EMBED = ("import sys, unimodal_free\nfrom pathlib import Path\n"
         "model = unimodal_free.load(sys.argv[1], device='cpu')\n"
         "try:\n    print(tuple(model.embed([Path(sys.argv[2])]).shape))\n"
         "except ValueError as exc:\n    print(f'error: {exc}', file=sys.stderr)\n    sys.exit(2)\n")


@pytest.mark.parametrize("attack", ["sparse_2GiB", "million_lines", "fifo"])
def test_embed_refuses_a_hostile_text_file_in_one_line(setup, tmp_path, attack):
    path = tmp_path / "captions.txt"
    if attack == "sparse_2GiB":
        sparse(path, 2 * GIB)
        why = f"{2 * GIB} bytes > the {MAX_CAPTION_FILE_BYTES}-byte limit (caption files)"
    elif attack == "million_lines":
        path.write_bytes(b"a\n" * 1_400_000)  # 2.8 MB: under the byte cap, one row per line
        why = (f"more than {MAX_CAPTION_FILE_LINES} captions, the limit of a caption file "
               "(embed a longer list as strings: embed_texts)")
    else:
        fifo(path)
        why = "not a regular file"
    one_error(run_measured([PY, "-c", EMBED, str(setup["export"]), str(path)], timeout=90), f"{path}: {why}")


def test_embed_still_takes_a_caption_file(setup, tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("a red circle\n\na blue square\n")
    m = run_measured([PY, "-c", EMBED, str(setup["export"]), str(path)], timeout=90)
    assert m.rc == 0 and m.out.strip().startswith("(2, "), m.err[-2000:]


def test_query_refuses_a_million_line_text_file(setup, tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes(b"a\n" * 1_400_000)
    m = run_measured([PY, "-m", "unimodal_free.eval.query", "--checkpoint", str(setup["export"]),
                      "--text", "a", "--file", str(path)])
    one_error(m, f"{path}: more than {MAX_CAPTION_FILE_LINES} captions, the limit of a caption file "
                 "(embed a longer list as strings: embed_texts)")


# ---------------------------------------------------------------- the tokenizer trainer


def test_tokenizer_trainer_steps_over_a_sparse_2gib_input_line_by_line(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("".join(f"a small red circle number {i}\n" for i in range(200)))
    zeros = sparse(tmp_path / "zeros.txt", 2 * GIB)  # one 2 GiB line of NUL bytes
    m = run_measured([PY, "-m", "unimodal_free.data.reading.tokenizer", "train", "--input", str(good), str(zeros),
                      "--vocab-size", "40", "--output", str(tmp_path / "tok")], timeout=180)
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    assert f"tokenizer: skipped {zeros}:1: line longer than {MAX_LINE_BYTES} bytes [1 skipped so far]" in m.err_lines()
    assert m.err_lines()[-1].endswith("from 200 sentences; skipped 1 unreadable"), m.err
    assert m.peak_mb < PEAK_MB, m.peak_mb
    assert load_tokenizer(str(tmp_path / "tok.model")).vocab_size <= 40


def test_tokenizer_trainer_skips_and_counts_bad_samples_and_shards(tmp_path):
    """A non-UTF-8 caption, a non-UTF-8 line, an empty shard and a FIFO are skipped, each in one line."""
    data = tmp_path / "data"
    good = [f"a green square number {i}".encode() for i in range(100)]
    write_tar(data / "a-000000.tar", [(f"s{i:03d}.txt", line) for i, line in enumerate(good[:50])]
              + [("bad.txt", b"caf\xe9")])
    sparse(data / "b-000000.tar", 0)
    (data / "c.txt").write_bytes(b"\n".join(good[50:]) + b"\n\xff\xfe\n")
    fifo(data / "d.txt")
    m = run_measured([PY, "-m", "unimodal_free.data.reading.tokenizer", "train", "--input", str(data),
                      "--vocab-size", "40", "--output", str(tmp_path / "tok")], timeout=120)
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    skips = [line.split(" [")[0] for line in m.err_lines() if line.startswith("tokenizer: skipped")]
    assert skips == [
        f"tokenizer: skipped {data / 'a-000000.tar'}:bad:1: text is not UTF-8 (byte 3: b'\\xe9')",
        f"tokenizer: skipped {data / 'b-000000.tar'} (after 0 samples): shard unreadable: ReadError: empty file",
        f"tokenizer: skipped {data / 'c.txt'}:51: text is not UTF-8 (byte 0: b'\\xff')",
        f"tokenizer: skipped {data / 'd.txt'}: not a regular file",
    ], m.err
    assert m.err_lines()[-1].endswith("from 100 sentences; skipped 4 unreadable"), m.err


# ---------------------------------------------------------------- the shard writer and the pairing tool


def test_shard_writer_skips_fifos_instead_of_hanging(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(png(1))
    (images / "a.txt").write_text("a red square")
    fifo(images / "b.png")  # an image that is a FIFO
    (images / "c.png").write_bytes(png(2))
    fifo(images / "c.txt")  # a caption that is a FIFO
    m = run_measured([PY, "-m", "unimodal_free.data.writing.shards", "images", str(images), str(tmp_path / "out")], timeout=60)
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    assert m.err_lines() == [f"skip {images / 'b.png'}: not a regular file", f"skip {images / 'c.txt'}: not a regular file",
                             f"wrote 1 samples (image+text 1) in 1 shards to {tmp_path / 'out'}; skipped 2 unusable inputs"]

    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("one line\nanother line\n")
    fifo(texts / "b.txt")
    m = run_measured([PY, "-m", "unimodal_free.data.writing.shards", "text", str(texts), str(tmp_path / "out2")], timeout=60)
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    assert m.err_lines() == [f"skip {texts / 'b.txt'}: not a regular file",
                             f"wrote 2 samples (text 2) in 1 shards to {tmp_path / 'out2'}; skipped 1 unusable inputs"]


def test_pairing_skips_and_counts_bad_keys_deep_json_and_empty_shards(tmp_path):
    src = tmp_path / "src"
    good = [good_sample(f"s{i:03d}", i % 3) for i in range(6)]
    members = [(f"{s['__key__']}.{ext}", data) for s in good for ext, data in s.items() if ext != "__key__"]
    write_tar(src / "a-000000.tar", members)
    bad_key = b"k\xff\xfe".decode("utf-8", "surrogateescape")
    write_tar(src / "b-000000.tar", [(f"{bad_key}.txt", b"hello"), (f"{bad_key}.json", b'{"pair": "x"}')])
    deep = b"[" * 100_000 + b"]" * 100_000
    write_tar(src / "c-000000.tar", [("deep.txt", b"deep one"), ("deep.json", deep)])
    sparse(src / "d-000000.tar", 0)
    out = tmp_path / "out"
    m = run_measured([PY, "-m", "unimodal_free.data.rewriting.pairing", str(src), str(out)], timeout=120)
    assert not m.killed and m.rc == 0, (m.killed, m.err[-2000:])
    skips = [line.split(" [")[0] for line in m.err_lines()]
    assert skips == [
        f"pairing: skipped {src / 'b-000000.tar'}:b'k\\xff\\xfe': key is not UTF-8",
        f"pairing: skipped {src / 'c-000000.tar'}:deep: json: invalid (RecursionError: maximum recursion depth "
        "exceeded while decoding a JSON array from a unicode string)",
        f"pairing: skipped {src / 'd-000000.tar'} (after 0 samples): shard unreadable: ReadError: empty file",
    ], m.err
    assert "read 6 samples" in m.out and "skipped 3 unreadable" in m.out, m.out
    stamp = json.loads((out / "pairing.json").read_text())
    assert stamp["read"] == 6 and stamp["written"] == 6 and stamp["skipped"] == 3
    assert stamp["skip_reasons"] == {"key is not UTF-8": 1, "json: invalid (RecursionError": 1,
                                     "shard unreadable: ReadError": 1}


def test_pairing_of_only_an_empty_shard_says_so_and_exits_1(tmp_path):
    sparse(tmp_path / "src" / "d-000000.tar", 0)
    out = tmp_path / "out"
    m = run_measured([PY, "-m", "unimodal_free.data.rewriting.pairing", str(tmp_path / "src"), str(out)], timeout=120)
    assert m.rc == 1 and "No such file" not in m.err, m.err
    assert "read 0 samples (none), skipped 1 unreadable" in m.out and "wrote 0 samples" in m.out, m.out
    assert json.loads((out / "pairing.json").read_text())["skipped"] == 1


def test_load_weights_names_a_checkpoints_unusable_complete(setup, tmp_path):
    """A checkpoint dir handed to eval directly: why it is unusable names COMPLETE and the limit."""
    tag_dir = write_checkpoint(setup, tmp_path / "run")
    complete = tag_dir / "COMPLETE"
    complete.unlink()
    sparse(complete, GIB)
    with pytest.raises(CheckpointError, match=f"{complete}: {GIB} bytes > the {MAX_METADATA_BYTES}-byte limit"):
        load_weights(tag_dir)
