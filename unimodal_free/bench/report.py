"""Derived figures: MFU, ratios, the flat summary, target checks and the printed table."""

from __future__ import annotations

import math

# Targets on the 2-core CPU reference machine (see the bench's module docstring).
TARGETS = {
    "speedup_vs_hf_perceiver": (">=", 1.5),
    "speedup_vs_full_attention_m8192": (">=", 10.0),
    "growth_exponent": ("<=", 1.1),
    "mfu_base_fp32": (">=", 0.60),
    "loader_over_step": (">=", 3.0),
}


def mfu(flops: float, seconds: float, peak_flops: float) -> float:
    return flops / seconds / peak_flops


def add_mfu(run: dict, peak: dict, precision: str) -> None:
    """MFU of a config run (in place): student only, and student + teacher, against this run's peak."""
    p = peak[precision]["peak_flops"]
    t = run["train_step"]["median_s"]
    f = run["flops"]
    run["mfu"] = {
        "precision": precision,
        "peak_flops": p,
        "student": mfu(f["student"], t, p),
        "student_plus_teacher": mfu(f["student"] + f["teacher"], t, p),
        "achieved_flops": (f["student"] + f["teacher"]) / t,
    }


def add_peer_ratios(run: dict) -> None:
    """ours/peer speed ratios (>1: ours faster): encoder fwd+bwd like for like, and our whole train step."""
    ours_enc = run["encoder_fwd_bwd"]["median_s"]
    ours_step = run["train_step"]["median_s"]
    run["ratios"] = {}
    for kind, t in run.get("peers", {}).items():
        run["ratios"][f"encoder_fwd_bwd_vs_{kind}"] = t["median_s"] / ours_enc
        run["ratios"][f"train_step_vs_{kind}_fwd_bwd"] = t["median_s"] / ours_step


def _value_at(sweep: dict, m: int):
    return dict(zip(sweep["sizes"], sweep["seconds"])).get(m)


def summarize(result: dict, precision: str) -> dict:
    """The flat summary: one number per headline question (None where not measured)."""
    configs = result.get("configs", {})
    default, base = configs.get("default", {}), configs.get("base", {})
    scaling = result.get("scaling", {})
    ours_m = _value_at(scaling.get("ours_encoder_fwd_bwd", {"sizes": [], "seconds": []}), 8192)
    full_m = _value_at(scaling.get("full_attention_fwd_bwd", {"sizes": [], "seconds": []}), 8192)
    plain = result.get("plain_encoder", {})
    loader = result.get("loader", {})
    sfx = precision
    summary = {
        "speedup_vs_hf_perceiver": default.get("ratios", {}).get("encoder_fwd_bwd_vs_hf_perceiver"),
        "train_step_vs_hf_perceiver_fwd_bwd": default.get("ratios", {}).get("train_step_vs_hf_perceiver_fwd_bwd"),
        "speedup_vs_hf_perceiver_base": base.get("ratios", {}).get("encoder_fwd_bwd_vs_hf_perceiver"),
        "speedup_vs_full_attention_m8192": (full_m / ours_m) if ours_m and full_m else None,
        # Headline: the whole train step (masking, R views, teacher, optimizer), what a user pays.
        "growth_exponent": scaling.get("ours_train_step", {}).get("growth_exponent"),
        "growth_exponent_encoder_fwd_bwd": scaling.get("ours_encoder_fwd_bwd", {}).get("growth_exponent"),
        "growth_exponent_full_attention": scaling.get("full_attention_fwd_bwd", {}).get("growth_exponent"),
        f"mfu_base_{sfx}": base.get("mfu", {}).get("student_plus_teacher"),
        f"mfu_base_{sfx}_student_only": base.get("mfu", {}).get("student"),
        f"mfu_default_{sfx}": default.get("mfu", {}).get("student_plus_teacher"),
        f"mfu_default_{sfx}_student_only": default.get("mfu", {}).get("student"),
        f"mfu_plain_encoder_{sfx}": plain.get("mfu"),
        "loader_over_step": (loader["samples_per_s"] / default["train_step"]["samples_per_s"])
        if loader and default.get("train_step") else None,
        "default_train_samples_per_s": default.get("train_step", {}).get("samples_per_s"),
        "base_train_samples_per_s": base.get("train_step", {}).get("samples_per_s"),
        "matmul_peak_fp32_gflops": result.get("peak", {}).get("fp32", {}).get("peak_flops", 0) / 1e9 or None,
    }
    return summary


