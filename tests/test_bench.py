"""The bench's pieces in a tiny form: real runs, schema and sanity of the figures (no timing thresholds)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unimodal_free.bench import report
from unimodal_free.bench.__main__ import main as bench_main
from unimodal_free.bench.config_run import main as config_run_main, peer_step
from unimodal_free.bench.encoder_profile import main as profile_main
from unimodal_free.bench.matmul_split import MATMUL_OPS, profile_split
from unimodal_free.bench.peak import matmul_peak
from unimodal_free.bench.peers import PeerSize, full_attention_encoder, full_attention_flops, fwd_bwd_fn, hf_perceiver
from unimodal_free.bench.scaling import growth_exponent, sweep
from unimodal_free.bench.synthetic import element_count_range, synthetic_batch
from unimodal_free.batch import modality_specs
from unimodal_free.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.json")
SUMMARY_KEYS = {
    "speedup_vs_hf_perceiver", "speedup_vs_full_attention_m8192", "growth_exponent", "mfu_base_fp32",
    "mfu_default_fp32", "mfu_plain_encoder_fp32", "loader_over_step",
}


def positive_finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# A tiny model's step time is nearly flat in M, so its fitted slope may come out <= 0 under noise.
SIGNED = {"growth_exponent"}


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_growth_exponent_recovers_power_law_over_large_sizes():
    sizes = [256, 512, 1024, 2048, 4096]
    # Constant below 1024 (latent stack dominates), M^1.5 above: the fit must see only M >= 1024.
    seconds = [30.0, 30.0] + [0.001 * m**1.5 for m in sizes[2:]]
    assert growth_exponent(sizes, seconds) == pytest.approx(1.5)
    assert growth_exponent(sizes, seconds, min_size=0) < 1.5
    assert growth_exponent([256, 512], [1.0, 2.0]) is None  # fewer than 2 points >= 1024


def test_sweep_measures_ascending_and_skips_what_would_take_too_long():
    calls = []

    def factory(m):
        def step():
            calls.append(m)
            x = torch.ones(m)
            return x.sum()
        return step

    res = sweep(factory, [4096, 256, 1024], warmup=0, repeats=1, max_step_seconds=1e-12, always=(1024,))
    # The first size is always measured, the "always" size too, the rest is over the (absurd) budget.
    assert res["sizes"] == [256, 1024] and res["skipped"] == [4096]
    assert calls == [256, 1024]
    assert all(positive_finite(t) for t in res["seconds"])


def test_matmul_peak_positive_per_dtype():
    peak = matmul_peak(sizes=(64, 128), repeats=2)
    assert set(peak) == {"fp32", "bf16"}
    for p in peak.values():
        assert positive_finite(p["peak_flops"]) and p["best_size"] in (64, 128)


def test_synthetic_batch_matches_data_config_counts():
    cfg = load_config(TINY)
    specs = modality_specs(cfg.data, 100)
    batch = synthetic_batch(cfg.data, specs, rows=7, seed=1)
    assert batch.rows == 7 and list(batch.parts) == ["image", "speech", "text"]
    for name, part in batch.parts.items():
        lo, hi = element_count_range(name, cfg.data)
        real = (~part.padding).sum(1)
        assert int(real.min()) >= lo and int(real.max()) <= hi
    assert batch.parts["text"].values.dtype == torch.long
    # Pairs: every image row has a speech and (but the last) a text partner with the same pair id.
    assert batch.parts["image"].pair_index.tolist() == [0, 1, 2]
    fixed = synthetic_batch(cfg.data, specs, rows=2, modalities=("speech",), num_elements=300)
    assert fixed.parts["speech"].values.shape[:2] == (2, 300) and not fixed.parts["speech"].padding.any()


def test_peers_run_fwd_bwd_at_equal_sizes():
    size = PeerSize(d_model=32, num_latents=8, depth=2, num_heads=4, cross_heads=1, mlp_ratio=4.0, input_width=32)
    x = torch.randn(2, 20, 32)
    keep = torch.arange(20)[None] < torch.tensor([[20], [11]])
    for kind, model in (("hf_perceiver", hf_perceiver(size)), ("full_attention", full_attention_encoder(size))):
        fwd_bwd_fn(model, kind, x, keep)()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
    hf = hf_perceiver(size)
    assert hf.embeddings.latents.shape == (8, 32)  # num_latents x d_latents = our latent array
    # Full attention FLOPs grow quadratically in M once attention dominates.
    assert full_attention_flops(size, 1, 4096) > 3.5 * full_attention_flops(size, 1, 2048)


@pytest.mark.parametrize("kind", ["hf_perceiver", "full_attention"])
def test_peers_and_their_inputs_are_built_on_the_bench_device(kind):
    """--device reaches the peers: on "meta" (a device no default puts anything on) every parameter,
    buffer and input of the peer is there, none left on the CPU."""
    cfg = load_config(TINY)
    batch = synthetic_batch(cfg.data, modality_specs(cfg.data, 64), 5, seed=0)
    assert any(p.padding.any() for p in batch.parts.values())  # the padding mask is built too
    peer = peer_step(kind, PeerSize.from_model_config(cfg.model), batch, torch.device("meta"))
    tensors = list(peer.model.parameters()) + list(peer.model.buffers())
    tensors += [t for x, keep in peer.inputs for t in (x, keep) if t is not None]
    assert len(peer.inputs) == len(batch.parts) and any(keep is not None for _, keep in peer.inputs)
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert peer.params > 0


def test_config_run_tiny_schema(tmp_path):
    out = tmp_path / "tiny.json"
    assert config_run_main(["--config", TINY, "--rows", "3", "--warmup", "0", "--repeats", "1",
                            "--peers", "--out", str(out)]) == 0
    run = json.loads(out.read_text())
    for key in ("train_step", "encoder_fwd_bwd"):
        assert positive_finite(run[key]["median_s"]) and positive_finite(run[key]["samples_per_s"])
    assert set(run["peers"]) == {"hf_perceiver", "full_attention"}
    assert positive_finite(run["flops"]["student"]) and positive_finite(run["flops"]["teacher"])
    assert run["memory"]["peak_rss_bytes"] >= run["memory"]["rss_before_model_bytes"] > 0
    assert run["memory"]["step_tensor_peak_bytes"] > 4 * run["params"]["student"]  # gradients + activations
    assert run["params"]["student"] == run["params"]["teacher"] > 0
    peak = {"fp32": {"peak_flops": 1e11}}
    report.add_mfu(run, peak, "fp32")
    report.add_peer_ratios(run)
    assert 0 < run["mfu"]["student"] < run["mfu"]["student_plus_teacher"]
    assert all(positive_finite(v) for v in run["ratios"].values())


def test_bench_sections_in_process(tmp_path):
    """peak, plain encoder, scaling (+ plot), amortisation, activation memory: all but the subprocess sections."""
    out, plot = tmp_path / "bench.json", tmp_path / "scaling.png"
    assert bench_main(["--smoke", "--only", "peak,plain,scaling,amortisation,activation", "--json", str(out),
                       "--plot", str(plot)]) == 0
    res = json.loads(out.read_text())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SUMMARY_KEYS <= set(res["summary"])
    for key in ("speedup_vs_full_attention_m8192", "growth_exponent", "mfu_plain_encoder_fp32"):
        assert (finite if key in SIGNED else positive_finite)(res["summary"][key]), key
    for name in ("ours_encoder_fwd_bwd", "ours_train_step", "full_attention_fwd_bwd"):
        assert 8192 in res["scaling"][name]["sizes"]
    assert list(res["teacher_amortisation"]["per_num_views"]) == ["1", "4"]
    act = res["memory"]["activation"]  # the step's tensors: per row-view far less with checkpointing
    assert 0 < act["checkpointing"]["per_row_view_bytes"] < 0.5 * act["no_checkpointing"]["per_row_view_bytes"]
    assert act["checkpointing"]["predicted"]["peak_bytes"] < act["no_checkpointing"]["predicted"]["peak_bytes"]
    assert set(res["targets"]) == set(report.TARGETS)


def run_bench(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of ``python -m unimodal_free.bench ARGS`` in a process of its own."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "unimodal_free.bench", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)
    return proc.returncode, proc.stderr, time.monotonic() - started


def test_only_takes_known_sections_and_names_them():
    """``--only bogus`` used to run the peak probes and print every figure as None with exit 0."""
    rc, err, took = run_bench("--only", "peak,bogus")
    assert rc == 2 and took < 30, (rc, took, err)
    assert err.splitlines() == ["error: --only: unknown section(s) 'bogus' (sections: peak, configs, plain, scaling, "
                                "amortisation, loader, zero, activation) (see python -m unimodal_free.bench --help)"]


def test_configs_without_transformers_is_one_line_naming_the_extra(tmp_path):
    """transformers blocked (a sitecustomize puts None into sys.modules, so every config subprocess would fail
    on its own): one line naming ``pip install -e .[bench]``, exit 2, before any section runs."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['transformers'] = None\n")
    path = os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")])
    rc, err, took = run_bench("--smoke", "--only", "configs", env={"PYTHONPATH": path})
    assert rc == 2 and took < 30, (rc, took, err)
    assert err.splitlines() == ["error: the configs section compares against transformers, which is not installed: "
                                "pip install -e .[bench] (or leave it out, e.g. --only peak,plain,scaling)"]


