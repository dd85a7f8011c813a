"""Parameter counts of the model sizes, and the share that is modality-specific.

    python -m unimodal_free.model.sizes [--vocab tiny=64 default=128 base=32000]

tiny = configs/tiny.json (tests), default = configs/joint.json (CPU demo; code
defaults if absent), base = configs/joint-base.json (GPU; BASE preset if
absent). Modality-specific parameters: the per-modality padding vectors, the
text token embedding and the readout's modality embeddings (the value
projection is shared, so there is none per modality), and the latent blocks
when each modality has its own (``model.latent_stacks="per_modality"``). The vocabulary is not in
the config (it comes from the tokenizer); defaults: 64 for tiny, the demo
tokenizer's 128 for default, 32000 for base.
"""

from __future__ import annotations

import sys

from unimodal_free.batch import modality_specs
from unimodal_free.config import CONFIG_DIR, config_from_dict, load_config
from unimodal_free.model.joint import build_model
from unimodal_free.usage import ArgumentParser, usage_errors

# GPU base size (used when configs/joint-base.json is absent).
BASE = {
    "model": {"d_model": 768, "num_latents": 512, "num_blocks": 12, "num_heads": 12, "cross_heads": 1,
              "fourier_bands": 32, "text_embed_dim": 512},
    "data": {"image_size": 224, "patch_size": 16, "n_mels": 80, "frames_per_element": 4},
    "objective": {"top_k": 8, "num_views": 8, "predictor_blocks": 4},
}
DEFAULT_VOCAB = {"tiny": 64, "default": 128, "base": 32000}


def size_configs() -> dict:
    """name -> (Config, source description)."""
    out = {"tiny": (load_config(CONFIG_DIR / "tiny.json"), "configs/tiny.json")}
    joint = CONFIG_DIR / "joint.json"
    out["default"] = (load_config(joint), "configs/joint.json") if joint.exists() else (load_config(None), "code defaults")
    base = CONFIG_DIR / "joint-base.json"
    out["base"] = (load_config(base), "configs/joint-base.json") if base.exists() else (config_from_dict(BASE), "BASE preset")
    return out


def is_modality_specific(name: str) -> bool:
    return (".pad_" in name or "token_embed" in name or name.startswith("readout.embed_")
            or name.startswith("encoder.stacks."))


def count(cfg, vocab: int) -> dict:
    model = build_model(cfg.model, cfg.objective, modality_specs(cfg.data, vocab))
    groups: dict[str, int] = {}
    specific = total = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        specific += n if is_modality_specific(name) else 0
        groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + n
    return {"total": total, "specific": specific, "groups": groups}


@usage_errors()
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m unimodal_free.model.sizes", description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", nargs="*", default=[], help="size=vocab overrides, e.g. base=50000")
    args = parser.parse_args(argv)
    vocab = dict(DEFAULT_VOCAB)
    for item in args.vocab:
        name, _, value = item.partition("=")
        if name not in vocab or not value.isdigit():
            parser.error(f"--vocab {item!r}: expected one of {sorted(vocab)}=<int>")
        vocab[name] = int(value)
    print(f"{'size':8} {'source':24} {'d':>4} {'N':>4} {'L':>3} {'R':>3} {'vocab':>6} {'params':>12} "
          f"{'modality-specific':>18}  per part")
    for name, (cfg, source) in size_configs().items():
        c = count(cfg, vocab[name])
        m = cfg.model
        parts = " ".join(f"{k}={v / 1e6:.2f}M" for k, v in c["groups"].items())
        print(f"{name:8} {source:24} {m.d_model:4d} {m.num_latents:4d} {m.num_blocks:3d} {cfg.objective.num_views:3d} "
              f"{vocab[name]:6d} {c['total'] / 1e6:11.2f}M {c['specific'] / 1e6:9.3f}M {100 * c['specific'] / c['total']:6.2f}%  "
              f"{parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