def check_targets(summary: dict) -> dict:
    out = {}
    for key, (op, target) in TARGETS.items():
        value = summary.get(key)
        met = None
        if value is not None and math.isfinite(value):
            met = value >= target if op == ">=" else value <= target
        out[key] = {"value": value, "target": f"{op} {target}", "met": met}
    return out


def format_table(result: dict) -> str:
    """Human-readable digest of the run, printed at the end."""
    lines = []
    peak = result.get("peak", {})
    for dt, p in peak.items():
        lines.append(f"matmul peak {dt}: {p['peak_flops'] / 1e9:.1f} GFLOP/s (n={p['best_size']})")
    for name, run in result.get("configs", {}).items():
        if "error" in run:
            lines.append(f"[{name}] FAILED: {run['error']}")
            continue
        ts = run["train_step"]
        lines.append(
            f"[{name}] rows={run['batch']['rows']} elements={run['batch']['elements']} views={run['model']['num_views']}"
            f" | step {ts['median_s'] * 1e3:.0f} ms = {ts['samples_per_s']:.1f} samples/s,"
            f" {ts['elements_per_s']:.0f} elements/s | MFU student {run['mfu']['student']:.1%},"
            f" +teacher {run['mfu']['student_plus_teacher']:.1%} | peak RSS {run['memory']['peak_rss_bytes'] / 2**20:.0f} MiB"
        )
        peers = run.get("peers", {})
        if peers:
            lines.append(
                f"    fwd+bwd: ours {run['encoder_fwd_bwd']['median_s'] * 1e3:.0f} ms, "
                + ", ".join(f"{k} {v['median_s'] * 1e3:.0f} ms" for k, v in peers.items())
                + " | ours/peer speed: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in run["ratios"].items())
            )
    plain = result.get("plain_encoder")
    if plain:
        lines.append(f"plain nn.TransformerEncoder fwd+bwd {plain['shape']}: MFU {plain['mfu']:.1%}")
    for name, sw in result.get("scaling", {}).items():
        if not isinstance(sw, dict) or "sizes" not in sw:
            continue
        pts = ", ".join(f"{m}:{t * 1e3:.0f}ms" for m, t in zip(sw["sizes"], sw["seconds"]))
        exp = sw.get("growth_exponent")
        lines.append(f"scaling {name}: {pts}" + (f" | exponent {exp:.2f}" if exp is not None else "")
                     + (f" | skipped (over {sw['max_step_seconds']:.0f} s/step): {sw['skipped']}" if sw["skipped"] else ""))
    amort = result.get("teacher_amortisation")
    if amort:
        lines.append("teacher amortisation (ms per masked view): "
                     + ", ".join(f"R={r}: {v['ms_per_view']:.2f}" for r, v in amort["per_num_views"].items()))
    loader = result.get("loader")
    if loader:
        lines.append(f"loader: {loader['samples_per_s']:.0f} samples/s ({loader['num_workers']} worker(s))")
    zero = result.get("memory", {}).get("zero")
    if zero and "per_stage" in zero:
        for stage, ranks in zero["per_stage"].items():
            lines.append(f"ZeRO {stage}: optimizer state per rank "
                         + ", ".join(f"{r['total'] / 2**20:.2f} MiB" for r in ranks))
    elif zero:
        lines.append(f"ZeRO: {zero.get('error', zero.get('skipped'))}")
    lines.append("summary:")
    for key, value in result.get("summary", {}).items():
        lines.append(f"  {key}: {value:.4g}" if isinstance(value, float) else f"  {key}: {value}")
    lines.append("targets:")
    for key, t in result.get("targets", {}).items():
        verdict = {True: "MET", False: "MISSED", None: "not measured"}[t["met"]]
        val = f"{t['value']:.3g}" if isinstance(t["value"], float) else t["value"]
        lines.append(f"  {key}: {val} (target {t['target']}) {verdict}")
    return "\n".join(lines)