@pytest.mark.slow
def test_a_failing_section_exits_nonzero_with_its_error(tmp_path):
    """Every config subprocess fails (a config that does not validate): the table still prints, each failure is an
    ``error:`` line, exit 1 (it used to be 0)."""
    pytest.importorskip("transformers")  # the bench extra: without it the run stops before (test above)
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    (configs / "tiny.json").write_text(json.dumps({"model": {"d_model": 3}}))
    rc, err, _ = run_bench("--smoke", "--only", "configs", "--configs-dir", str(configs))
    assert rc == 1, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert [line.split(":")[1] for line in lines] == [" config tiny", " config default", " config base"], lines
    assert all("model.num_heads: 4 does not divide model.d_model=3" in line for line in lines), lines


@pytest.mark.slow
def test_bench_smoke_end_to_end(tmp_path):
    """Every section (3 config subprocesses, loader on small demo shards, 2-rank DeepSpeed ZeRO 0/2)."""
    out = tmp_path / "bench.json"
    assert bench_main(["--smoke", "--json", str(out), "--plot", str(tmp_path / "s.png"),
                       "--demo-dir", str(tmp_path / "demo")]) == 0
    res = json.loads(out.read_text())
    assert set(res["configs"]) == {"tiny", "default", "base"}
    for name, run in res["configs"].items():
        assert "error" not in run, run.get("error")
        assert positive_finite(run["memory"]["peak_rss_bytes"])
    for key in SUMMARY_KEYS:
        assert (finite if key in SIGNED else positive_finite)(res["summary"][key]), key
    for key, t in res["targets"].items():
        assert t["met"] in (True, False), key
    zero = res["memory"]["zero"]
    assert "error" not in zero, zero.get("error")
    stage0, stage2 = zero["per_stage"]["0"], zero["per_stage"]["2"]
    assert len(stage0) == len(stage2) == 2
    # ZeRO 2 partitions the Adam moments across the 2 ranks: each holds about half.
    assert stage2[0]["moments"] == pytest.approx(stage0[0]["moments"] / 2, rel=0.01)
    assert res["loader"]["samples_per_s"] > 0 and res["loader"]["skipped"] == 0


def test_encoder_profile_splits_matmul_time_for_both_encoders(tmp_path, capsys):
    # The split itself on a closure whose only op is a matmul, and one with none: shares 1 and 0.
    a = torch.randn(512, 512)  # large enough that the matmul dwarfs the output allocation
    split = profile_split({"mm": lambda: a @ a, "none": lambda: a.sin()}, iters=2)
    assert "aten::mm" in MATMUL_OPS
    assert split["mm"]["matmul_share"] > 0.9 and split["none"]["matmul_share"] == 0.0
    out = tmp_path / "profile.json"
    assert profile_main(["--config", TINY, "--rows", "6", "--iters", "1", "--threads", "1", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    for name in ("ours", "hf_perceiver"):
        s = r["split"][name]
        assert 0 < s["matmul_s"] <= s["profiled_s"] and 0 < s["matmul_share"] <= 1 and s["wall_s"] > 0, (name, s)
    assert r["ceiling_vs_hf"] == pytest.approx(r["split"]["hf_perceiver"]["profiled_s"] / r["split"]["ours"]["matmul_s"])
    assert "ceiling with every non-matmul op free" in capsys.readouterr().out
