"""Honest ceilings of the miniature world's metrics, and what the VAE keeps of them.

A generated image can at best look like another photo of the same person decoded by the VAE; so the ceiling of
ID similarity is not "the reference against itself" (1.0, or 0.95 through the detector) but the similarity of
two different photos of one person, located by the detector, raw and after the VAE round trip. The same holds for
attribute accuracy: the classifier on real renders, and on their round trips.

    python -m infinite_id.world.experiments.ceilings --weights DIR [--vae DIR] [--identities 100] [--json OUT]

For each of ``--identities`` held-out identities two photos are rendered (random scene, clothing, style, pose);
the first is the "reference", the second "another photo". Reported, each as mean ± standard error:

- attribute accuracy per attribute (the classifier against the render's labels), raw and round trip;
- ID similarity (``face_encoder_eval``, a missed face counting 0, as in the evaluation) of the reference to the
  other photo: both raw with their true landmarks, both raw through the detector, and the reference's VAE round
  trip (detector) against the raw other photo: the last is the honest ceiling of a generated image;
- PSNR of the round trip (whole image and face region).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

from ..face_backend import MiniFaceAnalyzer
from ..models.attributes import ATTRIBUTE_VALUES, AttributeClassifier, images_to_tensor
from ..models.world_metrics import KnownLayoutFaceAnalyzer
from ..scene.dataset import Example, sample_example
from ..scene.factors import EVAL_IDENTITIES
from ..trainers.train_vae import psnr_db, round_trip


@dataclass
class Estimate:
    mean: float
    sem: float

    @classmethod
    def of(cls, values) -> Estimate:
        values = np.asarray(values, dtype=np.float64)
        sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        return cls(float(values.mean()), sem)

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.sem:.3f}"


def photo_pairs(num_identities: int, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Two random photos of each of the first ``num_identities`` held-out identities."""
    first, second = [], []
    for i in range(num_identities):
        identity = EVAL_IDENTITIES.start + i
        first.append(sample_example(identity, np.random.default_rng([seed, 71, i, 0])))
        second.append(sample_example(identity, np.random.default_rng([seed, 71, i, 1])))
    return first, second


def tensor_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


@torch.no_grad()
def vae_round_trip(vae: AutoencoderKL, images: list[Image.Image], batch_size: int = 64) -> list[Image.Image]:
    """Encode (posterior mean) and decode, as 8-bit images like a pipeline's output."""
    return tensor_to_images(round_trip(vae, images_to_tensor(images), batch_size)[0])


def attribute_hits(classifier: AttributeClassifier, images: list[Image.Image], examples: list[Example]):
    """{attribute: list of 0/1}: does the classifier read the render's true value?"""
    predicted = classifier.predict(images)
    return {
        name: [float(p[name] == e.labels[name]) for p, e in zip(predicted, examples, strict=True)]
        for name in ATTRIBUTE_VALUES
    }


def accuracy_by_value(hits: list[float], examples: list[Example], name: str) -> dict[str, float]:
    """The mean of ``hits`` (one attribute's 0/1 reads) per true value of attribute ``name``, in label order:
    where a miss comes from (a thin accessory, one style's texture) rather than how large it is."""
    by_value: dict[str, list[float]] = {}
    for hit, example in zip(hits, examples, strict=True):
        by_value.setdefault(example.labels[name], []).append(hit)
    order = [v for v in ATTRIBUTE_VALUES[name] if v in by_value]
    return {value: float(np.mean(by_value[value])) for value in order}


def _similarities(analyzer, a: list[Image.Image], b: list[Image.Image]) -> tuple[np.ndarray, float]:
    """Row-wise cosine (0 where either face is missed) and the detection rate over both lists."""
    ea, fa = analyzer.embed_images(a)
    eb, fb = analyzer.embed_images(b)
    cos = np.where(fa & fb, (ea * eb).sum(axis=1), 0.0)
    return cos, float(np.concatenate([fa, fb]).mean())


def _psnr(a: list[Image.Image], b: list[Image.Image], masks: list[np.ndarray] | None = None) -> list[float]:
    """Per-image PSNR of 8-bit images (over the pixels of each mask), by the VAE training's measure."""

    def stacked(images: list[Image.Image]) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(x, np.float64) for x in images])).permute(0, 3, 1, 2)

    mask = None if masks is None else torch.from_numpy(np.stack(masks).astype(np.float64))[:, None]
    return psnr_db(stacked(a), stacked(b), mask, span=255.0).tolist()


def judge_folder(weights_dir: str | Path, judge_dir: str | Path | None = None) -> Path:
    """The attribute classifier that judges: ``judge_dir``, else the independent ``attributes_eval`` stage where
    the folder has it (the VAE's feature loss reads ``attributes``, so that one would flatter its round trips),
    else ``attributes``."""
    if judge_dir is not None:
        return Path(judge_dir)
    independent = Path(weights_dir) / "attributes_eval"
    return independent if (independent / "model.safetensors").is_file() else Path(weights_dir) / "attributes"


