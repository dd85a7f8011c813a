"""Speed, scaling and memory bench of the joint Perceiver step, against peers at equal sizes.

    python -m unimodal_free.bench [--quick] [--json OUT.json] [--plot OUT.png]

One process run measures (warm-up, then medians over repeats):
  * the fp32/bf16 matmul peak of this machine (best square GEMM, 1024..4096): the MFU denominator;
  * per config (tiny, default = configs/joint.json, base = configs/joint-base.json), each in its own
    subprocess so memory peaks don't mix: the joint train step (the student task + backward + clip + AdamW
    + EMA update) in samples/s, elements/s and MFU (with and without the teacher's FLOPs), our
    encoder fwd+bwd against transformers' PerceiverModel and a full-attention nn.TransformerEncoder
    fwd+bwd on the same rows and element counts, and the peak RSS (GPU: peak allocated);
  * a plain nn.TransformerEncoder's fwd+bwd MFU at the base width (what PyTorch reaches here);
  * step time against element count M (ours vs full attention) with growth exponents and a log-log plot;
  * time per masked view for num_views 1, 4, 8, 16 (teacher amortisation);
  * the data pipeline's samples/s on the demo shards against what the default step consumes;
  * per-rank optimizer-state bytes under ZeRO 0 and 2 with 2 ranks (a DeepSpeed launch);
  * a step's tensor peak per row and per view of the base config, with and without
    model.activation_checkpointing, and its prediction at micro batch 64 x 8 views (full run only).
Targets on the 2-core CPU reference: see ``report.TARGETS``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unimodal_free import cpu_memory

cpu_memory.keep_freed_memory()  # as the trainer runs, and before torch is imported (see cpu_memory)

import torch  # noqa: E402

from unimodal_free.bench import report  # noqa: E402
from unimodal_free.bench.loader_measure import loader_throughput  # noqa: E402
from unimodal_free.bench.memory import activation_memory  # noqa: E402
from unimodal_free.bench.ours import OursHarness, autocast  # noqa: E402
from unimodal_free.bench.peak import matmul_peak  # noqa: E402
from unimodal_free.bench.peers import (  # noqa: E402
    PeerSize, full_attention_encoder, full_attention_flops, fwd_bwd_fn)
from unimodal_free.bench.scaling import plot, sweep  # noqa: E402
from unimodal_free.bench.synthetic import synthetic_batch  # noqa: E402
from unimodal_free.bench.timing import pick_device, setup_threads, time_fn, time_interleaved  # noqa: E402
from unimodal_free.config import CONFIG_DIR, load_config  # noqa: E402
from unimodal_free.usage import ArgumentParser, UsageError, one_line, usage_errors  # noqa: E402

# Used when configs/joint-base.json is absent: the base sizes on top of joint.json.
# The sections --only picks from, in the order they run between the two peak probes.
SECTIONS = ("peak", "configs", "plain", "scaling", "amortisation", "loader", "zero", "activation")
EXIT_SECTION_FAILED = 1  # a section recorded an error instead of its figures (the table and JSON still written)

BASE_PRESET = ["model.d_model=768", "model.num_latents=512", "model.num_blocks=12", "model.num_heads=12"]

PLANS = {
    # Everything that differs between --quick (~3 min on 2 cores) and the full run (~15 min).
    # configs: name -> (config source, rows, extra overrides, warmup, repeats).
    "quick": {
        "peak_sizes": (1024, 2048),
        "configs": {
            "tiny": ("tiny", 8, [], 1, 3),
            "default": ("default", 32, [], 1, 3),
            "base": ("base", 2, ["objective.num_views=1"], 1, 2),
        },
        "plain_encoder": {"layers": 4, "elements": 512, "rows": 2, "warmup": 1, "repeats": 2},
        "scaling": {"config": "default", "sizes": [256, 1024, 4096, 8192], "rows": 1, "warmup": 1, "repeats": 2,
                    "max_step_s": 30.0},
        "amortisation": {"config": "default", "rows": 8, "num_views": (1, 4, 8, 16), "warmup": 1, "repeats": 2},
        "loader": {"config": "default", "batches": 10, "demo_samples": None},
        "activation": None,  # the base step at 3-6 rows x 1-2 views: ~15 min on 2 busy cores; full run only
    },
    "full": {
        "peak_sizes": (1024, 2048, 4096),
        "configs": {
            "tiny": ("tiny", 8, [], 2, 5),
            "default": ("default", 32, [], 2, 5),
            "base": ("base", 3, ["objective.num_views=2"], 1, 3),
        },
        "plain_encoder": {"layers": 12, "elements": 512, "rows": 2, "warmup": 1, "repeats": 3},
        "scaling": {"config": "default", "sizes": [2**k for k in range(8, 15)], "rows": 1, "warmup": 1,
                    "repeats": 3, "max_step_s": 60.0},
        "amortisation": {"config": "default", "rows": 32, "num_views": (1, 4, 8, 16), "warmup": 1, "repeats": 3},
        "loader": {"config": "default", "batches": 30, "demo_samples": None},
        "activation": {"config": "base", "points": ((3, 1), (3, 2), (6, 1)), "predict": (64, 8)},
    },
    # Every section in seconds, on the tiny config (tests): figures are real but say nothing.
    "smoke": {
        "peak_sizes": (128, 256),
        "configs": {
            "tiny": ("tiny", 3, [], 0, 1),
            "default": ("tiny", 3, [], 0, 1),
            "base": ("tiny", 3, [], 0, 1),
        },
        "plain_encoder": {"layers": 1, "elements": 64, "rows": 1, "warmup": 0, "repeats": 1},
        "scaling": {"config": "tiny", "sizes": [256, 1024, 2048, 8192], "rows": 1, "warmup": 0, "repeats": 1,
                    "max_step_s": 2.0},
        "amortisation": {"config": "tiny", "rows": 3, "num_views": (1, 4), "warmup": 0, "repeats": 1},
        "loader": {"config": "tiny", "batches": 2, "demo_samples": (48, 16)},
        "activation": {"config": "tiny", "points": ((3, 1), (3, 2), (6, 1)), "predict": (4, 2)},
    },
}


def config_source(name: str, configs_dir: Path) -> tuple[str, list[str]]:
    """(config path, overrides) of a named bench config."""
    if name == "tiny":
        return str(configs_dir / "tiny.json"), []
    if name == "default":
        return str(configs_dir / "joint.json"), []
    if name == "base":
        path = configs_dir / "joint-base.json"
        if path.exists():
            return str(path), []
        return str(configs_dir / "joint.json"), list(BASE_PRESET)
    raise ValueError(f"unknown bench config {name!r}")


def run_config(name: str, plan: dict, args, workdir: Path) -> dict:
    """One config in a child process (its own memory peak); returns its JSON or an error record."""
    source, rows, extra, warmup, repeats = plan["configs"][name]
    path, overrides = config_source(source, args.configs_dir)
    out = workdir / f"config_{name}.json"
    cmd = [sys.executable, "-m", "unimodal_free.bench.config_run", "--config", path, "--rows", str(rows),
           "--warmup", str(warmup), "--repeats", str(repeats), "--threads", str(args.threads),
           "--precision", args.precision, "--out", str(out), "--peers"]
    if args.device:
        cmd += ["--device", args.device]
    for o in overrides + extra:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"config_run {name} exited {proc.returncode}: {tail[0]}", "command": cmd}
    return json.loads(out.read_text())


def bench_plain_encoder(plan: dict, base_cfg, device, peak: dict, precision: str) -> dict:
    """fwd+bwd MFU of a plain nn.TransformerEncoder at the base width: the reachable ceiling here."""
    p = plan["plain_encoder"]
    size = PeerSize.from_model_config(base_cfg.model)
    size = PeerSize(size.d_model, size.num_latents, p["layers"], size.num_heads, 1, size.mlp_ratio, size.d_model)
    model = full_attention_encoder(size).to(device)
    x = torch.randn(p["rows"], p["elements"], size.d_model, device=device)
    step = fwd_bwd_fn(model, "full_attention", x, None)

    def run():
        with autocast(device, precision):
            step()

    t = time_fn(run, p["warmup"], p["repeats"], device)
    flops = full_attention_flops(size, p["rows"], p["elements"])
    return {"shape": f"d={size.d_model} layers={size.depth} heads={size.num_heads} rows={p['rows']} M={p['elements']}",
            "timing": t, "flops": flops, "mfu": report.mfu(flops, t["median_s"], peak[precision]["peak_flops"])}


def bench_scaling(plan: dict, cfg, device, precision: str, plot_path: str | None) -> dict:
    """Step time vs M for one speech-like row: our encoder fwd+bwd, our train step, full attention fwd+bwd."""
    p = plan["scaling"]
    ours = OursHarness(cfg, device, precision)
    size = PeerSize.from_model_config(cfg.model)
    full = full_attention_encoder(size).to(device)

    def batch(m):
        return synthetic_batch(cfg.data, ours.specs, p["rows"], modalities=("speech",), num_elements=m).to(device)

    def full_step(m):
        step = fwd_bwd_fn(full, "full_attention", torch.randn(p["rows"], m, size.d_model, device=device), None)

        def run():
            with autocast(device, precision):
                step()
        return run

    factories = {
        "ours_encoder_fwd_bwd": lambda m: (lambda b: lambda: ours.encoder_fwd_bwd(b))(batch(m)),
        "ours_train_step": lambda m: (lambda b: lambda: ours.train_step(b))(batch(m)),
        "full_attention_fwd_bwd": full_step,
    }
    # M=8192 (the headline comparison) and M=1024 (the low end of the exponent fit) are measured
    # for every method whatever the prediction, so both figures always exist.
    out = {name: sweep(f, p["sizes"], p["warmup"], p["repeats"], p["max_step_s"], device, always=(1024, 8192))
           for name, f in factories.items()}
    out["setup"] = {"rows": p["rows"], "modality": "speech", "num_latents": cfg.model.num_latents,
                    "d_model": cfg.model.d_model, "num_blocks": cfg.model.num_blocks,
                    "exponent_fit": "least squares of log time vs log M over M >= 1024"}
    if plot_path:
        plot({k: v for k, v in out.items() if k != "setup"}, plot_path,
             f"step time vs elements (d={cfg.model.d_model}, N={cfg.model.num_latents} latents, "
             f"L={cfg.model.num_blocks}, {p['rows']} row, {device.type})")
        out["plot"] = plot_path
    return out


def bench_amortisation(plan: dict, cfg, device, precision: str) -> dict:
    """Time per masked view as num_views grows: one teacher pass is shared by R student views."""
    p = plan["amortisation"]
    ours = OursHarness(cfg, device, precision)
    batch = synthetic_batch(cfg.data, ours.specs, p["rows"]).to(device)
    steps = {}
    for r in p["num_views"]:
        cfg_r = copy.deepcopy(cfg)
        cfg_r.objective.num_views = r
        steps[str(r)] = lambda cfg_r=cfg_r: ours.train_step(batch, cfg_r)
    # Alternating the view counts keeps drifting machine load out of the per-view comparison.
    timed = time_interleaved(steps, p["warmup"], p["repeats"], device)
    per = {}
    for key, t in timed.items():
        r = int(key)
        per[key] = {"step_s": t["median_s"], "ms_per_view": 1e3 * t["median_s"] / (batch.rows * r),
                    "views_per_s": batch.rows * r / t["median_s"], "timing": t}
    return {"rows": batch.rows, "per_num_views": per}


def bench_zero(args, workdir: Path) -> dict:
    """Launch zero_state.py on 2 ranks with DeepSpeed's own launcher; returns its per-rank figures."""
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        return {"skipped": "needs 2 GPUs on a GPU machine"}
    launcher = shutil.which("deepspeed")
    if launcher is None:
        return {"skipped": "the deepspeed launcher is not on PATH"}
    out = workdir / "zero.json"
    script = Path(__file__).with_name("zero_state.py")
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(29500 + os.getpid() % 1000), str(script),
           "--config", str(args.configs_dir / "joint.json"), "--stages", "0,2", "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"error": f"deepspeed launch exited {proc.returncode}: {' | '.join(tail)}", "command": cmd}
    result = json.loads(out.read_text())
    result["config"] = "configs/joint.json"
    result["launch_s"] = time.perf_counter() - start
    totals = {s: [r["total"] for r in ranks] for s, ranks in result["per_stage"].items()}
    if "0" in totals and "2" in totals:
        result["zero2_over_zero0"] = max(totals["2"]) / max(totals["0"])
        moments = {s: max(r["moments"] for r in ranks) for s, ranks in result["per_stage"].items()}
        result["moments_zero2_over_zero0"] = moments["2"] / moments["0"]
    return result


