"""Captions for miniature-world renders, and the reverse: which attributes a free-text prompt names.

Captions follow the paper's prompt shapes ("a photo of a man wearing a yellow sweater, on the beach";
"a woman in watercolor painting style") with synonyms for every word the prompt controls. A caption may name
only some attributes (real captions are incomplete too); :func:`sample_mentions` picks which, and
:func:`parse_prompt` recovers exactly those, which is what the attribute-accuracy metric needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from .factors import (
    ACCESSORIES,
    BACKGROUNDS,
    CLOTHING_COLOURS,
    CLOTHING_KINDS,
    GENDERS,
    SKIN_ANCHORS,
    STYLES,
    IdentityFactors,
    Semantics,
)

# Attribute names a caption can mention; "gender" is the identity's word (man/woman), the rest are Semantics fields.
MENTIONABLE: tuple[str, ...] = ("gender", "clothing", "clothing_colour", "background", "accessory", "style")
# Visible traits of the person a caption may also describe (as real captions sometimes do): these teach the base
# model's cross-attention to draw faces on demand, which is what an identity adapter later steers.
PERSON_TRAITS: tuple[str, ...] = ("hair", "facial_hair", "skin")
#: How often :func:`sample_mentions` describes the person when it is given the identity.
PERSON_RATE = 0.3

GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "man": ("man", "guy", "gentleman"),
    "woman": ("woman", "lady"),
}
PHOTO_PREFIXES: tuple[str, ...] = (
    "a photo of",
    "a photograph of",
    "a picture of",
    "an image of",
    "a portrait photo of",
)
BACKGROUND_PHRASES: dict[str, tuple[str, ...]] = {
    "studio": ("in a studio", "against a plain studio backdrop"),
    "beach": ("on the beach", "at the beach", "by the seaside"),
    "forest": ("in the forest", "in the woods"),
    "snow": ("in the snow", "in a snowy field"),
    "city": ("in the city", "on a city street", "in times square"),
    "living room": ("in the living room", "at home in the living room"),
    "mountains": ("in the mountains", "in front of snowy mountains"),
    "desert": ("in the desert", "among desert dunes"),
    "night sky": ("under the night sky", "under the stars at night"),
    "garden": ("in the garden", "in a flower garden"),
    "library": ("in the library", "in front of bookshelves"),
}
CLOTHING_WORDS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("t-shirt", "tee"),
    "shirt": ("shirt", "collared shirt", "button-up shirt"),
    "sweater": ("sweater", "jumper", "pullover"),
    "hoodie": ("hoodie", "hooded sweatshirt"),
    "suit": ("suit", "suit and tie"),
    "tank top": ("tank top", "sleeveless top"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {name: (name,) for name in CLOTHING_COLOURS}
COLOUR_WORDS["gray"] = ("gray", "grey")
COLOUR_WORDS["colorful"] = ("colorful", "colourful", "multicolored")
ACCESSORY_WORDS: dict[str, tuple[str, ...]] = {
    "glasses": ("glasses", "eyeglasses", "spectacles"),
    "sunglasses": ("sunglasses", "shades"),
    "hat": ("hat", "fedora"),
    "earrings": ("earrings", "hoop earrings"),
    "necklace": ("necklace", "gold necklace"),
    "headphones": ("headphones", "headset"),
    "scarf": ("scarf", "striped scarf"),
}
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "cartoon": ("cartoon", "Disney cartoon", "animated cartoon"),
    "sketch": ("pencil sketch", "sketch", "pencil drawing"),
    "oil painting": ("oil painting", "classical oil painting"),
    "pop art": ("pop art", "comic book", "Warhol pop art"),
    "watercolor": ("watercolor painting", "watercolor", "watercolour painting"),
}
HAIR_COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "black": ("black",),
    "dark brown": ("dark brown",),
    "brown": ("brown",),
    "auburn": ("auburn",),
    "red": ("red", "ginger"),
    "blonde": ("blonde", "blond"),
    "platinum": ("platinum blonde", "platinum"),
    "gray": ("gray", "grey"),
    "white": ("white",),
    "blue": ("blue",),
    "pink": ("pink",),
}
# Hair style -> how it reads after "with": an adjective before "hair", or a phrase with {c} for the colour.
HAIR_STYLE_PHRASES: dict[str, tuple[str, ...]] = {
    "buzz": ("buzzed {c} hair", "a {c} buzz cut"),
    "short": ("short {c} hair",),
    "side part": ("side-parted {c} hair",),
    "curly": ("curly {c} hair",),
    "afro": ("a {c} afro",),
    "bob": ("a {c} bob",),
    "long": ("long {c} hair",),
    "bun": ("{c} hair in a bun",),
    "mohawk": ("a {c} mohawk",),
}
FACIAL_HAIR_WORDS: dict[str, tuple[str, ...]] = {
    "stubble": ("stubble",),
    "mustache": ("a mustache", "a moustache"),
    "goatee": ("a goatee",),
    "beard": ("a beard", "a full beard"),
}
SKIN_TONE_WORDS: tuple[tuple[str, ...], ...] = (
    ("pale skin", "fair skin"),
    ("light skin",),
    ("tan skin",),
    ("dark skin",),
)
_PHOTO_WORDS: tuple[str, ...] = ("photo", "photograph", "picture", "image", "realistic", "photorealistic")
_GENERIC_GARMENTS: tuple[str, ...] = ("clothing", "clothes", "outfit", "top")

# Parsing keywords beyond the caption phrases, so that ordinary prompts parse too.
_BACKGROUND_KEYWORDS: dict[str, tuple[str, ...]] = {
    "studio": ("studio", "plain backdrop", "plain background"),
    "beach": ("beach", "seaside", "sea", "shore", "ocean"),
    "forest": ("forest", "woods", "jungle"),
    "snow": ("snow", "snowy field", "in the snow", "winter"),
    "city": ("city", "street", "times square", "time square", "downtown"),
    "living room": ("living room", "at home", "sofa", "couch"),
    "mountains": ("mountains", "mountain", "snowy mountains"),
    "desert": ("desert", "dunes"),
    "night sky": ("night sky", "stars", "starry", "at night"),
    "garden": ("garden", "flowers"),
    "library": ("library", "bookshelves", "bookshelf", "books"),
}

_missing = [b for b in BACKGROUNDS if b not in BACKGROUND_PHRASES or b not in _BACKGROUND_KEYWORDS]
_missing += [c for c in CLOTHING_KINDS if c not in CLOTHING_WORDS]
_missing += [a for a in ACCESSORIES if a != "none" and a not in ACCESSORY_WORDS]
_missing += [s for s in STYLES if s != "photo" and s not in STYLE_WORDS]
assert not _missing, f"vocabulary without caption words: {_missing}"


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def skin_tone(identity: IdentityFactors) -> int:
    """The identity's skin tone as one of four bands, light to dark (an index into :data:`SKIN_TONE_WORDS`)."""
    luminance = float(np.dot(identity.skin, (0.299, 0.587, 0.114)))
    anchors = SKIN_ANCHORS @ np.array([0.299, 0.587, 0.114])  # light to dark
    edges = np.linspace(anchors[0], anchors[-1], len(SKIN_TONE_WORDS) + 1)[1:-1]
    return int(np.sum(luminance < edges))


