"""The example reference portraits that ship in ``examples/portraits/``: held-out identities, plain photos.

    python -m infinite_id.world.experiments.examples --out examples/portraits

They are inputs for the default (miniature) model: ``infinite-id generate --ref examples/portraits/woman_1.png``.
Each portrait is a frontal studio photo of a held-out evaluation identity (never seen in training), rendered at
the world's native 64 px and also written 4x larger (nearest neighbour, ``*_large.png``) for viewing. The
miniature face backend reads either: it resizes every input to 64 px.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from ..scene.factors import EVAL_IDENTITIES, Nuisance, Semantics, identity_from_id
from ..scene.render import render

#: How many portraits of each gender word ship; identities are the first held-out ids of that gender.
PER_GENDER = 2
PORTRAIT_SEMANTICS = Semantics(background="studio", clothing="t-shirt", clothing_colour="gray", style="photo")


def example_identities(per_gender: int = PER_GENDER) -> dict[str, int]:
    """``{file stem: held-out identity id}``, e.g. ``{"man_1": 1000000003, ...}``: deterministic."""
    found: dict[str, list[int]] = {"man": [], "woman": []}
    for identity_id in EVAL_IDENTITIES:
        gender = identity_from_id(identity_id).gender
        if len(found[gender]) < per_gender:
            found[gender].append(identity_id)
        if all(len(v) == per_gender for v in found.values()):
            break
    return {f"{g}_{i + 1}": ids[i] for g, ids in found.items() for i in range(per_gender)}


def render_portrait(identity_id: int, size: int = 64) -> Image.Image:
    """A frontal, evenly lit, lightly smiling studio photo of ``identity_id``."""
    return render(identity_from_id(identity_id), PORTRAIT_SEMANTICS, Nuisance(), size=size)


def write_examples(out_dir: str | Path, per_gender: int = PER_GENDER) -> dict[str, int]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    identities = example_identities(per_gender)
    for stem, identity_id in identities.items():
        image = render_portrait(identity_id)
        image.save(out / f"{stem}.png")
        image.resize((image.width * 4, image.height * 4), Image.NEAREST).save(out / f"{stem}_large.png")
    (out / "identities.json").write_text(json.dumps(identities, indent=2) + "\n")
    return identities


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render the example reference portraits of the miniature world.")
    parser.add_argument("--out", default="examples/portraits")
    parser.add_argument("--per-gender", type=int, default=PER_GENDER)
    args = parser.parse_args(argv)
    print(json.dumps(write_examples(args.out, args.per_gender), indent=2))


if __name__ == "__main__":
    main()
