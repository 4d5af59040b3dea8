"""The portrait renderer of the miniature world: (identity, semantics, nuisance) -> a head-and-shoulders image.

Drawing happens on a supersampled canvas with PIL polygons and is then downscaled, which anti-aliases for free.
Faces are laid out in a face frame (unit = half the face height, x right, y down) and projected with a cheap
pseudo-3D pose: every point carries a depth, so a yaw moves the nose more than the eyes and the ears the other
way. The person is drawn on a transparent layer and composited over the background, so the scene never changes
face pixels; lighting and the style filter come last (see :mod:`infinite_id.world.scene.styles`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .backgrounds import draw_background
from .factors import CLOTHING_COLOURS, EYE_COLOURS, HAIR_COLOURS, IdentityFactors, Nuisance, Semantics
from .styles import apply_lighting, apply_style

Colour = tuple[int, ...]

_COLORFUL_STRIPES: tuple[Colour, ...] = ((230, 50, 50), (250, 200, 40), (40, 170, 80), (40, 110, 220), (160, 70, 200))
_HAT_COLOURS: tuple[Colour, ...] = ((40, 40, 45), (120, 80, 45), (180, 40, 40), (40, 60, 120), (220, 200, 160))
_SCARF_COLOURS: tuple[Colour, ...] = ((200, 40, 50), (40, 110, 60), (240, 180, 40), (60, 70, 160), (150, 150, 150))
_GOLD: Colour = (235, 190, 50)
_DARK: Colour = (25, 20, 20)
_NOSE_TIP_DEPTH = 1.1


@dataclass(frozen=True)
class Layout:
    """Where the face ended up, in output pixels: what a face detector/aligner would report."""

    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 (pixel centres at integer coordinates)
    landmarks: tuple[tuple[float, float], ...]  # left eye, right eye, nose tip, mouth left, mouth right (image left)
    face_mask: np.ndarray  # bool (size, size): skin of the face outline, before hair and accessories


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b, strict=True))


def _scale(a: Colour, f: float) -> Colour:
    return tuple(min(255, max(0, int(round(x * f)))) for x in a)


@lru_cache(maxsize=32)
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 16, rot: float = 0.0) -> np.ndarray:
    cos_t, sin_t = _unit_circle(n)
    x, y = rx * cos_t, ry * sin_t
    if rot:
        c, s = np.cos(rot), np.sin(rot)
        x, y = c * x - s * y, s * x + c * y
    return np.stack([cx + x, cy + y], axis=1)


class _Painter:
    """Collects shapes in face-frame coordinates, then projects them in one batch and draws them in order.

    Head shapes follow the pose (yaw, pitch, roll; depth-dependent), body shapes only shift a little with yaw.
    """

    def __init__(self, identity: IdentityFactors, nuisance: Nuisance, canvas: int) -> None:
        self.canvas = canvas
        self.unit = canvas * 0.27 * nuisance.scale
        self.centre = np.array([canvas * (0.5 + nuisance.dx), canvas * (0.43 + nuisance.dy)])
        self.width = identity.face_width
        self.yaw, self.pitch = nuisance.yaw, nuisance.pitch
        c, s = np.cos(nuisance.roll), np.sin(nuisance.roll)
        self.rotation = np.array([[c, -s], [s, c]])
        self._ops: list[tuple[str, np.ndarray, object, Colour, float]] = []

    def surface_depth(self, pts: np.ndarray, bulge: float = 0.0) -> np.ndarray:
        """Depth of the face surface under face-frame points (0 on the silhouette, about 0.8 at the centre)."""
        r2 = (pts[:, 0] / (self.width * 1.05)) ** 2 + (pts[:, 1] / 1.1) ** 2
        return 0.8 * np.sqrt(np.clip(1.0 - r2, 0.0, None)) + bulge

    def project(self, pts: np.ndarray, depth: np.ndarray | float = 0.0) -> np.ndarray:
        pts = np.asarray(pts, dtype=np.float64)
        z = np.broadcast_to(np.asarray(depth, dtype=np.float64), pts.shape[:1])
        x = pts[:, 0] * np.cos(self.yaw) + z * np.sin(self.yaw)
        y = pts[:, 1] + z * np.sin(self.pitch)
        return self.centre + (np.stack([x, y], axis=1) @ self.rotation.T) * self.unit

    def polygon(self, pts, fill: Colour, depth: np.ndarray | float | None = None) -> None:
        """A head shape; ``depth=None`` puts it on the face surface."""
        self._ops.append(("polygon", np.asarray(pts, dtype=np.float64), depth, fill, 0.0))

    def line(self, pts, fill: Colour, width: float, depth: np.ndarray | float | None = None) -> None:
        self._ops.append(("line", np.asarray(pts, dtype=np.float64), depth, fill, width))

    def body_polygon(self, pts, fill: Colour) -> None:
        """A torso shape: ignores head roll and pitch and turns only a little with yaw."""
        self._ops.append(("body", np.asarray(pts, dtype=np.float64), None, fill, 0.0))

    def body_line(self, pts, fill: Colour, width: float) -> None:
        self._ops.append(("body_line", np.asarray(pts, dtype=np.float64), None, fill, width))

    def paint(self) -> Image.Image:
        """Project every collected shape at once and draw them back to front on a transparent layer."""
        layer = Image.new("RGBA", (self.canvas, self.canvas), (0, 0, 0, 0))
        if not self._ops:
            return layer
        pts = np.concatenate([op[1] for op in self._ops])
        sizes = [len(op[1]) for op in self._ops]
        depth = self.surface_depth(pts)
        body = np.zeros(len(pts), dtype=bool)
        start = 0
        for (kind, _, d, _, _), n in zip(self._ops, sizes, strict=True):
            if kind.startswith("body"):
                body[start : start + n] = True
            elif d is not None:
                depth[start : start + n] = d
            start += n
        head = self.project(pts, depth)
        torso = self.centre + (pts + np.array([np.sin(self.yaw) * 0.15, -0.2])) * self.unit
        out = np.where(body[:, None], torso, head).tolist()
        draw = ImageDraw.Draw(layer)
        start = 0
        for (kind, _, _, fill, width), n in zip(self._ops, sizes, strict=True):
            xy = [tuple(p) for p in out[start : start + n]]
            colour = tuple(fill) + (255,)
            if kind in ("polygon", "body"):
                draw.polygon(xy, fill=colour)
            else:
                draw.line(xy, fill=colour, width=max(1, int(round(width * self.unit))))
            start += n
        return layer


# ----------------------------------------------------------------------------------------------------------------
# Face geometry in the face frame.
# ----------------------------------------------------------------------------------------------------------------


def _face_outline(identity: IdentityFactors, n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    w = identity.face_width
    lower = s > 0
    e = 2.0 / identity.jaw_squareness
    x = np.where(lower, w * np.sign(c) * np.abs(c) ** e, w * c)
    y = np.where(lower, np.abs(s) ** e, s)
    x = x * (1.0 - identity.chin_taper * np.clip(y, 0, None) ** 2)
    return np.stack([x, y], axis=1)


def _eye_line() -> float:
    return -0.12


def _features(identity: IdentityFactors, nuisance: Nuisance) -> dict[str, float]:
    ey = _eye_line()
    nose_tip = ey + 0.1 + identity.nose_length
    return {
        "eye_y": ey,
        "eye_x": identity.eye_spacing * identity.face_width,
        "eye_rx": identity.eye_size,
        "eye_ry": identity.eye_size
        * identity.eye_aspect
        * (1 - 0.3 * max(nuisance.smile, 0.0))
        * (1 + 0.25 * max(nuisance.brow_raise, 0.0)),
        "nose_y": nose_tip,
        # The mouth sits below the nose, a little lower on faces with a long chin.
        "mouth_y": nose_tip + 0.12 + identity.lip_thickness + 0.09 * (1 - nose_tip),
    }


def _brow(identity: IdentityFactors, f: dict[str, float], side: int, nuisance: Nuisance) -> np.ndarray:
    length = f["eye_rx"] * 2.6
    xs = np.linspace(-0.5, 0.5, 7)
    arch = identity.brow_arch + 0.03 * nuisance.brow_raise
    tilt = identity.brow_tilt - 0.15 * nuisance.brow_raise
    y_mid = -arch * (1 - (2 * xs) ** 2) - tilt * xs * length
    thick = identity.brow_thickness * (1.1 - 0.5 * (xs + 0.5))
    cx = side * (f["eye_x"] + 0.02)
    cy = f["eye_y"] - f["eye_ry"] - identity.brow_gap - 0.06 * nuisance.brow_raise
    top = np.stack([cx + side * xs * length, cy + y_mid - thick / 2], axis=1)
    bottom = np.stack([cx + side * xs * length, cy + y_mid + thick / 2], axis=1)
    return np.concatenate([top, bottom[::-1]])


def _mouth_curves(identity: IdentityFactors, f: dict[str, float], nuisance: Nuisance):
    mw = identity.mouth_width
    xs = np.linspace(-mw, mw, 11)
    bend = 1 - (xs / mw) ** 2
    centre = f["mouth_y"] - 0.08 * nuisance.smile * (xs / mw) ** 2 + 0.03 * nuisance.smile
    gap = 0.12 * nuisance.mouth_open * np.sqrt(bend)
    upper = centre - identity.lip_thickness * np.sqrt(bend) - gap / 2
    lower = centre + 1.3 * identity.lip_thickness * np.sqrt(bend) + gap / 2
    return xs, centre - gap / 2, centre + gap / 2, upper, lower


def _cap(identity: IdentityFactors, thickness: float, hairline: float, side_sweep: float = 0.0) -> np.ndarray:
    """Hair covering the top of the head: an outer arc and a hairline across the forehead."""
    w = identity.face_width
    phi = np.linspace(0.05 * np.pi, 0.95 * np.pi, 15)
    outer = np.stack([-(w + thickness) * np.cos(phi), -(1 + thickness) * np.sin(phi)], axis=1)
    xs = np.linspace(w * 1.0, -w * 1.0, 11)
    u = xs / w
    ys = -hairline + 0.38 * u**2 + side_sweep * identity.hair_side * u * 0.25
    inner = np.stack([xs, np.minimum(ys, -0.15)], axis=1)
    return np.concatenate([outer, inner])


def _person(painter: _Painter, identity: IdentityFactors, semantics: Semantics, nuisance: Nuisance) -> dict:
    """Queue the person's shapes on ``painter`` back to front; return the face outline and landmarks."""
    rng = np.random.default_rng([nuisance.seed, 1])  # accessory colours and other per-photo choices
    skin = identity.skin
    hair = HAIR_COLOURS[identity.hair_colour]
    w = identity.face_width
    vol = identity.hair_volume
    f = _features(identity, nuisance)
    back = -0.6  # depth of things behind the head

    # Hair behind the head.
    style = identity.hair_style
    if style == "afro":
        painter.polygon(_ellipse(0, -0.3, w + 0.5 + 0.25 * vol, 1.0 + 0.2 * vol, 24), hair, back)
    elif style == "long":
        length = 1.6 + 0.5 * vol
        pts = [(-w - 0.25, length), (-w - 0.3, 0.0)]
        pts += [(-(w + 0.28) * np.cos(p), -1.2 * np.sin(p)) for p in np.linspace(0, np.pi, 9)]
        pts += [(w + 0.3, 0.0), (w + 0.25, length)]
        painter.polygon(np.array(pts), hair, back)
    elif style == "bob":
        pts = [(-w - 0.22, 0.75), (-w - 0.28, 0.0)]
        pts += [(-(w + 0.26) * np.cos(p), -1.2 * np.sin(p)) for p in np.linspace(0, np.pi, 9)]
        pts += [(w + 0.28, 0.0), (w + 0.22, 0.75)]
        painter.polygon(np.array(pts), hair, back)
    elif style == "bun":
        r = 0.3 + 0.12 * vol
        painter.polygon(_ellipse(0, -1.1 - r * 0.6, r, r), hair, back)

    # Neck, then torso and clothing.
    neck_col = _scale(skin, 0.82)
    painter.body_polygon(np.array([(-0.3, 0.5), (0.3, 0.5), (0.34, 1.5), (-0.34, 1.5)]), neck_col)
    _clothing(painter, semantics, skin)
    if style == "long":  # strands falling in front of the shoulders
        length = 1.6 + 0.5 * vol
        for side in (-1, 1):
            strand = np.array(
                [
                    (side * (w - 0.02), -0.3),
                    (side * (w + 0.3), -0.2),
                    (side * (w + 0.32), length),
                    (side * (w + 0.05), length - 0.1),
                ]
            )
            painter.polygon(strand, hair, 0.0)

    # Ears.
    ear_y = f["eye_y"] + 0.15
    for side in (-1, 1):
        painter.polygon(
            _ellipse(side * w * 0.97, ear_y, 0.1 * identity.ear_size, 0.2 * identity.ear_size, 10), skin, -0.1
        )
        painter.polygon(
            _ellipse(side * w * 1.0, ear_y, 0.05 * identity.ear_size, 0.12 * identity.ear_size, 8),
            _scale(skin, 0.8),
            -0.1,
        )

    # Face.
    outline = _face_outline(identity)
    painter.polygon(outline, skin, 0.0)

    # Marks: freckles (a fixed per-identity pattern) and a mole.
    if identity.freckles > 0:
        frng = np.random.default_rng(int(identity.freckles * 1e6))
        n = int(6 + 10 * identity.freckles)
        pts = np.stack([frng.uniform(0.15, 0.55, n) * frng.choice((-1, 1), n) * w, frng.uniform(0.0, 0.3, n)], 1)
        col = _scale(skin, 0.72)
        for p in pts:
            painter.polygon(_ellipse(p[0], p[1], 0.025, 0.025, 6), col)
    if identity.mole is not None:
        mx, my = identity.mole
        painter.polygon(_ellipse(mx * w * 0.8, my, 0.04, 0.04, 8), (60, 35, 25))

    # Facial hair.
    fh = identity.facial_hair
    if fh in ("stubble", "beard"):
        lower = outline[outline[:, 1] > 0.15]
        lower = lower[np.argsort(np.arctan2(lower[:, 1], lower[:, 0]))]
        inner = [(w * 0.55, 0.2), (identity.mouth_width + 0.05, f["mouth_y"] - 0.1)]
        inner += [(-identity.mouth_width - 0.05, f["mouth_y"] - 0.1), (-w * 0.55, 0.2)]
        region = np.concatenate([lower, np.array(inner)])
        painter.polygon(region, _mix(skin, hair, 0.35) if fh == "stubble" else _mix(skin, hair, 0.9))
    if fh in ("mustache", "goatee", "beard"):
        mw = identity.mouth_width + 0.04
        y0 = f["mouth_y"] - identity.lip_thickness - 0.02
        stache = np.array([(-mw, y0 + 0.03), (0, y0 - 0.09), (mw, y0 + 0.03), (0, y0 - 0.02)])
        painter.polygon(stache, _mix(skin, hair, 0.95))
    if fh == "goatee":
        painter.polygon(_ellipse(0, (f["mouth_y"] + 1) / 2 + 0.05, 0.14, 0.17, 10), _mix(skin, hair, 0.95))

    # Eyes.
    eye_col = EYE_COLOURS[identity.eye_colour]
    # Women's eyes are lined and lashed (a dark ring wider than the eye), men's are not: a cue of gender that
    # survives every style, unlike lipstick colour (v1: gender read at 0.53 in pop art, 0.74 in sketches).
    woman = identity.gender == "woman"
    lash = _DARK if woman else _scale(skin, 0.7)
    lash_x, lash_y = (1.3, 1.6) if woman else (1.08, 1.15)
    landmarks = {}
    for side, name in ((-1, "eye_left"), (1, "eye_right")):
        ex, ey = side * f["eye_x"], f["eye_y"]
        rx, ry = f["eye_rx"], f["eye_ry"]
        rot = -side * identity.eye_tilt
        painter.polygon(_ellipse(ex, ey, rx * lash_x, ry * lash_y, 12, rot), lash)
        painter.polygon(_ellipse(ex, ey, rx, ry, 12, rot), (245, 245, 240))
        look = 0.25 * rx * np.sin(nuisance.yaw)
        ir = min(rx * 0.55, ry * 0.95)
        painter.polygon(_ellipse(ex + look, ey, ir, ir, 10), eye_col)
        painter.polygon(_ellipse(ex + look, ey, ir * 0.45, ir * 0.45, 8), _DARK)
        landmarks[name] = (ex, ey)

    # Brows.
    brow_col = _scale(hair, 0.7) if identity.hair_colour not in ("white", "platinum") else _scale(hair, 0.8)
    for side in (-1, 1):
        painter.polygon(_brow(identity, f, side, nuisance), brow_col)

    # Nose.
    ny, nw = f["nose_y"], identity.nose_width
    nose_depth = 0.25  # the bridge rises this far above the face surface
    if identity.nose_style == "triangle":
        tri = np.array([(0.0, f["eye_y"] + 0.08), (-nw, ny), (nw, ny)])
        painter.polygon(tri, _scale(skin, 0.82), painter.surface_depth(tri, nose_depth))
        painter.polygon(_ellipse(0, ny - 0.01, nw * 0.9, 0.035, 8), _scale(skin, 0.65), _NOSE_TIP_DEPTH)
    elif identity.nose_style == "round":
        painter.polygon(_ellipse(0, ny - 0.05, nw * 0.8, nw * 0.7, 10), _scale(skin, 0.86), _NOSE_TIP_DEPTH)
        for side in (-1, 1):
            painter.polygon(_ellipse(side * nw * 0.55, ny, 0.03, 0.025, 6), _scale(skin, 0.5), _NOSE_TIP_DEPTH)
    else:
        bridge = np.array([(0.02, f["eye_y"] + 0.05), (nw * 0.6, ny), (-nw * 0.4, ny + 0.02)])
        painter.line(bridge, _scale(skin, 0.6), 0.035, painter.surface_depth(bridge, nose_depth))
    landmarks["nose"] = (0.0, ny)

    # Mouth.
    xs, upper_in, lower_in, upper, lower = _mouth_curves(identity, f, nuisance)
    lip = identity.lip_colour
    if nuisance.mouth_open > 0.05:
        cavity = np.concatenate([np.stack([xs, upper_in], 1), np.stack([xs, lower_in], 1)[::-1]])
        painter.polygon(cavity, (90, 25, 30))
        teeth_lo = upper_in + 0.35 * (lower_in - upper_in)
        teeth = np.concatenate([np.stack([xs, upper_in], 1), np.stack([xs, teeth_lo], 1)[::-1]])
        painter.polygon(teeth, (245, 245, 235))
    painter.polygon(np.concatenate([np.stack([xs, upper], 1), np.stack([xs, upper_in], 1)[::-1]]), _scale(lip, 0.9))
    painter.polygon(np.concatenate([np.stack([xs, lower_in], 1), np.stack([xs, lower], 1)[::-1]]), lip)
    painter.line(np.stack([xs, (upper_in + lower_in) / 2], 1), _scale(lip, 0.55), 0.02)
    landmarks["mouth_left"] = (xs[0], upper_in[0])
    landmarks["mouth_right"] = (xs[-1], upper_in[-1])

    # Hair in front.
    hat = semantics.accessory == "hat"
    if style == "bald":
        for side in (-1, 1):
            tuft = np.array([(side * w * 0.93, -0.55), (side * (w + 0.1), -0.45), (side * (w + 0.06), 0.0)])
            tuft = np.concatenate([tuft, [(side * w * 0.98, 0.0)]])
            painter.polygon(tuft, hair, 0.0)
    elif style == "buzz":
        painter.polygon(_cap(identity, 0.04, 0.68), _mix(skin, hair, 0.6), 0.0)
    elif style in ("short", "side part", "bob", "long", "afro", "curly", "bun"):
        thickness = {"short": 0.12, "side part": 0.15, "bob": 0.2, "long": 0.22, "afro": 0.25}.get(style, 0.1)
        hairline = {"side part": 0.5, "bob": 0.38, "afro": 0.62, "long": 0.55, "bun": 0.62}.get(style, 0.6)
        sweep = 1.0 if style in ("side part", "bob") else 0.0
        painter.polygon(_cap(identity, thickness + 0.06 * vol, hairline, sweep), hair, 0.0)
        if style == "side part" and not hat:
            px = identity.hair_side * -0.35 * w
            part = np.array([(px, -1.2), (px * 0.9, -0.85)])
            painter.line(part, _mix(hair, skin, 0.5), 0.03, 0.0)
        if style in ("curly", "afro"):
            phi = np.linspace(0.1 * np.pi, 0.9 * np.pi, 9)
            r = 0.12 + 0.06 * vol
            for p in phi:
                cx, cy = -(w + 0.05) * np.cos(p), -(1.02 + 0.1 * vol) * np.sin(p)
                painter.polygon(_ellipse(cx, cy, r, r, 8), hair, 0.0)
    elif style == "mohawk":
        painter.polygon(_cap(identity, 0.02, 0.7), _mix(skin, hair, 0.3), 0.0)
        crest = [(-0.14, -0.75)]
        for i, x in enumerate(np.linspace(-0.14, 0.14, 5)):
            crest.append((x, -1.45 - 0.25 * vol if i % 2 == 0 else -1.25 - 0.15 * vol))
        crest.append((0.14, -0.75))
        painter.polygon(np.array(crest), hair, 0.0)

    _accessory(painter, identity, semantics.accessory, f, rng)
    return {"outline": painter.project(outline, 0.0), "landmarks": landmarks}