def describable_traits(identity: IdentityFactors) -> tuple[str, ...]:
    """The person traits a caption can name for ``identity`` (no facial hair to name on a shaven face)."""
    return tuple(t for t in PERSON_TRAITS if t != "facial_hair" or identity.facial_hair != "none")


def sample_mentions(
    semantics: Semantics,
    rng: np.random.Generator,
    identity: IdentityFactors | None = None,
    person_rate: float = PERSON_RATE,
) -> frozenset[str]:
    """Choose which attributes a caption names. The style is always named when it is not a photo, and the
    gender always; clothing, its colour, the background and an accessory usually are. Given the ``identity``,
    one or two of its visible traits (:data:`PERSON_TRAITS`) are named with probability ``person_rate``."""
    named = {"gender"}
    if semantics.style != "photo" or rng.uniform() < 0.7:
        named.add("style")
    if rng.uniform() < 0.8:
        named.add("clothing")
        if rng.uniform() < 0.9:
            named.add("clothing_colour")
    if rng.uniform() < 0.8:
        named.add("background")
    if semantics.accessory != "none" and rng.uniform() < 0.85:
        named.add("accessory")
    if identity is not None and rng.uniform() < person_rate:
        traits = describable_traits(identity)
        count = min(len(traits), 1 + int(rng.uniform() < 0.4))
        named.update(traits[i] for i in rng.choice(len(traits), size=count, replace=False))
    return frozenset(named)


