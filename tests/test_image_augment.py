"""Caption-safe augmentation of training pictures (data.image_augment): the demo's captions stay true,
draws are reproducible, eval never augments, bad values are refused by key."""

import colorsys
import itertools
import math
import random

import pytest
import torch

from helpers import good_sample, make_cfg, write_tar
from unimodal_free.config import ConfigError, ImageAugmentConfig, config_from_dict
from unimodal_free.data.demo.image import _shape_mask, render_image
from unimodal_free.data.demo.scenes import COLOURS, POSITIONS, SIZES, plan
from unimodal_free.data.loading.loader import make_eval_loader, make_train_loader
from unimodal_free.data.reading.elements import decode_image, image_pixels, sample_rows
from unimodal_free.data.reading.image_augment import AugmentDraw, augment_pixels, draw_augment, warp
from unimodal_free.data.reading.tokenizer import load_tokenizer

ON = ImageAugmentConfig(enabled=True)
TOK = load_tokenizer("bytes")


def nearest(value, table, distance):
    return min(table, key=lambda name: distance(value, table[name]))


def caption_of(x: torch.Tensor, mask: torch.Tensor, own_size: str, own_count: float) -> tuple[str, str, str]:
    """(where, size, colour) a reader of picture ``x`` (H, W, 3) would name, given where its shape is (``mask`` (H, W))."""
    h, w = mask.shape
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    centre = (float((mask * xs).sum() / mask.sum()), float((mask * ys).sum() / mask.sum()))
    where = nearest(centre, POSITIONS, math.dist)
    radius = SIZES[own_size] * math.sqrt(float(mask.sum()) / own_count)  # the apparent radius, from the pixel count
    size = nearest(radius, SIZES, lambda a, b: abs(math.log(a / b)))
    inside = mask > 0.5
    mean = x[inside].mean(0).tolist()  # (3,) the shape's mean colour
    return where, size, nearest(mean, COLOURS, math.dist)


def corner_draws(cfg: ImageAugmentConfig) -> list[AugmentDraw]:
    """Every combination of each knob at its two extremes: the worst cases."""
    out = []
    for sx, sy, s, r, b, c in itertools.product((-1, 1), repeat=6):
        out.append(AugmentDraw(sx * cfg.translate, sy * cfg.translate, 1 + s * cfg.scale, r * cfg.rotate, False,
                               1 + b * cfg.brightness, 1 + c * cfg.contrast, cfg.noise * 255, len(out)))
    return out


def test_demo_captions_stay_true_at_every_extreme_and_random_draw(one_torch_thread):
    """Position cell, size class (apparent radius from the pixel count) and colour name of each demo shape hold
    after the default augmentation: at the 64 corners of the knobs and at random draws."""
    rng = random.Random(0)
    scenes = plan(96, 16, seed=3)
    checked = 0
    for scene in scenes[:: 2]:
        x = image_pixels(decode_image(render_image(scene)), 64)  # (64, 64, 3)
        mask = torch.from_numpy(_shape_mask(scene, 64))  # (64, 64) the shape's coverage
        count = float(mask.sum())
        truth = (scene.where, scene.size, scene.colour)
        assert caption_of(x, mask, scene.size, count) == truth
        for d in corner_draws(ON) + [draw_augment(ON, rng) for _ in range(8)]:
            moved = warp(mask[..., None], d)[..., 0]  # the same geometry on the shape's coverage
            assert caption_of(augment_pixels(x, d), moved, scene.size, count) == truth, (scene, d)
            checked += 1
    assert {s.colour for s in scenes[::2]} == set(COLOURS) and {s.where for s in scenes[::2]} == set(POSITIONS)
    assert checked == 56 * 72


def test_no_draw_changes_nothing_and_a_shift_moves_right_and_down():
    x = torch.rand(16, 16, 3) * 255
    still = AugmentDraw(0, 0, 1, 0, False, 1, 1, 0, 0)
    assert torch.allclose(augment_pixels(x, still), x, atol=1e-3)
    dot = torch.zeros(16, 16, 1)
    dot[4, 4] = 1.0
    moved = warp(dot, AugmentDraw(2 / 16, 1 / 16, 1, 0, False, 1, 1, 0, 0))[..., 0]
    assert divmod(int(moved.argmax()), 16) == (5, 6)  # (row, column): one down, two right
    flipped = warp(x, AugmentDraw(0, 0, 1, 0, True, 1, 1, 0, 0))
    assert torch.allclose(flipped, x.flip(1), atol=1e-3)


def test_hflip_is_off_unless_asked():
    assert ImageAugmentConfig().hflip is False and ImageAugmentConfig().enabled is False
    rng = random.Random(1)
    assert not any(draw_augment(ON, rng).flip for _ in range(200))
    flips = sum(draw_augment(ImageAugmentConfig(enabled=True, hflip=True), rng).flip for _ in range(200))
    assert 60 < flips < 140