def _clothing(painter: _Painter, semantics: Semantics, skin: Colour) -> None:
    kind, colour_name = semantics.clothing, semantics.clothing_colour
    colour = CLOTHING_COLOURS[colour_name]
    torso = [
        (-0.35, 1.2),
        (-1.55, 1.55),
        (-1.95, 2.0),
        (-2.2, 4.0),
        (2.2, 4.0),
        (1.95, 2.0),
        (1.55, 1.55),
        (0.35, 1.2),
    ]
    if kind == "tank top":  # bare shoulders under the straps
        painter.body_polygon(np.array(torso), _scale(skin, 0.9))
        torso = [
            (-0.55, 1.4),
            (-1.1, 1.55),
            (-1.5, 2.2),
            (-1.7, 4.0),
            (1.7, 4.0),
            (1.5, 2.2),
            (1.1, 1.55),
            (0.55, 1.4),
        ]
    if colour_name == "colorful":
        painter.body_polygon(np.array(torso), _COLORFUL_STRIPES[0])
        for i, y in enumerate(np.arange(1.55, 4.0, 0.3)):
            band = [(-2.3, y), (2.3, y), (2.3, y + 0.15), (-2.3, y + 0.15)]
            painter.body_polygon(np.array(band), _COLORFUL_STRIPES[(i + 1) % len(_COLORFUL_STRIPES)])
        colour = _COLORFUL_STRIPES[0]
    else:
        painter.body_polygon(np.array(torso), colour)
    dark, light = _scale(colour, 0.6), _mix(colour, (255, 255, 255), 0.45)
    if kind == "t-shirt":
        painter.body_polygon(np.array([(-0.42, 1.18), (0.42, 1.18), (0.3, 1.48), (-0.3, 1.48)]), dark)
        painter.body_polygon(np.array([(-0.34, 1.18), (0.34, 1.18), (0.24, 1.4), (-0.24, 1.4)]), _scale(skin, 0.82))
    elif kind == "tank top":
        painter.body_polygon(np.array([(-0.55, 1.38), (0.55, 1.38), (0.2, 1.9), (-0.2, 1.9)]), _scale(skin, 0.9))
    elif kind == "shirt":
        painter.body_polygon(np.array([(-0.3, 1.2), (0.3, 1.2), (0.0, 1.65)]), _scale(skin, 0.82))
        for side in (-1, 1):
            painter.body_polygon(np.array([(side * 0.05, 1.6), (side * 0.45, 1.12), (side * 0.62, 1.6)]), light)
        painter.body_polygon(np.array([(-0.03, 1.6), (0.03, 1.6), (0.03, 4.0), (-0.03, 4.0)]), dark)
        for y in (2.0, 2.4, 2.8):
            painter.body_polygon(np.array([(-0.06, y), (0.06, y), (0.06, y + 0.1), (-0.06, y + 0.1)]), light)
    elif kind == "sweater":
        painter.body_polygon(np.array([(-0.45, 1.12), (0.45, 1.12), (0.38, 1.4), (-0.38, 1.4)]), dark)
        for y in np.arange(1.7, 4.0, 0.28):
            painter.body_polygon(np.array([(-2.3, y), (2.3, y), (2.3, y + 0.06), (-2.3, y + 0.06)]), dark)
    elif kind == "hoodie":
        hood = [(-0.95, 1.0), (-0.4, 0.95), (0.0, 1.45), (0.4, 0.95), (0.95, 1.0), (0.9, 1.65), (0, 1.9), (-0.9, 1.65)]
        painter.body_polygon(np.array(hood), dark)
        for side in (-1, 1):
            cord = [(side * 0.22, 1.6), (side * 0.3, 1.6), (side * 0.3, 2.5), (side * 0.22, 2.5)]
            painter.body_polygon(np.array(cord), (240, 240, 240))
    elif kind == "suit":
        painter.body_polygon(np.array([(-0.45, 1.2), (0.45, 1.2), (0.0, 2.7)]), (245, 245, 245))
        painter.body_polygon(np.array([(-0.12, 1.3), (0.12, 1.3), (0.16, 2.4), (0.0, 2.6), (-0.16, 2.4)]), _DARK)
        for side in (-1, 1):
            lapel = [(side * 0.45, 1.2), (side * 0.85, 1.5), (side * 0.55, 1.75), (side * 0.05, 2.7)]
            painter.body_polygon(np.array(lapel), dark)


