"""Background scenes of the miniature world, drawn with flat shapes so that each stays recognisable at 64x64.

Every scene has a fixed palette and structure (what makes it "the beach") plus per-photo layout jitter from
``rng`` (where the sun, trees or books are). The person is composited on top, so a scene never touches the face.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Colour = tuple[int, int, int]


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 12) -> Colour:
    noise = rng.normal(0, amount, 3).tolist()
    return tuple(min(255, max(0, int(c + e))) for c, e in zip(colour, noise, strict=True))


def _vertical_gradient(size: int, top: Colour, bottom: Colour) -> Image.Image:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    column = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return Image.fromarray(column.astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)


def _studio(size: int, rng: np.random.Generator) -> Image.Image:
    base = _jitter(rng, (120, 135, 150), 10)
    return _vertical_gradient(size, tuple(min(255, c + 50) for c in base), tuple(max(0, c - 30) for c in base))


def _beach(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (110, 180, 240), (190, 225, 250))
    d = ImageDraw.Draw(img)
    horizon = size * rng.uniform(0.42, 0.5)
    shore = size * rng.uniform(0.6, 0.68)
    d.rectangle((0, horizon, size, shore), fill=_jitter(rng, (30, 110, 190), 8))
    for _ in range(3):
        y = rng.uniform(horizon + 2, shore - 1)
        d.line((0, y, size, y + rng.uniform(-2, 2)), fill=(220, 240, 255), width=max(1, size // 64))
    d.rectangle((0, shore, size, size), fill=_jitter(rng, (235, 210, 150), 8))
    sx, sy, r = size * rng.choice((0.15, 0.85)), size * rng.uniform(0.1, 0.22), size * 0.07
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 235, 90))
    return img


def _forest(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (40, 90, 50), (25, 60, 30))
    d = ImageDraw.Draw(img)
    for _ in range(6):
        x = rng.uniform(0, size)
        w = size * rng.uniform(0.04, 0.09)
        d.rectangle((x - w / 2, size * 0.2, x + w / 2, size), fill=_jitter(rng, (95, 60, 30), 10))
    for _ in range(12):
        x, y = rng.uniform(0, size), rng.uniform(-0.05, 0.35) * size
        r = size * rng.uniform(0.08, 0.16)
        d.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (50, 130, 50), 20))
    d.rectangle((0, size * 0.85, size, size), fill=(60, 100, 40))
    return img


def _snow(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (190, 205, 225), (225, 232, 242))
    d = ImageDraw.Draw(img)
    ground = size * rng.uniform(0.5, 0.6)
    for _ in range(3):
        x = rng.uniform(0, size)
        h = size * rng.uniform(0.2, 0.35)
        w = h * 0.45
        d.polygon([(x, ground - h), (x - w, ground), (x + w, ground)], fill=(40, 90, 70))
        d.polygon([(x, ground - h), (x - w * 0.4, ground - h * 0.6), (x + w * 0.4, ground - h * 0.6)], fill=(250,) * 3)
    d.rectangle((0, ground, size, size), fill=(248, 250, 255))
    r = max(1.0, size / 100)
    for x, y in rng.uniform(0, size, (30, 2)):
        d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255))
    return img


def _city(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (150, 170, 200), (200, 205, 215))
    d = ImageDraw.Draw(img)
    x = -rng.uniform(0, size * 0.1)
    while x < size:
        w = size * rng.uniform(0.14, 0.24)
        top = size * rng.uniform(0.02, 0.3)
        d.rectangle((x, top, x + w - 1, size), fill=_jitter(rng, (95, 95, 110), 20))
        step = size / 16
        for wy in np.arange(top + step * 0.5, size, step):
            for wx in np.arange(x + step * 0.4, x + w - step * 0.6, step):
                d.rectangle((wx, wy, wx + step * 0.45, wy + step * 0.5), fill=(255, 220, 120))
        x += w
    for _ in range(2):
        bx, by = rng.uniform(0, size * 0.8), rng.uniform(0.1, 0.4) * size
        colour = [(255, 40, 120), (40, 220, 255), (255, 200, 0)][int(rng.integers(3))]
        d.rectangle((bx, by, bx + size * 0.2, by + size * 0.1), fill=colour)
    d.rectangle((0, size * 0.88, size, size), fill=(70, 70, 75))
    return img


def _living_room(size: int, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (size, size), _jitter(rng, (225, 200, 160), 8))
    d = ImageDraw.Draw(img)
    wx = size * rng.choice((0.03, 0.68))
    d.rectangle((wx, size * 0.12, wx + size * 0.28, size * 0.5), fill=(110, 80, 50))
    d.rectangle((wx + size * 0.02, size * 0.14, wx + size * 0.26, size * 0.48), fill=(170, 215, 245))
    px = size * 0.7 - wx * 0.9
    d.rectangle((px, size * 0.15, px + size * 0.2, size * 0.3), fill=(150, 110, 60))
    d.rectangle((px + size * 0.02, size * 0.17, px + size * 0.18, size * 0.28), fill=_jitter(rng, (120, 160, 90), 40))
    d.rectangle((0, size * 0.72, size, size), fill=_jitter(rng, (150, 60, 55), 20))  # sofa back
    d.rectangle((0, size * 0.68, size, size * 0.74), fill=_jitter(rng, (170, 75, 65), 20))
    return img


def _mountains(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (90, 150, 225), (180, 210, 240))
    d = ImageDraw.Draw(img)
    base = size * 0.7
    for _ in range(4):
        x = rng.uniform(-0.1, 1.1) * size
        h = size * rng.uniform(0.3, 0.55)
        w = h * rng.uniform(0.8, 1.2)
        peak = (x, base - h)
        d.polygon([peak, (x - w, base), (x + w, base)], fill=_jitter(rng, (110, 110, 135), 10))
        d.polygon([peak, (x - w * 0.25, base - h * 0.75), (x + w * 0.25, base - h * 0.75)], fill=(250, 250, 255))
    d.rectangle((0, base, size, size), fill=(90, 150, 70))
    return img


def _desert(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (250, 190, 120), (250, 225, 170))
    d = ImageDraw.Draw(img)
    sx, sy, r = size * rng.uniform(0.1, 0.9), size * 0.18, size * 0.1
    d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 245, 200))
    xs = np.linspace(0, size, 17)
    for level, colour in ((0.55, (220, 150, 80)), (0.7, (200, 125, 60))):
        phase = rng.uniform(0, 6.3)
        ys = size * level + size * 0.05 * np.sin(xs / size * 6 + phase)
        d.polygon([(0, size)] + list(zip(xs.tolist(), ys.tolist(), strict=True)) + [(size, size)], fill=colour)
    cx = size * rng.choice((0.12, 0.88))
    w = size * 0.035
    d.rectangle((cx - w, size * 0.45, cx + w, size * 0.75), fill=(50, 130, 60))
    d.rectangle((cx - w * 4, size * 0.52, cx - w * 2.5, size * 0.6), fill=(50, 130, 60))
    d.rectangle((cx - w * 4, size * 0.58, cx, size * 0.6), fill=(50, 130, 60))
    return img


def _night_sky(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (10, 15, 45), (35, 40, 90))
    d = ImageDraw.Draw(img)
    r = max(0.7, size / 128)
    for x, y in rng.uniform(0, size, (40, 2)):
        d.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 230))
    mx, my, mr = size * rng.choice((0.15, 0.85)), size * 0.15, size * 0.09
    d.ellipse((mx - mr, my - mr, mx + mr, my + mr), fill=(250, 245, 210))
    d.ellipse((mx - mr * 0.5, my - mr * 1.1, mx + mr * 1.4, my + mr * 0.8), fill=(15, 20, 55))
    return img


def _garden(size: int, rng: np.random.Generator) -> Image.Image:
    img = _vertical_gradient(size, (140, 200, 245), (200, 230, 250))
    d = ImageDraw.Draw(img)
    d.rectangle((0, size * 0.35, size, size * 0.62), fill=(50, 120, 55))  # hedge
    d.rectangle((0, size * 0.62, size, size), fill=(100, 180, 70))  # lawn
    r = size / 45
    palette = [(240, 60, 80), (250, 220, 50), (250, 250, 250), (200, 90, 220), (255, 140, 40)]
    for x, y in zip(rng.uniform(0, size, 24), rng.uniform(0.37, 1.0, 24) * size, strict=True):
        d.ellipse((x - r, y - r, x + r, y + r), fill=palette[int(rng.integers(len(palette)))])
    return img


def _library(size: int, rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (size, size), (90, 55, 30))
    d = ImageDraw.Draw(img)
    shelf = size / 4
    palette = [(160, 30, 30), (30, 70, 140), (40, 110, 60), (200, 160, 60), (110, 40, 100), (220, 210, 190)]
    for row in range(4):
        top = row * shelf + shelf * 0.12
        x = rng.uniform(0, 2)
        while x < size:
            w = size * rng.uniform(0.025, 0.05)
            h = shelf * rng.uniform(0.65, 0.85)
            d.rectangle((x, top + shelf * 0.85 - h, x + w, top + shelf * 0.85), fill=palette[int(rng.integers(6))])
            x += w + 0.5
        d.rectangle((0, top + shelf * 0.85, size, top + shelf), fill=(130, 85, 45))
    return img


SCENES: dict[str, Callable[[int, np.random.Generator], Image.Image]] = {
    "studio": _studio,
    "beach": _beach,
    "forest": _forest,
    "snow": _snow,
    "city": _city,
    "living room": _living_room,
    "mountains": _mountains,
    "desert": _desert,
    "night sky": _night_sky,
    "garden": _garden,
    "library": _library,
}


def draw_background(name: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the named scene as a ``size`` x ``size`` RGB image."""
    try:
        scene = SCENES[name]
    except KeyError:
        raise ValueError(f"unknown background {name!r}; expected one of {list(SCENES)}") from None
    return scene(size, rng)
