"""The documentation's pictures, made by the miniature model (the default model), reproducibly.

    python -m infinite_id.world.experiments.doc_images --out docs/images            # the shipped weights
    python -m infinite_id.world.experiments.doc_images --weights /tmp/w --out /tmp/images

Every picture is a grid of 64 px images (scaled up 3x, nearest neighbour, so pixels stay visible) with labels:

- ``world_generate.png``: reference portraits, then for each prompt the text stream and the identity stream;
- ``world_self_attention.png``: the identity stream with mixed attention (the paper), mutual attention and
  independent self-attention (no mixing), beside the text stream;
- ``world_adain.png``: style prompts with AdaIN off, AdaIN-mean (the paper) and full AdaIN;
- ``world_id_scale.png``: the ID scale from 0 (text only) to 1;
- ``world_faces.png``: what the ``mini`` face backend finds in the example portraits.

Seeds and settings are fixed here, so the pictures change only when the weights or the method change.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from ...generation import GenerationSettings, Generator
from ..default_model import load_miniature_model
from ..face_backend import MiniFaceAnalyzer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "portraits"
SCALE = 3
LABEL_HEIGHT = 14
STEPS = 25
SEED = 1
GENERATE_PROMPTS = (
    "a photo of a {g} wearing a yellow sweater, on the beach",
    "a photo of a {g} with sunglasses in the forest",
    "a {g} in a red hoodie, in the city at night",
    "a {g} in watercolor painting style",
)
STYLE_PROMPTS = ("a {g} in cartoon style", "a {g} in pop art style", "a {g} in oil painting style")


def _tile(image: Image.Image, label: str) -> Image.Image:
    big = image.convert("RGB").resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)
    tile = Image.new("RGB", (big.width, big.height + LABEL_HEIGHT), "white")
    tile.paste(big, (0, LABEL_HEIGHT))
    ImageDraw.Draw(tile).text((2, 1), label, fill="black")
    return tile


def grid(rows: Sequence[Sequence[tuple[Image.Image, str]]]) -> Image.Image:
    """Rows of ``(image, label)`` pairs as one picture; rows may have different lengths."""
    tiles = [[_tile(image, label) for image, label in row] for row in rows]
    width = max(sum(t.width for t in row) for row in tiles)
    height = sum(max(t.height for t in row) for row in tiles)
    sheet = Image.new("RGB", (width, height), "white")
    y = 0
    for row in tiles:
        x = 0
        for tile in row:
            sheet.paste(tile, (x, y))
            x += tile.width
        y += max(t.height for t in row)
    return sheet


def faces_picture(path: str | Path, weights: str | Path | None = None, analyzer_options: dict | None = None) -> Path:
    """The ``mini`` face backend on the example portraits: the box and five landmarks it finds, and the aligned crop
    its encoder reads."""
    analyzer = MiniFaceAnalyzer(weights_dir=weights, **(analyzer_options or {}))
    row = []
    for ref in sorted(EXAMPLES.glob("*_?.png")):
        image = Image.open(ref).convert("RGB")
        (face,) = analyzer.detect(image)
        marked = image.resize((image.width * 4, image.height * 4), Image.NEAREST)
        draw = ImageDraw.Draw(marked)
        draw.rectangle([v * 4 for v in face.box], outline=(255, 255, 0))
        for x, y in face.keypoints:
            draw.ellipse([x * 4 - 3, y * 4 - 3, x * 4 + 3, y * 4 + 3], fill=(255, 0, 0))
        row.append((marked.resize(image.size, Image.BILINEAR), f"{ref.stem} P={face.score:.2f}"))
        row.append((analyzer.align(image, face).resize((64, 64)), "aligned crop"))  # identity()'s crop, 1 detection
    grid([row]).save(path)
    return Path(path)


def _gender(path: Path) -> str:
    return "woman" if path.name.startswith("woman") else "man"


def make_doc_images(
    out_dir: str | Path, weights: str | Path | None = None, steps: int = STEPS, analyzer_options: dict | None = None
) -> list[Path]:
    """Write the pictures into ``out_dir``; return their paths. ``analyzer_options`` go to the ``mini`` face
    backend (the tests loosen its thresholds for untrained two-step weights)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded, _ = load_miniature_model(weights)
    generator = Generator(loaded, MiniFaceAnalyzer(weights_dir=weights, **(analyzer_options or {})))
    references = [EXAMPLES / "woman_1.png", EXAMPLES / "man_1.png"]

    def run(identity, prompt: str, **settings) -> tuple[Image.Image, Image.Image]:
        result = generator.generate(
            identity, GenerationSettings(prompt=prompt, seed=SEED, steps=steps, **settings), text_stream=True
        )
        return result.text_image, result.image

    written = []
    identities = {ref: generator.identity([ref]) for ref in references}

    rows = []
    for ref, identity in identities.items():
        row = [(Image.open(ref), "reference")]
        for template in GENERATE_PROMPTS:
            prompt = template.format(g=_gender(ref))
            text, ours = run(identity, prompt)
            short = prompt.split(" ", 3)[-1][:22]
            row += [(text, f"text: {short}"), (ours, "Infinite-ID")]
        rows.append(row)
    written.append(out / "world_generate.png")
    grid(rows).save(written[-1])

    rows = []
    for ref, identity in identities.items():
        prompt = GENERATE_PROMPTS[0].format(g=_gender(ref))
        outputs = {mode: run(identity, prompt, self_attention=mode) for mode in ("mixed", "mutual", "independent")}
        text = outputs["mixed"][0]  # the text stream does not depend on the identity stream's settings
        rows.append([(Image.open(ref), "reference"), (text, "text stream")] + [(o[1], m) for m, o in outputs.items()])
    written.append(out / "world_self_attention.png")
    grid(rows).save(written[-1])

    rows = []
    ref = references[0]
    for template in STYLE_PROMPTS:
        prompt = template.format(g=_gender(ref))
        style = prompt.split(" in ", 1)[1].removesuffix(" style")
        variants = (("off", "AdaIN off"), ("mean", "AdaIN-mean"), ("full", "full AdaIN"))
        outputs = [(run(identities[ref], prompt, adain=adain), label) for adain, label in variants]
        text = outputs[0][0][0]  # the same text stream in every variant
        rows.append([(Image.open(ref), "reference"), (text, f"text: {style}")] + [(o[1], lab) for o, lab in outputs])
    written.append(out / "world_adain.png")
    grid(rows).save(written[-1])

    prompt = GENERATE_PROMPTS[0].format(g=_gender(ref))
    row = [(Image.open(ref), "reference")]
    for scale in (0.0, 0.25, 0.5, 0.75, 1.0):
        row.append((run(identities[ref], prompt, id_scale=scale)[1], f"ID scale {scale:g}"))
    written.append(out / "world_id_scale.png")
    grid([row]).save(written[-1])
    written.append(faces_picture(out / "world_faces.png", weights, analyzer_options))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Make the documentation's pictures with the miniature model.")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in make_doc_images(args.out, args.weights, args.steps):
        print(path)


if __name__ == "__main__":
    main()