def parse_args(argv):
    p = ArgumentParser(prog="python -m unimodal_free.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer sizes and repeats (~3 min on 2 CPU cores)")
    p.add_argument("--smoke", action="store_true", help="every section in seconds on the tiny config (tests)")
    p.add_argument("--json", dest="json_out", help="write every figure here")
    p.add_argument("--plot", dest="plot_out", help="write the scaling plot (PNG) here")
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default 2)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=None, help="default: fp32 on CPU, bf16 on GPU")
    p.add_argument("--configs-dir", type=Path, default=CONFIG_DIR)
    p.add_argument("--demo-dir", default=None, help="demo shards for the loader (default: the config's data.demo_dir)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (peak always runs: it is every "
                   "MFU's denominator)")
    args = p.parse_args(argv)
    unknown = [s for s in args.only.split(",") if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(map(repr, unknown))} (sections: {', '.join(SECTIONS)})")
    return args


def check_peers_installed(sections: set[str]) -> None:
    """The configs section times transformers' PerceiverModel beside ours: without the ``bench`` extra every config
    would fail on its own, minutes in; one line now instead."""
    if "configs" in sections and importlib.util.find_spec("transformers") is None:
        raise UsageError("the configs section compares against transformers, which is not installed: "
                         "pip install -e .[bench] (or leave it out, e.g. --only peak,plain,scaling)")


