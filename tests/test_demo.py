"""Demo data: real drawings, real espeak-ng speech, real shards; deterministic and cached."""

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds

from unimodal_free.data.demo import build as demo
from unimodal_free.data.demo.build import ensure_demo_data, generate
from unimodal_free.data.demo.scenes import ALL, Mix, plan
from unimodal_free.data.demo.speech import fix_ogg_serial, speech_batches, synth_batch
from unimodal_free.data.loading.sources import tokenizer_spec
from unimodal_free.data.reading.media import open_image, read_audio, to_rgb
from unimodal_free.data.reading.tokenizer import load_tokenizer

N_TRAIN, N_HELDOUT = 12, 6  # indices 0..11 cover every image and audio format the demo writes


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    return ensure_demo_data(tmp_path_factory.mktemp("cache") / "demo", N_TRAIN, N_HELDOUT, progress=False)


def samples(split_dir: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in split_dir.glob("*.tar")), shardshuffle=False))


def test_plan_grammar_and_unseen_heldout_combinations():
    scenes = plan(600, 64)
    assert scenes == plan(600, 64) and scenes != plan(600, 64, seed=1)
    train = [s for s in scenes if s.split == "train"]
    held = [s for s in scenes if s.split == "heldout"]
    assert len(train) == 600 and len(held) == 64
    combo = lambda s: (s.size, s.colour, s.shape, s.where)  # noqa: E731
    assert not {combo(s) for s in held} & {combo(s) for s in train}
    assert len({s.caption for s in held}) == 64  # unique held-out captions: retrieval is well defined
    train_words = {w for s in train for w in s.caption.split()}
    assert all(w in train_words for s in held for w in s.caption.split())
    s = train[0]
    assert all(part in s.caption for part in (s.size, s.colour, s.shape, s.where))
    with pytest.raises(ValueError, match="heldout"):
        plan(10, 10_000)


def combination(sample: dict) -> str:
    """'image+speech+text'-style label from a written sample's member extensions."""
    exts = set(sample)
    return "+".join(m for m, e in (("image", {"png", "jpg"}), ("speech", {"flac", "ogg", "wav"}), ("text", {"txt"}))
                    if exts & e)


def test_plan_mix_gives_exact_counts_and_leaves_scenes_alone():
    issue_mix = Mix(speech=0.08, text_only=0.1)  # 90% image+text pairs, 8% of all with speech, 10% text-only
    scenes = plan(1000, 200, mix=issue_mix)
    for split, n in (("train", 1000), ("heldout", 200)):
        kinds = [s.modalities for s in scenes if s.split == split]
        assert kinds.count(("text",)) == n // 10
        assert kinds.count(("image", "speech", "text")) == n * 8 // 100
        assert kinds.count(("image", "text")) == n - n // 10 - n * 8 // 100
        assert kinds.count(("image",)) == 0
    # The mix only decides the members: every other draw is the balanced plan's.
    balanced = plan(1000, 200)
    assert all(s.modalities == ALL for s in balanced)
    assert [s.caption for s in scenes] == [s.caption for s in balanced]
    assert [s.noise_seed for s in scenes] == [s.noise_seed for s in balanced]
    assert scenes == plan(1000, 200, mix=issue_mix)
    other = [s.modalities for s in plan(1000, 200, seed=1, mix=issue_mix)]
    assert other != [s.modalities for s in scenes] and sorted(other) == sorted(s.modalities for s in scenes)
    # Odd sizes: cumulative rounding never hands out more samples than there are.
    for n in range(1, 12):
        kinds = Mix(speech=0.5, text_only=0.25, image_only=0.25).combinations(n, 0, "train")
        assert len(kinds) == n and kinds.count(("image", "text")) == 0
    with pytest.raises(ValueError, match="exceeds 1"):
        plan(10, 5, mix=Mix(speech=0.9, image_only=0.2))


MIX = Mix(speech=0.08, text_only=0.1, image_only=0.06)
MIX_COUNTS = {"image+text": 38, "text": 5, "image": 3, "image+speech+text": 4}  # of 50 samples per split


def test_unbalanced_shards_hold_the_mix_and_reproduce(tmp_path):
    out = ensure_demo_data(tmp_path / "mix", 50, 50, mix=MIX, progress=False)
    for split in ("train", "heldout"):
        written = samples(out / split)
        counts: dict = {}
        for s in written:
            counts[combination(s)] = counts.get(combination(s), 0) + 1
            meta = json.loads(s["json"])
            assert meta["pair"] == s["__key__"] and meta["split"] == split
            assert ("caption" in meta) == ("txt" in s) and ("voice" in meta) == (combination(s).count("speech") == 1)
            if "txt" in s:
                assert s["txt"].decode() == meta["caption"]
        assert counts == MIX_COUNTS, split
        pairs = [json.loads(s["json"])["pair"] for s in written]
        assert len(set(pairs)) == 50  # one pair id per sample: only a sample's own members pair up
    done = json.loads((out / "DONE").read_text())
    assert done["stamp"]["mix"] == {"speech": 0.08, "text_only": 0.1, "image_only": 0.06}
    assert generate(tmp_path / "again", 50, 50, mix=MIX, progress=False) == done["files"]  # byte-identical
    assert ensure_demo_data(out, 50, 50, mix=MIX) == out  # cached
    # A balanced request never reuses the unbalanced folder.
    ensure_demo_data(out, 4, 2, progress=False)
    assert {combination(s) for s in samples(out / "train")} == {"image+speech+text"}