def describe_person(identity: IdentityFactors, traits: Iterable[str], rng: np.random.Generator) -> str:
    """'bald' / 'with curly red hair and a beard' / 'with dark skin': the traits of ``identity`` named in
    ``traits`` (in :data:`PERSON_TRAITS` order), or '' when none is named."""
    traits = [t for t in PERSON_TRAITS if t in set(traits)]
    parts = []
    for trait in traits:
        if trait == "hair" and identity.hair_style != "bald":
            colour = _pick(rng, HAIR_COLOUR_WORDS[identity.hair_colour])
            phrase = _pick(rng, HAIR_STYLE_PHRASES[identity.hair_style]).format(c=colour)
            if phrase.startswith("a ") and colour[0] in "aeiou":
                phrase = "an " + phrase[2:]
            parts.append(phrase)
        elif trait == "facial_hair" and identity.facial_hair != "none":
            parts.append(_pick(rng, FACIAL_HAIR_WORDS[identity.facial_hair]))
        elif trait == "skin":
            parts.append(_pick(rng, SKIN_TONE_WORDS[skin_tone(identity)]))
    bald = "hair" in traits and identity.hair_style == "bald"
    return ("bald " if bald else "") + ("with " + " and ".join(parts) if parts else "")


def caption(
    semantics: Semantics,
    gender: str,
    rng: np.random.Generator,
    mention: Iterable[str] | None = None,
    identity: IdentityFactors | None = None,
) -> str:
    """Write a caption naming the attributes in ``mention`` (default: :func:`sample_mentions`) and no others;
    person traits in ``mention`` need the ``identity``."""
    if gender not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; expected one of {list(GENDERS)}")
    named = sample_mentions(semantics, rng, identity) if mention is None else frozenset(mention)
    traits = named & set(PERSON_TRAITS)
    if traits and identity is None:
        raise ValueError(f"naming the person's {sorted(traits)} needs the identity")
    named = named - traits
    unknown = named - set(MENTIONABLE)
    if unknown:
        raise ValueError(f"cannot mention {sorted(unknown)}; mentionable attributes are {list(MENTIONABLE)}")
    if "clothing_colour" in named and "clothing" not in named:
        raise ValueError("the clothing colour can only be mentioned together with the clothing")
    if semantics.accessory == "none":
        named = named - {"accessory"}

    subject = _pick(rng, GENDER_WORDS[gender]) if "gender" in named else "person"
    person = describe_person(identity, traits, rng) if traits else ""
    if person.startswith("bald "):
        subject, person = f"bald {subject}", person[len("bald ") :]
    subject = f"{_article(subject)} {subject}" + (f" {person}" if person else "")
    details = []
    if "clothing" in named:
        garment = _pick(rng, CLOTHING_WORDS[semantics.clothing])
        if "clothing_colour" in named:
            garment = f"{_pick(rng, COLOUR_WORDS[semantics.clothing_colour])} {garment}"
        garment = f"{_article(garment)} {garment}"
        if "accessory" in named and " and " not in garment and rng.uniform() < 0.5:
            extra = _pick(rng, ACCESSORY_WORDS[semantics.accessory])
            garment += f" and {extra}" if extra.endswith("s") else f" and {_article(extra)} {extra}"
            named = named - {"accessory"}
        details.append(f"wearing {garment}")
    if "accessory" in named:
        extra = _pick(rng, ACCESSORY_WORDS[semantics.accessory])
        details.append(f"with {extra}" if extra.endswith("s") else f"with {_article(extra)} {extra}")
    if "background" in named:
        details.append(_pick(rng, BACKGROUND_PHRASES[semantics.background]))
    body = ", ".join([" ".join([subject] + details[:1])] + details[1:])

    if "style" not in named:
        return body
    if semantics.style == "photo":
        return f"{_pick(rng, PHOTO_PREFIXES)} {body}"
    style = _pick(rng, STYLE_WORDS[semantics.style])
    if rng.uniform() < 0.5:
        return f"{body}, in {style} style" if details else f"{body} in {style} style"
    noun = style if style.endswith(("painting", "sketch", "drawing")) else f"{style} portrait"
    return f"{_article(noun)} {noun} of {body}"


