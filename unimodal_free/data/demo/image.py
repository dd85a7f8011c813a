"""The demo's pictures: a scene drawn as a 64x64 image (PNG, some RGBA PNG, some JPEG)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from unimodal_free.data.demo.scenes import COLOURS, POSITIONS, SIZES, Scene

IMAGE_SIZE = 64

_SCALE = 4  # draw at 4x and box-filter down: anti-aliased edges without a vector library


def _polygon(cx, cy, radii, angles_deg):
    return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for r, a in zip(radii, angles_deg)]


def _shape_outline(shape: str, cx: float, cy: float, r: float, rot: float):
    """Polygon vertices (or None for the round shapes) with comparable visual area per shape."""
    if shape == "square":
        return _polygon(cx, cy, [r * 1.15] * 4, [45 + rot + 90 * k for k in range(4)])
    if shape == "triangle":
        return _polygon(cx, cy, [r * 1.3] * 3, [-90 + rot + 120 * k for k in range(3)])
    if shape == "hexagon":
        return _polygon(cx, cy, [r * 1.1] * 6, [rot + 60 * k for k in range(6)])
    if shape == "star":
        return _polygon(cx, cy, [r * 1.35, r * 0.55] * 5, [-90 + rot + 36 * k for k in range(10)])
    if shape == "diamond":  # a rhombus, taller than wide, so it is not a rotated square
        return [(cx, cy - r * 1.3), (cx + r * 0.8, cy), (cx, cy + r * 1.3), (cx - r * 0.8, cy)]
    if shape == "cross":
        a, w = r * 1.2, r * 0.4
        pts = [(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a), (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)]
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    return None


def _shape_mask(scene: Scene, size: int) -> np.ndarray:
    """Anti-aliased coverage (H, W) in [0, 1] of the scene's shape."""
    big = size * _SCALE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    fx, fy = POSITIONS[scene.where]
    cx, cy = (fx + scene.dx) * big, (fy + scene.dy) * big
    r = SIZES[scene.size] * big
    outline = _shape_outline(scene.shape, cx, cy, r, scene.rotation)
    if outline is not None:
        draw.polygon(outline, fill=255)
    elif scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:  # ring
        draw.ellipse([cx - r * 1.15, cy - r * 1.15, cx + r * 1.15, cy + r * 1.15], outline=255, width=round(r * 0.45))
    return np.asarray(mask.reduce(_SCALE), dtype=np.float32) / 255.0  # box filter: anti-aliased edges


def render_image(scene: Scene, size: int = IMAGE_SIZE) -> bytes:
    """The scene as encoded image bytes (PNG / RGBA PNG / JPEG)."""
    # Background: a linear gradient between two muted colours, plus mild sensor-like noise.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)  # (H, W) each
    t = 0.5 + 0.7 * (np.cos(scene.gradient_angle) * (xx - 0.5) + np.sin(scene.gradient_angle) * (yy - 0.5))
    c0, c1 = (np.array(c, np.float32) for c in scene.background)
    bg = c0 + np.clip(t, 0, 1)[..., None] * (c1 - c0)  # (H, W, 3)
    bg += np.random.default_rng(scene.noise_seed).normal(0, 3, bg.shape).astype(np.float32)

    # The shape (opaque) over the background (alpha a_bg): straight-alpha "over".
    a = _shape_mask(scene, size)[..., None]  # (H, W, 1)
    a_bg = scene.background_alpha / 255.0
    a_out = a + a_bg * (1 - a)  # (H, W, 1)
    rgb = (np.array(COLOURS[scene.colour], np.float32) * a + bg * a_bg * (1 - a)) / a_out  # (H, W, 3)
    rgb = np.clip(rgb, 0, 255).round().astype(np.uint8)
    buf = io.BytesIO()
    if scene.background_alpha < 255:
        alpha = (a_out * 255).round().astype(np.uint8)
        Image.fromarray(np.concatenate([rgb, alpha], axis=-1), "RGBA").save(buf, format="PNG")
    elif scene.image_format == "jpg":
        Image.fromarray(rgb, "RGB").save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return buf.getvalue()