def test_demo_shards_hold_matching_image_speech_text(demo_dir):
    train, held = samples(demo_dir / "train"), samples(demo_dir / "heldout")
    assert len(train) == N_TRAIN and len(held) == N_HELDOUT
    assert json.loads((demo_dir / "train" / "sizes.json").read_text()) == {"shard-000000.tar": N_TRAIN}
    exts, modes = set(), set()
    for split, group in (("train", train), ("heldout", held)):
        for s in group:
            meta = json.loads(s["json"])
            assert meta["pair"] == s["__key__"] and meta["split"] == split
            caption = s["txt"].decode()
            assert caption == meta["caption"] and meta["shape"] in caption and meta["colour"] in caption
            img_ext = next(e for e in ("png", "jpg") if e in s)
            img = open_image(s[img_ext])
            assert img.size == (64, 64) and to_rgb(img).mode == "RGB"
            modes.add(img.mode)
            wav_ext = next(e for e in ("flac", "ogg", "wav") if e in s)
            wav, sr, _ = read_audio(s[wav_ext])
            assert sr == 16000 and 1.0 < len(wav) / sr < 5.0
            assert np.abs(wav).max() > 0.1  # speech, not silence
            exts |= {img_ext, wav_ext}
    assert exts == {"png", "jpg", "flac", "ogg", "wav"} and modes == {"RGB", "RGBA"}

    tok = load_tokenizer(tokenizer_spec("demo", demo_dir))
    assert tok.reference["path"] == str(demo_dir / "tokenizer.model")
    for s in train + held:
        ids = tok.encode(s["txt"].decode())
        assert 0 not in ids and tok.decode(ids) == s["txt"].decode()
    assert tok.vocab_size <= demo.TOKENIZER_VOCAB


def test_generation_is_byte_identical(demo_dir, tmp_path):
    done = json.loads((demo_dir / "DONE").read_text())
    assert done["stamp"] == {"version": demo.DEMO_VERSION, "train": N_TRAIN, "heldout": N_HELDOUT, "seed": 0,
                             "mix": {"speech": 1.0, "text_only": 0.0, "image_only": 0.0}}
    files = generate(tmp_path / "again", N_TRAIN, N_HELDOUT, progress=False)
    assert files == done["files"] and "train/shard-000000.tar" in files