def _accessory(painter: _Painter, identity: IdentityFactors, accessory: str, f: dict[str, float], rng) -> None:
    w = identity.face_width
    ex, ey, rx, ry = f["eye_x"], f["eye_y"], f["eye_rx"], f["eye_ry"]
    if accessory in ("glasses", "sunglasses"):
        dark_lens = accessory == "sunglasses"
        lw, lh = rx * 1.55, max(ry * 1.7, 0.14)
        for side in (-1, 1):
            frame = _ellipse(side * ex, ey, lw, lh, 14)
            if dark_lens:
                painter.polygon(frame, (20, 20, 25), 0.75)
            else:
                painter.line(np.concatenate([frame, frame[:1]]), (20, 20, 25), 0.06, 0.75)
        painter.line(np.array([(-ex + lw, ey), (ex - lw, ey)]), (20, 20, 25), 0.06, 0.85)
        for side in (-1, 1):
            painter.line(np.array([(side * (ex + lw), ey), (side * w, ey - 0.02)]), (20, 20, 25), 0.06, 0.3)
    elif accessory == "hat":
        colour = _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))]
        painter.polygon(_ellipse(0, -0.72, w + 0.55, 0.16, 20), _scale(colour, 0.8), 0.0)
        crown = np.array([(-w - 0.05, -0.75), (-w + 0.05, -1.55), (w - 0.05, -1.55), (w + 0.05, -0.75)])
        painter.polygon(crown, colour, 0.0)
        band = np.array([(-w - 0.04, -0.78), (-w - 0.02, -0.95), (w + 0.02, -0.95), (w + 0.04, -0.78)])
        painter.polygon(band, _scale(colour, 0.45), 0.0)
    elif accessory == "earrings":
        # Large hoops hanging below the lobe, over the hair (v1's 0.08-unit rings were 1 px and hidden: the
        # classifier found earrings in 0% of renders).
        for side in (-1, 1):
            ring = _ellipse(side * w * 1.0, ey + 0.32 + 0.28 * identity.ear_size, 0.14, 0.15, 12)
            painter.line(np.concatenate([ring, ring[:1]]), _GOLD, 0.08, -0.1)
    elif accessory == "headphones":
        colour = _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))]
        phi = np.linspace(0.0, np.pi, 13)
        band = np.stack([-(w + 0.12) * np.cos(phi), ey + 0.1 - (1.2 + 0.1 - ey) * np.sin(phi)], 1)
        painter.line(band, (40, 40, 45), 0.09, 0.0)
        for side in (-1, 1):
            painter.polygon(_ellipse(side * (w + 0.05), ey + 0.15, 0.16, 0.26, 12), colour, 0.0)
    elif accessory == "necklace":
        phi = np.linspace(0.1 * np.pi, 0.9 * np.pi, 9)
        chain = np.stack([-0.42 * np.cos(phi), 1.2 + 0.35 * np.sin(phi)], 1)
        painter.body_line(chain, _GOLD, 0.09)  # v1: 0.05 wide with a 0.08 pendant, found in 26% of renders
        painter.body_polygon(_ellipse(0, 1.64, 0.15, 0.17, 10), _GOLD)
        painter.body_polygon(_ellipse(0, 1.64, 0.09, 0.11, 8), (200, 30, 60))
    elif accessory == "scarf":
        colour = _SCARF_COLOURS[int(rng.integers(len(_SCARF_COLOURS)))]
        wrap = [(-0.6, 0.95), (0.6, 0.95), (0.7, 1.5), (0.0, 1.65), (-0.7, 1.5)]
        painter.body_polygon(np.array(wrap), colour)
        painter.body_polygon(np.array([(0.2, 1.4), (0.55, 1.4), (0.6, 2.6), (0.3, 2.6)]), _scale(colour, 0.8))
        for y in (1.1, 1.35):
            painter.body_polygon(np.array([(-0.62, y), (0.62, y), (0.64, y + 0.07), (-0.64, y + 0.07)]), _GOLD)


