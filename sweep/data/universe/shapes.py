"""Render labelled shape images whose difficulty is driven by one per-image nuisance severity.

Each image gets a severity s in [0, 1]; s scales every nuisance at once: smaller, off-centre,
rotated, low-contrast shapes among more clutter, with occlusion and pixel noise. So the
difficulty a model zoo measures should track s, which the tests check.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "plus", "star", "ring", "crescent", "arrow", "ell", "bowtie")
SUPERSAMPLE = 4


def _polygon(kind: str) -> list[tuple[float, float]]:
    """Outline of a polygonal class in unit coordinates (radius about 1), before rotation."""
    if kind == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if kind == "triangle":
        return [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if kind == "plus":
        a, b = 0.3, 1.0
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a),
                (-b, -a), (-a, -a)]
    if kind == "star":
        return [((1.0 if i % 2 == 0 else 0.42) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (1.0 if i % 2 == 0 else 0.42) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    if kind == "arrow":
        return [(-1.0, -0.25), (0.2, -0.25), (0.2, -0.65), (1.0, 0.0), (0.2, 0.65), (0.2, 0.25), (-1.0, 0.25)]
    if kind == "ell":
        return [(-0.8, -1.0), (-0.25, -1.0), (-0.25, 0.45), (0.8, 0.45), (0.8, 1.0), (-0.8, 1.0)]
    if kind == "bowtie":
        return [(-1.0, -0.8), (0.0, -0.1), (1.0, -0.8), (1.0, 0.8), (0.0, 0.1), (-1.0, 0.8)]
    raise ValueError(kind)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, radius: float, angle: float,
                fill: tuple[int, int, int], background: tuple[int, int, int]) -> None:
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "circle":
        draw.ellipse(box, fill=fill)
    elif kind == "ring":
        draw.ellipse(box, fill=fill)
        inner = 0.55 * radius
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=background)
    elif kind == "crescent":
        draw.ellipse(box, fill=fill)
        dx, dy = 0.45 * radius * math.cos(angle), 0.45 * radius * math.sin(angle)
        draw.ellipse((cx + dx - 0.85 * radius, cy + dy - 0.85 * radius, cx + dx + 0.85 * radius,
                      cy + dy + 0.85 * radius), fill=background)
    else:
        c, s = math.cos(angle), math.sin(angle)
        points = [(cx + radius * (x * c - y * s), cy + radius * (x * s + y * c)) for x, y in _polygon(kind)]
        draw.polygon(points, fill=fill)


def _colour(rng: np.random.Generator, luminance: float) -> tuple[int, int, int]:
    """A random hue at roughly the given luminance (0..1)."""
    tint = rng.uniform(-0.25, 0.25, size=3)
    rgb = np.clip(luminance + tint - tint.mean(), 0.0, 1.0)
    return tuple(int(round(255 * v)) for v in rgb)


def render(label: int, severity: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image (H, W, 3 uint8) of class `label` at nuisance `severity`."""
    canvas = size * SUPERSAMPLE
    background_lum = rng.uniform(0.2, 0.8)
    contrast = (0.6 - 0.4 * severity) * rng.choice((-1.0, 1.0))
    if not 0.05 < background_lum + contrast < 0.95:
        contrast = -contrast
    background = _colour(rng, background_lum)
    image = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)

    for _ in range(int(round(severity * 5 * rng.uniform(0.5, 1.0)))):  # clutter: small distractor shapes
        kind = CLASSES[rng.integers(len(CLASSES))]
        _draw_shape(draw, kind, rng.uniform(0, canvas), rng.uniform(0, canvas), canvas * rng.uniform(0.05, 0.12),
                    rng.uniform(0, 2 * math.pi), _colour(rng, rng.uniform(0.1, 0.9)), background)

    radius = canvas * (0.40 - 0.18 * severity) * rng.uniform(0.9, 1.1)
    max_offset = severity * (canvas / 2 - radius) * 0.9
    cx, cy = canvas / 2 + rng.uniform(-max_offset, max_offset, size=2)
    angle = severity * rng.uniform(-math.pi, math.pi)
    _draw_shape(draw, CLASSES[label], cx, cy, radius, angle, _colour(rng, background_lum + contrast), background)

    if rng.uniform() < severity:  # occlusion: a background-coloured bar across part of the shape
        w, h = radius * rng.uniform(0.4, 1.2) * severity, radius * rng.uniform(0.3, 2.0)
        ox, oy = cx + rng.uniform(-radius, radius), cy + rng.uniform(-radius, radius)
        draw.rectangle((ox - w / 2, oy - h / 2, ox + w / 2, oy + h / 2), fill=_colour(rng, rng.uniform(0.1, 0.9)))

    pixels = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    pixels += rng.normal(0.0, 255 * 0.10 * severity, size=pixels.shape)
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def render_split(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` images with balanced labels and uniform severities: (images N,H,W,3 uint8, labels, severities)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    severities = rng.uniform(0.0, 1.0, size=n)
    images = np.stack([render(int(y), float(s), size, rng) for y, s in zip(labels, severities, strict=True)])
    return images, labels.astype(np.int64), severities