def ceilings_report(
    weights_dir: str | Path,
    vae_dir: str | Path | None = None,
    num_identities: int = 100,
    seed=0,
    judge_dir: str | Path | None = None,
):
    """The measurements of the module docstring, as a JSON-serialisable dict."""
    weights = Path(weights_dir)
    vae = AutoencoderKL.from_pretrained(vae_dir or weights / "base" / "vae")
    judge = judge_folder(weights, judge_dir)
    classifier = AttributeClassifier.from_pretrained(judge)
    first, second = photo_pairs(num_identities, seed)
    raw_a, raw_b = [e.image for e in first], [e.image for e in second]
    trip_a, trip_b = vae_round_trip(vae, raw_a), vae_round_trip(vae, raw_b)
    examples = first + second
    raw_hits = attribute_hits(classifier, raw_a + raw_b, examples)
    trip_hits = attribute_hits(classifier, trip_a + trip_b, examples)

    detector = MiniFaceAnalyzer(weights, encoder="face_encoder_eval")
    known = KnownLayoutFaceAnalyzer(weights, encoder="face_encoder_eval")
    for e in examples:
        known.remember(e.image, e.layout.landmarks)
    true_sim, _ = _similarities(known, raw_a, raw_b)
    raw_sim, raw_rate = _similarities(detector, raw_a, raw_b)
    trip_sim, trip_rate = _similarities(detector, trip_a, raw_b)
    self_sim, _ = _similarities(detector, trip_a, raw_a)
    masks = [e.layout.face_mask for e in examples]
    report = {
        "identities": num_identities,
        "vae": str(vae_dir or "base/vae"),
        "attribute_judge": str(judge),
        "attributes_raw": {k: vars(Estimate.of(v)) for k, v in raw_hits.items()},
        "attributes_round_trip": {k: vars(Estimate.of(v)) for k, v in trip_hits.items()},
        "attributes_by_value": {
            k: {"raw": accuracy_by_value(raw_hits[k], examples, k), "round_trip": accuracy_by_value(v, examples, k)}
            for k, v in trip_hits.items()
        },
        "id_other_photo_true_landmarks": vars(Estimate.of(true_sim)),
        "id_other_photo_detector": vars(Estimate.of(raw_sim)),
        "id_other_photo_round_trip_detector": vars(Estimate.of(trip_sim)),
        "id_round_trip_vs_original_detector": vars(Estimate.of(self_sim)),
        "detection_rate_raw": raw_rate,
        "detection_rate_round_trip": trip_rate,
        "psnr_db": vars(Estimate.of(_psnr(trip_a + trip_b, raw_a + raw_b))),
        "psnr_face_db": vars(Estimate.of(_psnr(trip_a + trip_b, raw_a + raw_b, masks))),
    }
    report["bars"] = vae_bars(report)
    return report


def vae_bars(report: dict, tolerance: float = 0.05) -> dict[str, bool]:
    """Issue #11's VAE bars: every attribute's round-trip accuracy within ``tolerance`` of the raw renders', and
    the round trip's ID similarity to another photo within ``tolerance`` of the raw value (detector)."""
    bars = {
        f"attribute {k}": report["attributes_round_trip"][k]["mean"] >= v["mean"] - tolerance
        for k, v in report["attributes_raw"].items()
    }
    raw = report["id_other_photo_detector"]["mean"]
    bars["id similarity"] = report["id_other_photo_round_trip_detector"]["mean"] >= raw - tolerance
    return bars


def format_report(report: dict) -> str:
    def est(d: dict) -> str:
        return str(Estimate(d["mean"], d["sem"]))

    lines = [
        f"held-out identities: {report['identities']} (two photos each); VAE: {report['vae']}; "
        f"attribute judge: {report.get('attribute_judge', 'attributes')}",
        "",
        "| attribute | real render | VAE round trip |",
        "|---|---|---|",
    ]
    for name, raw in report["attributes_raw"].items():
        lines.append(f"| {name} | {est(raw)} | {est(report['attributes_round_trip'][name])} |")
    lines += ["", "Per true value, real / round trip:"]
    for name, values in report.get("attributes_by_value", {}).items():
        cells = ", ".join(f"{v} {a:.2f} / {values['round_trip'][v]:.2f}" for v, a in values["raw"].items())
        lines.append(f"- {name}: {cells}")
    lines += [
        "",
        "| ID similarity to another photo of the person (face_encoder_eval) | value |",
        "|---|---|",
        f"| raw, true landmarks | {est(report['id_other_photo_true_landmarks'])} |",
        f"| raw, detector | {est(report['id_other_photo_detector'])} |",
        f"| VAE round trip of the reference, detector (ceiling of a generated image) |"
        f" {est(report['id_other_photo_round_trip_detector'])} |",
        f"| round trip against its own original, detector | {est(report['id_round_trip_vs_original_detector'])} |",
        f"| detection rate raw / round trip | {report['detection_rate_raw']:.3f} / "
        f"{report['detection_rate_round_trip']:.3f} |",
        "",
        f"PSNR of the round trip: {est(report['psnr_db'])} dB (face {est(report['psnr_face_db'])} dB)",
        "",
        "bars: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in report["bars"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Honest metric ceilings of the miniature world and the VAE's.")
    parser.add_argument("--weights", required=True, help="a world weights folder (attributes, landmarks, ...)")
    parser.add_argument("--vae", default=None, help="the VAE to check (default: the weights' base/vae)")
    parser.add_argument(
        "--judge",
        default=None,
        help="the attribute classifier that judges (default: the weights' attributes_eval, else attributes)",
    )
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the report here (a new file)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.identities < 2:
        parser.error("--identities must be at least 2")
    if args.json and Path(args.json).exists():
        parser.error(f"--json {args.json} exists; choose a new file")
    torch.set_num_threads(args.threads)
    report = ceilings_report(args.weights, args.vae, args.identities, args.seed, args.judge)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