def test_cached_call_is_instant_and_accepts_any_counts(demo_dir):
    before = {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*")}
    t0 = time.perf_counter()
    assert ensure_demo_data(demo_dir) == demo_dir  # counts left open: the existing small set is used
    assert ensure_demo_data(demo_dir, N_TRAIN, N_HELDOUT) == demo_dir
    assert time.perf_counter() - t0 < 0.5
    assert {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*")} == before


def test_interrupted_runs_are_never_used(tmp_path):
    out = tmp_path / "demo"
    stale = tmp_path / ".demo.tmp-99999" / "train"
    stale.mkdir(parents=True)
    (stale / "shard-000000.tar").write_bytes(b"half a shard")
    assert ensure_demo_data(out, 4, 2, progress=False) == out
    assert not stale.parent.exists()
    assert len(samples(out / "train")) == 4

    # Other explicit counts: regenerated and swapped in whole.
    assert ensure_demo_data(out, 5, 2, progress=False) == out
    assert len(samples(out / "train")) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]

    # A folder without the DONE marker (a foreign or hand-edited dir) is never used nor deleted.
    (out / "DONE").unlink()
    with pytest.raises(RuntimeError, match="no DONE marker"):
        ensure_demo_data(out, progress=False)
    assert (out / "train").exists()


def test_batched_speech_is_cut_into_one_clip_per_caption():
    everything = plan(400, 8)
    batch = next(b for b in speech_batches(everything) if len(b) >= 3)
    scenes = [everything[i] for i in batch[:3]]
    batched = synth_batch(scenes)
    alone = [synth_batch([s])[0] for s in scenes]
    for (wav, sr), (ref, sr_ref) in zip(batched, alone):
        assert sr == sr_ref == 22050
        assert abs(len(wav) - len(ref)) < 0.25 * sr  # same utterance, give or take the pause trimming


def test_ogg_serial_fix_makes_vorbis_reproducible():
    x = np.sin(np.arange(16000) / 7).astype(np.float32) * 0.3

    def encode():
        buf = io.BytesIO()
        sf.write(buf, x, 16000, format="OGG", subtype="VORBIS")
        return buf.getvalue()

    a, b = encode(), encode()
    assert a != b  # libsndfile picks a random stream serial number
    fa, fb = fix_ogg_serial(a), fix_ogg_serial(b)
    assert fa == fb
    # Page CRCs are valid: libogg drops pages with a bad CRC, which would lose samples.
    got, _ = sf.read(io.BytesIO(fa), dtype="float32")
    ref, _ = sf.read(io.BytesIO(a), dtype="float32")
    assert np.array_equal(got, ref)


def test_cli(tmp_path, capsys):
    assert demo.main([str(tmp_path / "d"), "--train", "3", "--heldout", "2"]) == 0
    assert "demo data ready" in capsys.readouterr().err
    assert (tmp_path / "d" / "tokenizer.model").exists() and (tmp_path / "d" / "DONE").exists()
    assert demo.main([str(tmp_path / "e"), "--heldout", "0"]) == 2
    assert "error: demo counts" in capsys.readouterr().err
    assert demo.main([str(tmp_path / "f"), "--speech", "0.5", "--text-only", "0.6"]) == 2
    assert "error: demo mix: --speech 0.5 + --text-only 0.6" in capsys.readouterr().err
    assert demo.main([str(tmp_path / "g"), "--image-only", "-0.1"]) == 2
    assert "error: demo mix: --image-only must be a share in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "f").exists() and not (tmp_path / "g").exists()


@pytest.mark.slow
def test_ranks_started_together_generate_once(tmp_path):
    code = ("import sys; from unimodal_free.data.demo.build import ensure_demo_data; "
            "print(ensure_demo_data(sys.argv[1], 6, 2, progress=False))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "demo")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == [str(tmp_path / "demo")] * 2
    assert sum(o[1].count("generating demo data") for o in outs) == 1  # the other waited on the lock
    assert len(samples(tmp_path / "demo" / "train")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]


def test_training_without_espeak_ng_ends_with_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """launch/setup.sh leaves espeak-ng out without root or sudo: the quick-start training then fails
    while generating the demo data with one line that names espeak-ng (was: a thread-pool traceback)."""
    from unimodal_free.train import main

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("PATH", str(tmp_path / "bin-without-espeak-ng"))
    rc = main(["--config", str(root / "configs" / "tiny.json"), "--set", f"data.demo_dir={tmp_path / 'demo'}",
               "--set", f"train.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [
        err.strip().splitlines()[-1]], err
    assert err.strip().splitlines()[-1].startswith("error: data: espeak-ng not found: it speaks the demo's captions")
    assert not (tmp_path / "demo").exists() and not (tmp_path / "run").exists()


def test_own_training_data_without_heldout_warns_at_start(demo_dir, tmp_path, capsys):
    """data.train set, data.heldout unset: the run says at start that its eval reads the demo's held-out split
    (and records the line for log.txt); with both unset (the demo run) it says nothing."""
    from unimodal_free.train.cli import build_parser, prepare

    root = Path(__file__).resolve().parent.parent
    base = ["--config", str(root / "configs" / "tiny.json"), "--set", f"data.demo_dir={demo_dir}",
            "--set", f"train.output_dir={tmp_path / 'run'}"]
    setup = prepare(build_parser().parse_args(base + ["--set", f"data.train={demo_dir / 'train'}"]))
    warning = (f"warning: data.heldout is unset: the periodic eval and the model card measure retrieval on the demo's "
               f"held-out split ({demo_dir / 'heldout'}), not on your data; set data.heldout to your held-out shards "
               f"(python -m unimodal_free.data.rewriting.split makes them)")
    assert warning in capsys.readouterr().err.splitlines() and warning in setup.notes
    prepare(build_parser().parse_args(base))
    assert "data.heldout is unset" not in capsys.readouterr().err


def test_a_run_checks_the_demo_folder_once(demo_dir, tmp_path, monkeypatch):
    """Empty data.train / data.heldout and data.tokenizer=demo all point at data.demo_dir: setting up a run
    checks it once and hands the result on (was: once for the sources, again for the tokenizer, and a third
    time when the trainer built its loader, RunSetup.train_sources being unread)."""
    from unimodal_free.config import Source
    from unimodal_free.train.cli import build_parser, prepare

    checked = []
    usable = demo._usable
    monkeypatch.setattr(demo, "_usable", lambda out, want: checked.append(out) or usable(out, want))
    root = Path(__file__).resolve().parent.parent
    setup = prepare(build_parser().parse_args([
        "--config", str(root / "configs" / "tiny.json"), "--set", f"data.demo_dir={demo_dir}",
        "--set", f"train.output_dir={tmp_path / 'run'}"]))
    assert checked == [demo_dir]
    assert setup.train_sources == [Source(path=str(demo_dir / "train"), weight=1.0)]
    assert setup.heldout_sources == [Source(path=str(demo_dir / "heldout"), weight=1.0)]
    assert setup.tokenizer.reference["path"] == str(demo_dir / "tokenizer.model")