@dataclass(frozen=True)
class ParsedPrompt:
    """Attributes a prompt names; ``None`` where it names none."""

    gender: str | None = None
    clothing: str | None = None
    clothing_colour: str | None = None
    background: str | None = None
    accessory: str | None = None
    style: str | None = None

    def named(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _alternation(table: dict[str, tuple[str, ...]]) -> tuple[re.Pattern, dict[str, str]]:
    lookup = {word.lower(): key for key, words in table.items() for word in words}
    words = sorted(lookup, key=len, reverse=True)  # longest first: "t-shirt" before "shirt"
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in words) + r")(?![\w-])")
    return pattern, lookup


_GENDER_RE = _alternation({"man": GENDER_WORDS["man"] + ("male",), "woman": GENDER_WORDS["woman"] + ("female",)})
_CLOTHING_RE = _alternation({**CLOTHING_WORDS, "": _GENERIC_GARMENTS})
_COLOUR_RE = _alternation(COLOUR_WORDS)
_ACCESSORY_RE = _alternation(ACCESSORY_WORDS)
_STYLE_RE = _alternation(STYLE_WORDS)
_PHOTO_RE = _alternation({"photo": _PHOTO_WORDS})
_BACKGROUND_RE = _alternation(_BACKGROUND_KEYWORDS)


def _find(table: tuple[re.Pattern, dict[str, str]], text: str) -> tuple[str | None, re.Match | None]:
    pattern, lookup = table
    match = pattern.search(text)
    return (lookup[match.group(1)], match) if match else (None, None)


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Find the attributes a free-text prompt names, by keyword (first mention wins).

    A colour counts as the clothing colour only right before a garment word ("a red sweater", "a brown
    clothing"), so "a man with black hair" names no clothing colour.
    """
    text = " ".join(prompt.lower().split())
    gender, _ = _find(_GENDER_RE, text)
    accessory, _ = _find(_ACCESSORY_RE, text)
    clothing, colour = None, None
    pattern, lookup = _CLOTHING_RE
    for match in pattern.finditer(text):
        garment = lookup[match.group(1)]
        before = text[: match.start()].rstrip()
        colour_pattern, colour_lookup = _COLOUR_RE
        colour_match = None
        for candidate in colour_pattern.finditer(before):
            if candidate.end() == len(before):
                colour_match = candidate
        if garment == "" and colour_match is None:  # a generic garment word only counts with a colour
            continue
        if colour is None and colour_match is not None:
            colour = colour_lookup[colour_match.group(1)]
        if clothing is None and garment:
            clothing = garment
        if clothing is not None and colour is not None:
            break
    background, _ = _find(_BACKGROUND_RE, text)
    style, _ = _find(_STYLE_RE, text)
    if style is None and _find(_PHOTO_RE, text)[0] is not None:
        style = "photo"
    return ParsedPrompt(
        gender=gender,
        clothing=clothing,
        clothing_colour=colour,
        background=background,
        accessory=accessory,
        style=style,
    )
