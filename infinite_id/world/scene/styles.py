"""Lighting and rendering styles of the miniature world, as cheap numpy/PIL filters on the supersampled canvas.

Each style changes the whole picture in its own recognisable way while keeping shapes and colours readable,
so identity and semantics survive stylisation:

- photo: soft shading, slight blur and film grain;
- cartoon: flat posterised colours with bold dark outlines;
- sketch: coloured-pencil hatching and graphite edges on white paper;
- oil painting: brush strokes smeared along a stroke field, warm varnish and canvas weave;
- pop art: saturated three-level palette, halftone dots and thick outlines;
- watercolor: bled, lightened pigment with darker pooled edges on grainy paper.

Filters take float32 (H, W, 3) arrays in [0, 1] at the output resolution (shapes are anti-aliased already).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from .factors import Nuisance

Array = np.ndarray


@lru_cache(maxsize=8)
def _grid(n: int) -> tuple[Array, Array]:
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    return xs, ys


def apply_lighting(
    pixels: Array, face_weight: Array, face_centre: Array, face_half_width: float, nuisance: Nuisance
) -> Array:
    """Light the picture: round the face (darker rim, brighter toward the light), then a directional gradient
    over the whole frame, overall brightness and colour temperature."""
    n = pixels.shape[0]
    xs, ys = _grid(n)
    lx, ly = np.cos(nuisance.light_angle), np.sin(nuisance.light_angle)
    u = (xs - face_centre[0]) / face_half_width
    v = (ys - face_centre[1]) / (face_half_width * 1.3)
    face = -0.12 * np.minimum(u * u + v * v, 1.5) + 0.25 * nuisance.light_strength * (u * lx + v * ly)
    ramp = ((xs - n / 2) * lx + (ys - n / 2) * ly) * (0.5 * nuisance.light_strength / (n / 2))
    gain = nuisance.brightness * (1.0 + face_weight * face) * (1.0 + ramp)
    tint = np.array([1 + 0.07 * nuisance.warmth, 1.0, 1 - 0.07 * nuisance.warmth], np.float32)
    return np.clip(pixels * gain[..., None] * tint, 0.0, 1.0)


def _to_image(pixels: Array) -> Image.Image:
    return Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))


def _from_image(image: Image.Image) -> Array:
    return np.asarray(image, dtype=np.float32) / 255.0


def _blur(pixels: Array, radius: float) -> Array:
    return _from_image(_to_image(pixels).filter(ImageFilter.GaussianBlur(radius)))


def _luma(pixels: Array) -> Array:
    return pixels @ np.array([0.299, 0.587, 0.114], np.float32)


def _edges(pixels: Array) -> Array:
    """Colour edge strength: the largest channel difference to the right or lower neighbour."""
    dx = np.zeros(pixels.shape[:2], np.float32)
    dy = np.zeros(pixels.shape[:2], np.float32)
    dx[:, :-1] = np.abs(pixels[:, 1:] - pixels[:, :-1]).max(axis=2)
    dy[:-1] = np.abs(pixels[1:] - pixels[:-1]).max(axis=2)
    return np.maximum(dx, dy)


def _saturate(pixels: Array, amount: float) -> Array:
    grey = _luma(pixels)[..., None]
    return np.clip(grey + (pixels - grey) * amount, 0, 1)


def _posterise_value(pixels: Array, levels: int) -> Array:
    """Quantise brightness (the max channel) while keeping hue and saturation: flat cel shading."""
    value = pixels.max(axis=2, keepdims=True)
    flat = np.ceil(value * levels - 0.3).clip(1, levels) / levels
    return pixels / np.maximum(value, 1e-3) * flat


def _vignette(n: int, strength: float, start: float = 0.0) -> Array:
    xs, ys = _grid(n)
    r2 = ((xs - n / 2) ** 2 + (ys - n / 2) ** 2) / (n / 2) ** 2
    return (1.0 - strength * np.clip(r2 - start, 0, None))[..., None]


@lru_cache(maxsize=16)
def _stroke_offsets(n: int, seed: int) -> tuple[Array, Array, Array]:
    """A brush-stroke field: one direction per 3x3-pixel cell (pixel offsets) and a streak texture."""
    rng = np.random.default_rng(seed)
    cells = -(-n // 3)
    angle = np.repeat(np.repeat(rng.uniform(0, np.pi, (cells, cells)), 3, 0), 3, 1)[:n, :n]
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    xs, ys = _grid(n)
    streak = 0.06 * np.sin((-xs * sin + ys * cos) * 2.2 + rng.uniform(0, 6.3, (n, n)) * 0.3).astype(np.float32)
    return cos, sin, streak


def _photo(pixels: Array, rng: np.random.Generator) -> Image.Image:
    pixels = pixels * _vignette(pixels.shape[0], 0.12)
    pixels = pixels + rng.normal(0, 0.018, pixels.shape[:2]).astype(np.float32)[..., None]
    return _to_image(pixels)


def _cartoon(pixels: Array, rng: np.random.Generator) -> Image.Image:
    flat = _posterise_value(_saturate(pixels, 1.4), 4)
    outline = (_edges(pixels) > 0.22).astype(np.float32)
    return _to_image(flat * (1 - 0.85 * outline[..., None]))


def _sketch(pixels: Array, rng: np.random.Generator) -> Image.Image:
    xs, ys = _grid(pixels.shape[0])
    darkness = 1.0 - _luma(pixels)
    hatch1 = ((xs + ys) % 3 < 1).astype(np.float32)
    hatch2 = ((xs - ys) % 3 < 1).astype(np.float32)
    ink = np.clip(0.12 + hatch1 * 1.3 * darkness + hatch2 * np.clip(darkness - 0.45, 0, 1) * 2.0, 0, 1)
    pencil = _saturate(pixels, 1.2) * 0.8
    paper = np.array([0.98, 0.96, 0.92], np.float32)
    out = paper * (1 - ink[..., None]) + pencil * ink[..., None]
    graphite = np.clip(_edges(pixels) * 2.5 - 0.1, 0, 0.85)
    out = out * (1 - graphite[..., None]) + 0.12 * graphite[..., None]
    return _to_image(out)


def _oil(pixels: Array, rng: np.random.Generator) -> Image.Image:
    n = pixels.shape[0]
    xs, ys = _grid(n)
    cos, sin, streak = _stroke_offsets(n, int(rng.integers(4)))
    acc = np.zeros_like(pixels)
    for k in (-1.0, -0.5, 0.0, 0.5, 1.0):
        sx = np.clip(xs + cos * k * 2.0 + 0.5, 0, n - 1).astype(np.int32)
        sy = np.clip(ys + sin * k * 2.0 + 0.5, 0, n - 1).astype(np.int32)
        acc += pixels[sy, sx]
    painted = _posterise_value(_saturate(acc / 5, 1.5), 9)
    varnish = np.array([1.08, 0.97, 0.78], np.float32)
    impasto = (1 + 2 * streak) * (1 - 0.08 * ((xs + ys) % 2))
    out = painted * varnish * impasto[..., None] * _vignette(n, 0.45, 0.3)
    return _to_image(out)


def _pop_art(pixels: Array, rng: np.random.Generator) -> Image.Image:
    xs, ys = _grid(pixels.shape[0])
    vivid = _saturate(pixels, 2.2)
    levels = np.where(vivid > 0.62, 1.0, np.where(vivid > 0.28, 0.55, 0.05)).astype(np.float32)
    dot = (xs % 3 == 1) & (ys % 3 == 1)
    luma = _luma(levels)
    halftone = np.where((luma > 0.2) & (luma < 0.85) & dot, 0.55, 1.0).astype(np.float32)
    outline = (_edges(pixels) > 0.15).astype(np.float32)
    return _to_image(levels * halftone[..., None] * (1 - outline[..., None]))


def _watercolor(pixels: Array, rng: np.random.Generator) -> Image.Image:
    n = pixels.shape[0]
    soft = _blur(pixels, n / 128)
    wide = _blur(pixels, n / 40)
    pooled = np.clip(np.abs(soft - wide).sum(axis=2) * 1.2, 0, 0.5)
    wash = 1.0 - (1.0 - _saturate(soft, 0.95)) * 0.8
    wash = wash * (1 - pooled[..., None] * 0.5)
    grain = _blur(np.repeat(rng.normal(0.5, 0.15, (n, n, 1)).astype(np.float32), 3, axis=2), 0.7)[..., :1] - 0.5
    xs, ys = _grid(n)
    edge = np.minimum(np.minimum(xs, n - 1 - xs), np.minimum(ys, n - 1 - ys)) / (n * 0.06)
    paper = np.clip(1.2 - edge, 0, 1)[..., None]
    out = wash * (1 + 0.3 * grain)
    out = out * (1 - paper) + np.array([0.98, 0.97, 0.94], np.float32) * paper
    return _to_image(out)


STYLE_FILTERS: dict[str, Callable[[Array, np.random.Generator], Image.Image]] = {
    "photo": _photo,
    "cartoon": _cartoon,
    "sketch": _sketch,
    "oil painting": _oil,
    "pop art": _pop_art,
    "watercolor": _watercolor,
}


def apply_style(pixels: Array, style: str, rng: np.random.Generator) -> Image.Image:
    """Stylise an image (float32, (H, W, 3), [0, 1]) into an RGB picture of the same size."""
    try:
        style_filter = STYLE_FILTERS[style]
    except KeyError:
        raise ValueError(f"unknown style {style!r}; expected one of {list(STYLE_FILTERS)}") from None
    return style_filter(pixels.astype(np.float32, copy=False), rng)
