"""The factors of the miniature world: who a person is, what the prompt controls, and what changes per photo.

Three independent groups, each a frozen dataclass sampled from its own random stream:

- :class:`IdentityFactors`: persistent facial factors (face shape, skin, eyes, brows, nose, mouth, hair, facial hair,
  marks, ears, and the gender word). Deterministic from an integer id through :func:`identity_from_id`; training
  and held-out evaluation identities come from disjoint id ranges.
- :class:`Semantics`: what a prompt names and identity does not: background scene, clothing kind and colour,
  accessory and rendering style.
- :class:`Nuisance`: per-photo variation that neither the prompt nor the identity fixes: pose, scale, position,
  expression and lighting.

Continuous factors make two different ids practically never collide, so the world holds millions of
distinguishable identities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from ...deprecation import renamed_names

# ----------------------------------------------------------------------------------------------------------------
# Vocabularies. The order is part of the world's definition: attribute classifiers use these indices as labels.
# ----------------------------------------------------------------------------------------------------------------

GENDERS: tuple[str, ...] = ("man", "woman")

HAIR_STYLES: tuple[str, ...] = (
    "bald",
    "buzz",
    "short",
    "side part",
    "curly",
    "afro",
    "bob",
    "long",
    "bun",
    "mohawk",
)
# Hair-style sampling weights per gender (same order as HAIR_STYLES).
_HAIR_STYLE_WEIGHTS = {
    "man": (0.08, 0.14, 0.2, 0.16, 0.1, 0.07, 0.04, 0.09, 0.04, 0.08),
    "woman": (0.01, 0.03, 0.08, 0.07, 0.1, 0.08, 0.2, 0.25, 0.15, 0.03),
}
FACIAL_HAIR: tuple[str, ...] = ("none", "stubble", "mustache", "goatee", "beard")
_FACIAL_HAIR_WEIGHTS_MAN = (0.4, 0.15, 0.15, 0.12, 0.18)
NOSE_STYLES: tuple[str, ...] = ("triangle", "round", "line")

# Named colours (RGB in [0, 255]); the names only serve debugging and labels, never captions.
EYE_COLOURS: dict[str, tuple[int, int, int]] = {
    "dark brown": (60, 36, 20),
    "brown": (110, 70, 35),
    "hazel": (130, 110, 50),
    "amber": (180, 120, 30),
    "green": (60, 140, 70),
    "blue": (60, 120, 200),
    "light blue": (130, 180, 230),
    "gray": (120, 130, 140),
}
HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 22, 22),
    "dark brown": (65, 40, 25),
    "brown": (115, 75, 40),
    "auburn": (140, 55, 30),
    "red": (200, 80, 30),
    "blonde": (225, 190, 110),
    "platinum": (235, 230, 205),
    "gray": (150, 150, 150),
    "white": (240, 240, 240),
    "blue": (60, 90, 210),
    "pink": (235, 120, 170),
}
_HAIR_COLOUR_WEIGHTS = (0.2, 0.18, 0.16, 0.08, 0.06, 0.12, 0.05, 0.06, 0.03, 0.03, 0.03)
# Skin tones from light to dark; an identity interpolates between neighbours, so tones are continuous.
SKIN_ANCHORS: np.ndarray = np.array(
    [
        (255, 224, 200),
        (240, 200, 165),
        (222, 172, 130),
        (190, 135, 95),
        (150, 100, 65),
        (105, 68, 45),
        (70, 45, 30),
    ],
    dtype=np.float64,
)
LIP_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 50),
    "pink": (225, 110, 140),
    "berry": (150, 40, 80),
    "coral": (235, 105, 80),
    "nude": (190, 120, 105),
}

BACKGROUNDS: tuple[str, ...] = (
    "studio",
    "beach",
    "forest",
    "snow",
    "city",
    "living room",
    "mountains",
    "desert",
    "night sky",
    "garden",
    "library",
)
CLOTHING_KINDS: tuple[str, ...] = ("t-shirt", "shirt", "sweater", "hoodie", "suit", "tank top")
CLOTHING_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 40),
    "orange": (245, 130, 30),
    "yellow": (250, 215, 40),
    "green": (40, 160, 70),
    "blue": (40, 90, 210),
    "purple": (130, 60, 180),
    "pink": (245, 130, 185),
    "white": (240, 240, 240),
    "black": (30, 30, 34),
    "gray": (130, 130, 135),
    "brown": (120, 75, 40),
    "colorful": (0, 0, 0),  # rendered as multi-coloured stripes
}
ACCESSORIES: tuple[str, ...] = (
    "none",
    "glasses",
    "sunglasses",
    "hat",
    "earrings",
    "necklace",
    "headphones",
    "scarf",
)
STYLES: tuple[str, ...] = ("photo", "cartoon", "sketch", "oil painting", "pop art", "watercolor")

# ----------------------------------------------------------------------------------------------------------------
# Identity id ranges. Disjoint by construction; the eval range is far away so that no training run reaches it.
# ----------------------------------------------------------------------------------------------------------------

TRAIN_IDENTITIES: range = range(0, 1_000_000)
EVAL_IDENTITIES: range = range(1_000_000_000, 1_000_100_000)

_IDENTITY_STREAM = 0x1D_E47  # salts keep the identity, semantics and nuisance random streams unrelated
_SEMANTICS_STREAM = 0x5E_4A7
_NUISANCE_STREAM = 0x4015E


def identity_split(identity_id: int) -> str:
    """Return ``"train"`` or ``"eval"`` for an identity id; raise for ids outside both ranges."""
    if identity_id in TRAIN_IDENTITIES:
        return "train"
    if identity_id in EVAL_IDENTITIES:
        return "eval"
    raise ValueError(
        f"identity id {identity_id} is outside the training range {TRAIN_IDENTITIES} "
        f"and the evaluation range {EVAL_IDENTITIES}"
    )


def _choice(rng: np.random.Generator, options, weights=None) -> str:
    options = list(options)
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _to_dict(obj) -> dict:
    out = asdict(obj)
    for key, value in out.items():
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


def _from_dict(cls, data: dict):
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class IdentityFactors:
    """Persistent facial factors of one person. Lengths are in face units (half the face height)."""

    gender: str
    face_width: float  # half-width of the face relative to its half-height
    jaw_squareness: float  # superellipse exponent of the lower face: 2 = oval, 4 = square
    chin_taper: float  # how much the jaw narrows toward the chin
    skin: tuple[int, int, int]
    eye_colour: str
    eye_size: float
    eye_aspect: float  # eye height / width
    eye_spacing: float  # eye centre distance from the midline, in face half-widths
    eye_tilt: float  # radians, positive = outer corners up
    brow_thickness: float
    brow_arch: float
    brow_tilt: float
    brow_gap: float
    nose_style: str
    nose_length: float
    nose_width: float
    mouth_width: float
    lip_thickness: float
    lip_colour: tuple[int, int, int]
    hair_style: str
    hair_colour: str
    hair_volume: float
    hair_side: int  # which side a side part or fringe sweeps to: -1 or 1
    facial_hair: str
    ear_size: float
    mole: tuple[float, float] | None  # face-frame position, or None
    freckles: float  # 0 = none

    @classmethod
    def sample(cls, rng: np.random.Generator) -> IdentityFactors:
        """Draw a random identity. Every factor is independent except hair style, facial hair, jaw, brows and
        lips, whose ranges depend on the gender (so that it shows in every style)."""
        gender = _choice(rng, GENDERS)
        t = rng.uniform(0, len(SKIN_ANCHORS) - 1)
        i = min(int(t), len(SKIN_ANCHORS) - 2)
        skin = SKIN_ANCHORS[i] * (1 - (t - i)) + SKIN_ANCHORS[i + 1] * (t - i)
        skin = np.clip(skin + rng.normal(0, 6, 3), 0, 255)
        if gender == "woman":
            lip_colour = LIP_COLOURS[_choice(rng, LIP_COLOURS)]
        else:
            lip_colour = tuple(np.clip(skin * np.array([0.8, 0.6, 0.6]), 0, 255))
        lip = tuple(int(round(c)) for c in lip_colour)
        return cls(
            gender=gender,
            face_width=float(rng.uniform(0.68, 0.9)),
            # Gendered ranges (same draws as before, so the other factors of every identity are unchanged).
            jaw_squareness=float(rng.uniform(3.0, 4.0) if gender == "man" else rng.uniform(2.0, 2.8)),
            chin_taper=float(rng.uniform(0.0, 0.35)),
            skin=tuple(int(round(c)) for c in skin),
            eye_colour=_choice(rng, EYE_COLOURS),
            eye_size=float(rng.uniform(0.11, 0.17)),
            eye_aspect=float(rng.uniform(0.45, 0.85)),
            eye_spacing=float(rng.uniform(0.36, 0.5)),
            eye_tilt=float(rng.uniform(-0.2, 0.2)),
            brow_thickness=float(rng.uniform(0.075, 0.12) if gender == "man" else rng.uniform(0.03, 0.055)),
            brow_arch=float(rng.uniform(-0.02, 0.08)),
            brow_tilt=float(rng.uniform(-0.2, 0.2)),
            brow_gap=float(rng.uniform(0.08, 0.2)),
            nose_style=_choice(rng, NOSE_STYLES),
            nose_length=float(rng.uniform(0.25, 0.42)),
            nose_width=float(rng.uniform(0.08, 0.18)),
            mouth_width=float(rng.uniform(0.22, 0.4)),
            lip_thickness=float(rng.uniform(0.03, 0.05) if gender == "man" else rng.uniform(0.06, 0.09)),
            lip_colour=lip,
            hair_style=_choice(rng, HAIR_STYLES, _HAIR_STYLE_WEIGHTS[gender]),
            hair_colour=_choice(rng, HAIR_COLOURS, _HAIR_COLOUR_WEIGHTS),
            hair_volume=float(rng.uniform(0.0, 1.0)),
            hair_side=int(rng.choice((-1, 1))),
            facial_hair=_choice(rng, FACIAL_HAIR, _FACIAL_HAIR_WEIGHTS_MAN) if gender == "man" else "none",
            ear_size=float(rng.uniform(0.8, 1.25)),
            mole=((float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.2, 0.7))) if rng.uniform() < 0.35 else None),
            freckles=float(rng.uniform(0.3, 1.0)) if rng.uniform() < 0.25 else 0.0,
        )

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IdentityFactors:
        return _from_dict(cls, data)


def identity_from_id(identity_id: int) -> IdentityFactors:
    """The identity with this id: the same id always gives the same person, on every machine."""
    identity_split(identity_id)
    return IdentityFactors.sample(np.random.default_rng([_IDENTITY_STREAM, int(identity_id)]))


@dataclass(frozen=True)
class Semantics:
    """What the prompt controls: independent of identity and of the per-photo nuisances."""

    background: str = "studio"
    clothing: str = "t-shirt"
    clothing_colour: str = "blue"
    accessory: str = "none"
    style: str = "photo"

    def __post_init__(self) -> None:
        for name, vocab in (
            ("background", BACKGROUNDS),
            ("clothing", CLOTHING_KINDS),
            ("clothing_colour", tuple(CLOTHING_COLOURS)),
            ("accessory", ACCESSORIES),
            ("style", STYLES),
        ):
            if getattr(self, name) not in vocab:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; expected one of {list(vocab)}")

    @classmethod
    def sample(cls, rng: np.random.Generator, style_weights: dict[str, float] | None = None) -> Semantics:
        """Uniform over every attribute, except the style, whose weights can favour photos (the default: half)."""
        if style_weights is None:
            style_weights = {s: (0.5 if s == "photo" else 0.5 / (len(STYLES) - 1)) for s in STYLES}
        styles = list(style_weights)
        return cls(
            background=_choice(rng, BACKGROUNDS),
            clothing=_choice(rng, CLOTHING_KINDS),
            clothing_colour=_choice(rng, CLOTHING_COLOURS),
            accessory=_choice(rng, ACCESSORIES, [0.3] + [0.1] * (len(ACCESSORIES) - 1)),
            style=_choice(rng, styles, [style_weights[s] for s in styles]),
        )

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Semantics:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Nuisance:
    """Per-photo variation. Angles in radians; offsets and scale relative to the frame."""

    yaw: float = 0.0
    roll: float = 0.0
    pitch: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    smile: float = 0.3
    brow_raise: float = 0.0
    mouth_open: float = 0.0
    light_angle: float = -2.3
    light_strength: float = 0.2
    brightness: float = 1.0
    warmth: float = 0.0
    seed: int = 0  # drives per-photo texture: background layout, film grain, brush strokes

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Nuisance:
        return cls(
            yaw=float(rng.uniform(-0.55, 0.55)),
            roll=float(rng.uniform(-0.22, 0.22)),
            pitch=float(rng.uniform(-0.15, 0.15)),
            scale=float(rng.uniform(0.87, 1.13)),
            dx=float(rng.uniform(-0.07, 0.07)),
            dy=float(rng.uniform(-0.05, 0.05)),
            smile=float(rng.uniform(-0.4, 1.0)),
            brow_raise=float(rng.uniform(-0.5, 1.0)),
            mouth_open=float(rng.uniform(0.0, 1.0)) if rng.uniform() < 0.3 else 0.0,
            light_angle=float(rng.uniform(-np.pi, np.pi)),
            light_strength=float(rng.uniform(0.0, 0.4)),
            brightness=float(rng.uniform(0.8, 1.15)),
            warmth=float(rng.uniform(-1.0, 1.0)),
            seed=int(rng.integers(2**31 - 1)),
        )

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Nuisance:
        return _from_dict(cls, data)


def semantics_rng(seed: int) -> np.random.Generator:
    """A semantics stream separate from identity and nuisance streams (so changing one never shifts another)."""
    return np.random.default_rng([_SEMANTICS_STREAM, int(seed)])


def nuisance_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([_NUISANCE_STREAM, int(seed)])


__getattr__ = renamed_names(__name__, {"Identity": "IdentityFactors"}, globals())  # deprecated alias, one release