def failed_sections(result: dict) -> list[str]:
    """``name: error`` of every section that recorded an error instead of its figures (a config's subprocess, ZeRO)."""
    failed = [f"config {n}: {r['error']}" for n, r in result.get("configs", {}).items() if "error" in r]
    zero = result.get("memory", {}).get("zero") or {}
    return failed + ([f"zero: {zero['error']}"] if "error" in zero else [])


class SectionTimer:
    """Runs the bench's sections one after the other, announcing each on stderr and keeping its seconds."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn):
        t = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        value = fn()
        self.seconds[name] = time.perf_counter() - t
        print(f"[bench] {name} done in {self.seconds[name]:.0f} s", file=sys.stderr, flush=True)
        return value


def run_meta(mode: str, device: torch.device, threads: int, precision: str) -> dict:
    """What the figures were measured on: machine, versions, settings."""
    return {
        "mode": mode, "device": str(device), "threads": threads,
        "malloc_kept": cpu_memory.applied,  # False: UNIMODAL_FREE_MALLOC_DEFAULTS=1 (glibc's own settings)
        "precision": precision, "torch": torch.__version__, "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def bench_configs(plan: dict, args, workdir: Path, result: dict, section: SectionTimer) -> None:
    """The per-config subprocesses, one after the other: ``result["configs"]`` and their memory."""
    configs = {}
    for name in plan["configs"]:
        run = section(f"config {name}", lambda: run_config(name, plan, args, workdir))
        if "error" not in run:
            report.add_mfu(run, result["peak"], args.precision)
            report.add_peer_ratios(run)
        configs[name] = run
    result["configs"] = configs
    result["memory"] = {"per_config": {
        n: r.get("memory") for n, r in configs.items() if "memory" in r}}


def run_sections(plan: dict, sections: set[str], args, device: torch.device, result: dict,
                 section: SectionTimer) -> None:
    """Every selected section between the two matmul peak probes, in this order (later figures see earlier load)."""
    def cfg_of(section_plan):
        return load_config(*config_source(section_plan["config"], args.configs_dir))
    with tempfile.TemporaryDirectory(prefix="unimodal_free_bench_") as tmp:
        workdir = Path(tmp)
        if "configs" in sections:
            bench_configs(plan, args, workdir, result, section)
        if "plain" in sections:
            base_cfg = load_config(*config_source("base", args.configs_dir))
            result["plain_encoder"] = section(
                "plain encoder", lambda: bench_plain_encoder(plan, base_cfg, device, result["peak"], args.precision))
        if "scaling" in sections:
            result["scaling"] = section(
                "scaling", lambda: bench_scaling(plan, cfg_of(plan["scaling"]), device, args.precision, args.plot_out))
        if "amortisation" in sections:
            result["teacher_amortisation"] = section("teacher amortisation", lambda: bench_amortisation(
                plan, cfg_of(plan["amortisation"]), device, args.precision))
        if "loader" in sections:
            lp = plan["loader"]
            result["loader"] = section("loader", lambda: loader_throughput(
                cfg_of(lp), lp["batches"], demo_dir=args.demo_dir, demo_samples=lp["demo_samples"]))
        if "activation" in sections and plan["activation"] is not None:
            ap = plan["activation"]
            result.setdefault("memory", {})["activation"] = section("activation memory", lambda: activation_memory(
                cfg_of(ap), device, args.precision, ap["predict"], ap["points"]))
        if "zero" in sections:
            result.setdefault("memory", {})["zero"] = section("zero", lambda: bench_zero(args, workdir))


def keep_best_peak(result: dict, late: dict, precision: str) -> None:
    """Fold the end-of-run peak probe into ``result["peak"]`` and recompute every MFU against the better one."""
    for dt, probe in late.items():
        first = result["peak"][dt]
        first["probes_flops"] = [first["peak_flops"], probe["peak_flops"]]
        if probe["peak_flops"] > first["peak_flops"]:
            first.update({k: probe[k] for k in ("peak_flops", "best_size", "flops_by_size")})
    for run in result.get("configs", {}).values():
        if "error" not in run:
            report.add_mfu(run, result["peak"], precision)
    if "plain_encoder" in result:
        pe = result["plain_encoder"]
        pe["mfu"] = report.mfu(pe["flops"], pe["timing"]["median_s"], result["peak"][precision]["peak_flops"])


@usage_errors()
def main(argv=None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    args.precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    threads = setup_threads(args.threads, device)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = PLANS[mode]
    sections = set(args.only.split(","))
    check_peers_installed(sections)
    started = time.perf_counter()
    section = SectionTimer()
    result: dict = {"meta": run_meta(mode, device, threads, args.precision)}
    result["peak"] = section("peak", lambda: matmul_peak(plan["peak_sizes"], device=device))
    run_sections(plan, sections, args, device, result, section)
    # A second probe at the end: a peak is the best the machine did during the run, so a burst of
    # load from other processes during the first probe cannot inflate every MFU figure.
    late = section("peak (end of run)", lambda: matmul_peak(plan["peak_sizes"], device=device))
    keep_best_peak(result, late, args.precision)
    result["meta"]["section_seconds"] = section.seconds
    result["meta"]["wall_s"] = time.perf_counter() - started
    result["summary"] = report.summarize(result, args.precision)
    result["targets"] = report.check_targets(result["summary"])
    print(report.format_table(result))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    failed = failed_sections(result)
    for line in failed:
        print(f"error: {one_line(line)}", file=sys.stderr)
    return EXIT_SECTION_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