def render_with_layout(
    identity: IdentityFactors,
    semantics: Semantics,
    nuisance: Nuisance,
    size: int = 64,
    supersample: int = 2,
) -> tuple[Image.Image, Layout]:
    """Render a portrait and report where its face is (box, five landmarks, face mask) in output pixels."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    canvas = size * supersample
    # Separate streams, so that changing the scene never changes the grain or brush strokes on the face.
    background = draw_background(semantics.background, canvas, np.random.default_rng([nuisance.seed, 0]))
    painter = _Painter(identity, nuisance, canvas)
    info = _person(painter, identity, semantics, nuisance)
    person = painter.paint()
    background.paste(person, (0, 0), person)
    face_layer = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(face_layer).polygon([tuple(p) for p in info["outline"].tolist()], fill=255)
    if supersample > 1:
        background = background.resize((size, size), Image.Resampling.BOX)
        face_layer = face_layer.resize((size, size), Image.Resampling.BOX)

    # Light and style work at the output resolution: shapes are already anti-aliased, and it is 4x cheaper.
    pixels = np.asarray(background, dtype=np.float32) / 255.0
    face_weight = np.asarray(face_layer, dtype=np.float32) / 255.0
    scale = 1.0 / supersample
    half_width = painter.unit * scale * identity.face_width
    pixels = apply_lighting(pixels, face_weight, painter.centre * scale, half_width, nuisance)
    image = apply_style(pixels, semantics.style, np.random.default_rng([nuisance.seed, 2]))

    # Canvas pixel index -> output pixel index (pixel centres at integers, as face detectors report them).
    outline = (info["outline"] + 0.5) * scale - 0.5
    names = ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
    pts = np.array([info["landmarks"][n] for n in names])
    depth = painter.surface_depth(pts)
    depth[2] = _NOSE_TIP_DEPTH
    canvas_pts = (painter.project(pts, depth) + 0.5) * scale - 0.5
    if canvas_pts[0, 0] > canvas_pts[1, 0]:  # keep "left" = image left whatever the roll
        canvas_pts[[0, 1]] = canvas_pts[[1, 0]]
    if canvas_pts[3, 0] > canvas_pts[4, 0]:
        canvas_pts[[3, 4]] = canvas_pts[[4, 3]]
    layout = Layout(
        face_box=(
            float(outline[:, 0].min()),
            float(outline[:, 1].min()),
            float(outline[:, 0].max()),
            float(outline[:, 1].max()),
        ),
        landmarks=tuple((float(x), float(y)) for x, y in canvas_pts),
        face_mask=face_weight >= 0.5,
    )
    return image, layout


def render(
    identity: IdentityFactors,
    semantics: Semantics,
    nuisance: Nuisance,
    size: int = 64,
    supersample: int = 2,
) -> Image.Image:
    """Render a ``size`` x ``size`` RGB portrait. Deterministic: the same arguments give the same bytes."""
    return render_with_layout(identity, semantics, nuisance, size, supersample)[0]


def accessory_mask(
    image: Image.Image,
    identity: IdentityFactors,
    semantics: Semantics,
    nuisance: Nuisance,
    supersample: int = 2,
    threshold: float = 4 / 255,
) -> np.ndarray:
    """The pixels of ``image`` (the render of these factors) that its accessory changes, as a bool
    ``(size, size)`` array: the render against the same render without the accessory (all False for "none").

    Earrings and necklaces cover a few dozen of 4,096 pixels, so a loss averaged over the image barely sees them;
    this mask lets a loss weight them up. The drawing streams are separate (see :func:`render_with_layout`), so
    only the accessory's pixels and what it hides differ."""
    if semantics.accessory == "none":
        return np.zeros((image.size[1], image.size[0]), dtype=bool)
    plain = render(identity, replace(semantics, accessory="none"), nuisance, image.size[0], supersample)
    difference = np.abs(np.asarray(image, dtype=np.float32) - np.asarray(plain, dtype=np.float32)) / 255.0
    return difference.max(axis=2) > threshold