def test_brightening_keeps_hue_where_channels_would_clip():
    """An orange brightened past 255 keeps its hue (pulled toward its grey), not the yellower one per-channel
    clipping gives."""
    def hue(rgb):
        return colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0]

    orange = torch.tensor(COLOURS["orange"], dtype=torch.float32).expand(8, 8, 3)
    out = augment_pixels(orange, AugmentDraw(0, 0, 1, 0, False, 1.3, 1, 0, 0))[0, 0].tolist()
    assert max(out) <= 255 and hue(out) == pytest.approx(hue(COLOURS["orange"]), abs=1e-4)
    clipped = (orange[0, 0] * 1.3).clamp(0, 255).tolist()
    assert hue(clipped) - hue(COLOURS["orange"]) > 0.02  # what this guards against: toward yellow


def image_rows(shards, cfg, n=3):
    """The image values of the first ``n`` training batches, with their keys and texts."""
    loader = make_train_loader(cfg.data, cfg.train, cfg.data.train, TOK, rank=0, world_size=1)
    try:
        batches = [next(loader) for _ in range(n)]
    finally:
        loader.close()
    return ([b.parts["image"].values for b in batches],
            [(b.parts["image"].keys, b.parts["text"].keys, b.parts["text"].values) for b in batches])


@pytest.fixture
def pairs(tmp_path):
    members = []
    for i in range(24):
        s = good_sample(f"s{i:03d}", 0)
        members += [(f"{s['__key__']}.{ext}", data) for ext, data in s.items() if ext != "__key__"]
    write_tar(tmp_path / "shard-000000.tar", members)
    return str(tmp_path)


def test_training_loader_augments_reproducibly_and_changes_pixels_only(pairs, one_torch_thread):
    on = {"image_augment": {"enabled": True, "translate": 0.1, "rotate": 10.0}}
    a_values, a_order = image_rows(pairs, make_cfg(pairs, **on))
    b_values, b_order = image_rows(pairs, make_cfg(pairs, **on))
    assert all(torch.equal(a, b) for a, b in zip(a_values, b_values)) and _same_order(a_order, b_order)
    other_seed, _ = image_rows(pairs, make_cfg(pairs, seed=1, **on))
    off_values, off_order = image_rows(pairs, make_cfg(pairs))
    assert _same_order(off_order, a_order)  # same samples, same captions: only the pixels differ
    assert not any(torch.equal(a, b) for a, b in zip(a_values, off_values))
    assert not any(torch.equal(a, b) for a, b in zip(a_values, other_seed))


def _same_order(x, y):
    return all(ki == kj and ti == tj and torch.equal(vi, vj) for (ki, ti, vi), (kj, tj, vj) in zip(x, y))


def test_eval_loader_and_eval_rows_never_augment(pairs):
    on = make_cfg(pairs, image_augment={"enabled": True, "translate": 0.2, "noise": 0.5})
    off = make_cfg(pairs)
    first = [b.parts["image"].values for b in make_eval_loader(on.data, on.data.train, TOK, 4)]
    plain = [b.parts["image"].values for b in make_eval_loader(off.data, off.data.train, TOK, 4)]
    assert len(first) == 6 and all(torch.equal(a, b) for a, b in zip(first, plain))
    sample = good_sample("s007", 0)
    rows = sample_rows(sample, on.data, TOK, train=False, augment_rng=random.Random(0))
    assert torch.equal(rows[0].elements.values, sample_rows(sample, off.data, TOK, train=False)[0].elements.values)
    trained = sample_rows(sample, on.data, TOK, train=True, rng=random.Random(0), augment_rng=random.Random(0))
    assert not torch.equal(trained[0].elements.values, rows[0].elements.values)


@pytest.mark.parametrize("value, key", [
    ({"translate": 0.3}, "data.image_augment.translate: must be in [0, 0.25], got 0.3"),
    ({"scale": -0.1}, "data.image_augment.scale: must be in [0, 0.5), got -0.1"),
    ({"brightness": 1.0}, "data.image_augment.brightness: must be in [0, 1), got 1.0"),
    ({"hflip": "yes"}, "data.image_augment.hflip: expected bool, got str 'yes'"),
    ({"flip": True}, "data.image_augment.flip: unknown key"),
    (True, "data.image_augment: expected an object for ImageAugmentConfig, got True"),
])
def test_bad_values_are_refused_naming_the_key(value, key):
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"data": {"image_augment": value}})
    assert str(exc.value).startswith(key) and "\n" not in str(exc.value)


@pytest.mark.slow
def test_a_training_run_with_augmentation_steps(tmp_path, monkeypatch):
    """The trainer's own loader (DataLoader worker, DeepSpeed engine) trains with augmented pictures."""
    from helpers import run_trainer

    seen = {}
    rc = run_trainer(tmp_path, monkeypatch, "data.image_augment.enabled=true", "data.num_workers=1",
                     "train.max_steps=3", "train.log_every=1",
                     observe=lambda trainer: seen.update(on=trainer.cfg.data.image_augment.enabled))
    assert rc == 0 and seen == {"on": True}
