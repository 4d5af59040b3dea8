"""Reproduce the paper's ablation table, and a style table, in the miniature world with one command.

    python -m infinite_id.world.experiments.reproduce --out runs/reproduce              # shipped weights, ~15 min
    python -m infinite_id.world.experiments.reproduce --weights /work/wtrain --out DIR  # a retrain run's weights
    python -m infinite_id.world.experiments.reproduce --out DIR --quick                 # a smoke run

Held-out identities (``EVAL_IDENTITIES``) get one reference photo each, rendered as a plain studio photo, and one
other photo (a random photo-style scene, pose and light), never given to a method, that the copy-paste gap scores
against (ID similarity to the reference minus to the other photo: a copy of the reference scores high). Every
row is generated over identities x prompts x seeds with the project's resumable evaluation runner
(:mod:`infinite_id.evaluation`) and scored with the world's metric models
(:mod:`infinite_id.world.models.world_metrics`):
CLIP-T and CLIP-I with the mini CLIP, ID similarity with the independent evaluation face encoder (faces located by
the mini detector), attribute accuracy with the attribute classifier against what the prompt names.

Rows of the main table (raw-photo prompts): Infinite-ID; without identity-enhanced training (the adapter trained
with captions, still with mixed attention); without mixed attention; mutual attention; IP-Adapter-style (the
captioned adapter, identity stream only); text only (the base model: no identity, a lower bound); a copy of the
reference photo (the upper bound of identity). The style table compares AdaIN-mean, no AdaIN and full AdaIN on
style prompts. The trade-off plot sweeps the ID scale for Infinite-ID and the IP-Adapter-style row.

The tables, error bars (mean ± standard error) and the claims check are :mod:`infinite_id.evaluation`'s (``report``
and ``claims``); this module holds what is the world's: its identities and reference photos, the attribute
accuracy, its table rows and the claims that compare them.

Outputs in ``--out``: ``tables.md`` (both tables, the command, the weights' fingerprint), ``results.csv``,
``results.json``, ``tradeoff.png`` / ``tradeoff.json``, ``grid.png`` and ``grid_style.png``; the runs themselves
(images, records, settings) in ``runs/<run>/``; the photos in ``references/`` and ``others/``. Run the same command
again to resume: finished images are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ...evaluation.claims import MIN_EFFECT, PAPER_ABLATIONS, Claim, claims_markdown, paper_claim
from ...evaluation.claims import check_claims as check_row_claims
from ...evaluation.methods import METHODS
from ...evaluation.metrics import FaceSimilarity
from ...evaluation.prompt_sets import PromptSet
from ...evaluation.report import (
    COPY_PASTE_METRICS,
    ERROR_BARS,
    labelled_rows_grid,
    markdown_table,
    plot_tradeoff,
    summarize_records,
    tradeoff_points,
    write_csv,
)
from ...evaluation.runner import EvalSettings, EvaluationIdentity, EvaluationRunner, read_records
from ...outputs import atomic_write
from ..models.weights import resolve_weights_dir
from ..models.world_metrics import (
    SEMANTIC_ATTRIBUTES,
    KnownLayoutFaceAnalyzer,
    detector_ceiling,
    image_fingerprint,
    load_attribute_scorer,
    load_clip_scorer,
    semantic_scores,
)
from ..scene.captions import parse_prompt
from ..scene.dataset import sample_example
from ..scene.factors import EVAL_IDENTITIES, Nuisance, Semantics, identity_from_id
from ..scene.render import render_with_layout

__all__ = [
    "MAIN_ROWS",
    "RAW_PROMPTS",
    "STYLE_PROMPTS",
    "STYLE_ROWS",
    "ReproduceConfig",
    "other_photo",
    "reference_photo",
    "reproduce",
]

#: Raw-photo prompts in the paper's shapes (its figures' prompts where the world has the words).
RAW_PROMPTS: tuple[str, ...] = (
    "a photo of a {class_word} wearing a brown clothing, in the snow",
    "a photo of a {class_word} wearing a yellow shirt, in the living room",
    "a photo of a {class_word} wearing a colorful shirt, on the beach",
    "a photo of a {class_word} wearing a yellow sweater, in the time square",
    "a photo of a {class_word} wearing a shirt, in the forest",
    "a photo of a {class_word} wearing a red hoodie and a hat, in the mountains",
    "a photo of a {class_word} with sunglasses, in the desert",
    "a photo of a {class_word} wearing a green suit and glasses, in the library",
)
#: Style prompts, one per non-photo style of the world (cartoon, sketch, oil painting, pop art, watercolor).
STYLE_PROMPTS: tuple[str, ...] = (
    "a {class_word} in Disney cartoon style",
    "a {class_word} in pencil sketch style",
    "a {class_word} in oil painting style",
    "a {class_word} in comic book style",
    "a {class_word} in watercolor painting style",
)
#: What the reference photo shows besides the person: a plain studio photo, frontal, neutral light.
REFERENCE_SEMANTICS = Semantics(background="studio", clothing="t-shirt", clothing_colour="gray", style="photo")
REFERENCE_NUISANCE = Nuisance()
#: The random stream of each identity's other photo (``[OTHER_PHOTO_STREAM, identity id]``).
OTHER_PHOTO_STREAM = 72
ADAPTER_STAGES = {"identity_enhanced": "adapter_identity_enhanced", "joint": "adapter_joint"}
METRIC_STAGES = ("face_encoder", "face_encoder_eval", "clip", "attributes", "landmarks", "base")
IMAGE_SIZE = 64


@dataclass(frozen=True)
class ReproduceConfig:
    """Sizes of a reproduction. The defaults take about 15 minutes on one CPU thread with the mini models."""

    identities: int = 16
    prompts: int = len(RAW_PROMPTS)
    styles: int = len(STYLE_PROMPTS)
    seeds: int = 1
    steps: int = 20
    guidance_scale: float = 5.0
    id_scale: float = 1.0
    curve_scales: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0)
    curve_identities: int = 8
    curve_prompts: int = 4
    detector_threshold: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "identities": (self.identities, 1, len(EVAL_IDENTITIES)),
            "prompts": (self.prompts, 1, len(RAW_PROMPTS)),
            "styles": (self.styles, 1, len(STYLE_PROMPTS)),
            "seeds": (self.seeds, 1, 1000),
            "steps": (self.steps, 1, 1000),
            "curve_identities": (self.curve_identities, 0, self.identities),
            "curve_prompts": (self.curve_prompts, 0, self.prompts),
        }
        for name, (value, low, high) in checks.items():
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")
        if any(s < 0 for s in self.curve_scales):
            raise ValueError(f"ID scales must be >= 0, got {self.curve_scales}")


QUICK_CONFIG = ReproduceConfig(
    identities=2, prompts=2, styles=2, steps=2, curve_scales=(0.5, 1.0, 1.5), curve_identities=1, curve_prompts=1
)


@dataclass(frozen=True)
class Row:
    """One table row: a method of one run (``run=None``: the reference photo itself)."""

    key: str
    label: str
    run: str | None
    method: str | None


@dataclass(frozen=True)
class RunSpec:
    """One evaluation-runner folder: an adapter, a prompt set, the methods that share them."""

    name: str
    adapter: str
    prompt_set: str
    methods: tuple[str, ...]
    curve: bool = False


MAIN_ROWS: tuple[Row, ...] = (
    Row("infinite-id", "Infinite-ID (full)", "raw-enhanced", "infinite-id"),
    Row("no-enhanced-training", "w/o identity-enhanced training (joint adapter)", "raw-joint", "infinite-id"),
    Row("no-mixed-attention", "w/o mixed attention (identity stream only)", "raw-enhanced", "no-mixed-attention"),
    Row("mutual-attention", "mutual attention (MasaCtrl-style)", "raw-enhanced", "mutual-attention"),
    Row("ip-adapter-style", "IP-Adapter-style (joint adapter, single stream)", "raw-joint", "no-mixed-attention"),
    Row("text-only", "text only (base model, no identity)", "raw-enhanced", "base-model"),
    Row("reference-copy", "reference copy (upper bound)", None, None),
)
STYLE_ROWS: tuple[Row, ...] = (
    Row("adain-mean", "Infinite-ID, AdaIN-mean", "style-enhanced", "infinite-id"),
    Row("no-adain", "w/o AdaIN-mean", "style-enhanced", "no-adain"),
    Row("full-adain", "full AdaIN (mean and std)", "style-enhanced", "full-adain"),
    Row("text-only", "text only (base model, no identity)", "style-enhanced", "base-model"),
    Row("reference-copy", "reference copy (a photo)", None, None),
)
CURVE_ROWS: tuple[Row, ...] = (
    Row("infinite-id", "Infinite-ID (full)", "curve-enhanced", "infinite-id"),
    Row("ip-adapter-style", "IP-Adapter-style (joint adapter, single stream)", "curve-joint", "no-mixed-attention"),
)
RUNS: tuple[RunSpec, ...] = (
    RunSpec(
        "raw-enhanced",
        "identity_enhanced",
        "raw",
        ("infinite-id", "base-model", "no-mixed-attention", "mutual-attention"),
    ),
    RunSpec("raw-joint", "joint", "raw", ("infinite-id", "no-mixed-attention")),
    RunSpec("style-enhanced", "identity_enhanced", "style", ("infinite-id", "no-adain", "full-adain", "base-model")),
    RunSpec("curve-enhanced", "identity_enhanced", "raw", ("infinite-id",), curve=True),
    RunSpec("curve-joint", "joint", "raw", ("no-mixed-attention",), curve=True),
)
# PAPER_ABLATIONS (the paper's ablation table, keyed by the main table's row keys) is evaluation.claims'.


# ---------------------------------------------------------------------------------------------- references
def reference_photo(identity_id: int) -> tuple[Image.Image, tuple[tuple[float, float], ...]]:
    """The reference photo of a held-out identity (a plain frontal studio photo) and its five landmarks."""
    image, layout = render_with_layout(
        identity_from_id(identity_id), REFERENCE_SEMANTICS, REFERENCE_NUISANCE, IMAGE_SIZE
    )
    return image, layout.landmarks


def _save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def other_photo(identity_id: int) -> tuple[Image.Image, tuple[tuple[float, float], ...]]:
    """Another photo of a held-out identity, for the copy-paste gap: the same person in a random photo-style
    scene, pose and light (fixed per identity), and its five landmarks. Never given to a method."""
    rng = np.random.default_rng([OTHER_PHOTO_STREAM, identity_id])
    example = sample_example(identity_id, rng, size=IMAGE_SIZE, style_weights={"photo": 1.0})
    return example.image, example.layout.landmarks


def _render_once(image: Image.Image, path: Path) -> None:
    if not path.is_file() or image_fingerprint(Image.open(path)) != image_fingerprint(image):
        _save_png(image, path)  # a changed renderer changes the photo's hash: the runner then refuses to resume


def _identities(out: Path, config: ReproduceConfig) -> tuple[list[EvaluationIdentity], list[tuple[Image.Image, Any]]]:
    """Render (or reuse) the reference photos and one other photo per identity; returns the runner's identities
    and every rendered photo with its known landmarks."""
    identities, layouts = [], []
    for identity_id in EVAL_IDENTITIES[: config.identities]:
        name = f"id{identity_id}"
        path, other_path = out / "references" / f"{name}.png", out / "others" / f"{name}.png"
        for render, target in ((reference_photo, path), (other_photo, other_path)):
            image, landmarks = render(identity_id)
            _render_once(image, target)
            layouts.append((image, landmarks))
        identities.append(EvaluationIdentity(name, [path], identity_from_id(identity_id).gender, [other_path]))
    return identities, layouts


def _sha256(path: Path, chars: int = 16) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:chars]


def weights_fingerprint(weights: Path) -> dict[str, Any]:
    """What identifies the weights in the tables: the folder, the hash and date of its ``metrics.json``."""
    metrics = weights / "metrics.json"
    if not metrics.is_file():
        return {"dir": str(weights), "metrics_sha256": None, "metrics_date": None}
    date = dt.datetime.fromtimestamp(metrics.stat().st_mtime, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {"dir": str(weights), "metrics_sha256": _sha256(metrics), "metrics_date": date}


# ---------------------------------------------------------------------------------------------- runner
class WorldEvaluationRunner(EvaluationRunner):
    """The project's runner plus the world's attribute accuracy (classifier vs. what the prompt names)."""

    def __init__(self, *args, attributes, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.attributes = attributes

    def score(self, image: Image.Image, prompt: str, refs: dict[str, Any]) -> dict[str, Any]:
        scores = super().score(image, prompt, refs)
        scores.update(_attribute_scores(self.attributes, image, prompt))
        return scores


def _attribute_scores(attributes, image: Image.Image, prompt: str) -> dict[str, Any]:
    predicted = attributes.predict([image.convert("RGB")])[0]
    return semantic_scores(predicted, parse_prompt(prompt).named())


def _score_reference(clip, face, attributes, image: Image.Image, prompt: str, refs: dict[str, Any]) -> dict:
    """The reference photo scored as a generated image is (the runner's ``score``, without a pipeline): its
    copy-paste gap is that of a perfect copy."""
    return {
        "clip_t": float(clip.clip_t([image], prompt)[0]),
        "clip_i": float(clip.clip_i([image], refs["clip"])[0]),
        **face.score(image, refs["face"], refs["face_other"]).to_dict(),
        **_attribute_scores(attributes, image, prompt),
    }


def _load_pipe(weights: Path, adapter: Path, analyzer: KnownLayoutFaceAnalyzer):
    """The base model with one adapter, DDIM, and the adapter's face encoder as its face analyzer (the pipeline
    checks that the adapter was trained with exactly this encoder)."""
    from diffusers import DDIMScheduler

    from ...pipelines import InfiniteIDStableDiffusionPipeline

    pipe = InfiniteIDStableDiffusionPipeline.from_pretrained(str(weights / "base"))
    if not isinstance(pipe.scheduler, DDIMScheduler):  # the paper samples with DDIM
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_adapter(adapter)
    pipe.set_face_analyzer(analyzer)
    return pipe


def _prompt_sets(config: ReproduceConfig) -> dict[str, PromptSet]:
    return {
        "raw": PromptSet("raw", RAW_PROMPTS[: config.prompts]),
        "style": PromptSet("style", STYLE_PROMPTS[: config.styles]),
        "curve": PromptSet("raw", RAW_PROMPTS[: config.curve_prompts] or RAW_PROMPTS[:1]),
    }


class _Progress:
    """Progress lines on stderr, at most every 10 seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.run = ""
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last > 10 or done == total:
            self.last = now
            print(f"[{now - self.start:6.0f} s] {self.run}: {done}/{total} images", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- aggregation
#: What a row averages besides the face columns: the mini CLIP's scores and the attribute accuracies.
ROW_METRICS = ("clip_t", "clip_i", "attr_acc", *(f"attr_{a}" for a in SEMANTIC_ATTRIBUTES))


def _row_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return summarize_records(records, ROW_METRICS)


def _row_records(table: str, row: Row, records: dict[str, list[dict]], id_scale: float) -> list[dict]:
    run = row.run or f"reference-{table}"
    return [
        r
        for r in records.get(run, [])
        if (row.method is None or r["method"] == row.method)
        and (r["method"] == "base-model" or math.isclose(r["id_scale"], id_scale))
    ]


def _table_rows(table: str, rows: Sequence[Row], records: dict[str, list[dict]], id_scale: float) -> list[dict]:
    return [
        {
            "table": table,
            "row": row.key,
            "label": row.label,
            **_row_summary(_row_records(table, row, records, id_scale)),
        }
        for row in rows
    ]


#: The paper's claims as comparisons of the world's table rows (``Claim.table`` is ``main`` or ``style``).
CLAIMS: tuple[Claim, ...] = (
    paper_claim(
        "identity-enhanced training raises ID similarity", "main", "face_sim", "infinite-id", "no-enhanced-training"
    ),
    paper_claim("identity-enhanced training raises CLIP-T", "main", "clip_t", "infinite-id", "no-enhanced-training"),
    paper_claim("identity-enhanced training raises CLIP-I", "main", "clip_i", "infinite-id", "no-enhanced-training"),
    paper_claim("mixed attention raises CLIP-T", "main", "clip_t", "infinite-id", "no-mixed-attention"),
    Claim(
        "mixed attention raises attribute accuracy (paper: via CLIP-T)",
        "main",
        "attr_acc",
        "infinite-id",
        "no-mixed-attention",
    ),
    paper_claim(
        "mixed attention costs a little ID similarity", "main", "face_sim", "infinite-id", "no-mixed-attention"
    ),
    paper_claim("mutual attention loses identity", "main", "face_sim", "infinite-id", "mutual-attention"),
    paper_claim("mutual attention lowers CLIP-T", "main", "clip_t", "infinite-id", "mutual-attention"),
    paper_claim("mutual attention lowers CLIP-I", "main", "clip_i", "infinite-id", "mutual-attention"),
    paper_claim(
        "Infinite-ID beats IP-Adapter on ID similarity", "main", "face_sim", "infinite-id", "ip-adapter-style"
    ),
    paper_claim("Infinite-ID beats IP-Adapter on CLIP-T", "main", "clip_t", "infinite-id", "ip-adapter-style"),
    Claim(
        "AdaIN-mean stylizes (style accuracy) where no AdaIN does not", "style", "attr_style", "adain-mean", "no-adain"
    ),
    Claim("full AdaIN costs identity against AdaIN-mean", "style", "face_sim", "adain-mean", "full-adain"),
)


def check_world_claims(records: dict[str, list[dict]], id_scale: float) -> list[dict[str, Any]]:
    """:data:`CLAIMS` checked on the runs' records (``{run: records}``): each a paired difference over the same
    identity, prompt and seed, with its standard error and verdict (:func:`infinite_id.evaluation.check_claims`)."""
    tables = (("main", MAIN_ROWS), ("style", STYLE_ROWS))
    rows = {(t, r.key): _row_records(t, r, records, id_scale) for t, table in tables for r in table}
    return check_row_claims(CLAIMS, rows, MIN_EFFECT)


#: Deprecated alias of :func:`check_world_claims` (kept for one release).
check_claims = check_world_claims


COLUMNS: tuple[tuple[str, str], ...] = (
    ("clip_t", "CLIP-T"),
    ("clip_i", "CLIP-I"),
    ("face_sim", "ID sim"),
    ("face_sim_detected", "ID sim (detected)"),
    ("face_detection_rate", "face det."),
    ("face_sim_other", "ID sim (other photo)"),
    ("copy_paste_gap", "copy-paste gap"),
    ("attr_acc", "attr. acc."),
    ("attr_background", "background"),
    ("attr_clothing", "clothing"),
    ("attr_clothing_colour", "colour"),
    ("attr_accessory", "accessory"),
    ("attr_style", "style"),
)
_WITH_SEM = {"clip_t", "clip_i", "face_sim", *COPY_PASTE_METRICS, "attr_acc"}
_ROW_LEAD = (("label", "method"), ("n_images", "images"))
_TRADEOFF_LEAD = (("method", "method"), ("id_scale", "ID scale"), ("n_images", "images"))
_TRADEOFF_COLUMNS = (("clip_t", "CLIP-T"), ("face_sim", "ID sim"), ("attr_acc", "attr. acc."))


def _markdown_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    return markdown_table(rows, _ROW_LEAD, COLUMNS, _WITH_SEM)


def _tables_markdown(result: dict[str, Any]) -> str:
    s, w = result["settings"], result["weights"]
    lines = [
        "# Infinite-ID in the miniature world: the paper's tables in miniature",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Weights: `{w['dir']}` (metrics.json sha256 `{w['metrics_sha256']}`, {w['metrics_date']}); "
        f"adapters: {', '.join(f'{k} `{v}`' for k, v in result['adapters'].items())}.",
        "",
        f"Setup: {s['identities']} held-out identities (EVAL_IDENTITIES from {EVAL_IDENTITIES[0]}), one reference "
        f"photo each (plain frontal studio photo) and one other photo (scored against only), {s['prompts']} "
        f"raw-photo prompts, {s['styles']} style prompts, "
        f"{s['seeds']} seed(s), DDIM {s['steps']} steps, guidance {s['guidance_scale']}, ID scale {s['id_scale']}, "
        f"{IMAGE_SIZE} px. {ERROR_BARS[0].upper()}{ERROR_BARS[1:]}.",
        "",
        "## Main table: raw-photo prompts",
        "",
        *_markdown_table(result["main"]),
        "",
        "## Style table: AdaIN-mean",
        "",
        *_markdown_table(result["style"]),
        "",
        "## Trade-off over the ID scale (`tradeoff.png`)",
        "",
        *markdown_table(result["tradeoff"], _TRADEOFF_LEAD, _TRADEOFF_COLUMNS, {k for k, _ in _TRADEOFF_COLUMNS}),
        "",
        "## The paper's claims, checked",
        "",
        *claims_markdown(result["claims"], measured="world", min_effect=MIN_EFFECT),
    ]
    ceiling = result["detector_ceiling"]
    paper = ["| method | CLIP-T | CLIP-I | M_FaceNet |", "|---|---|---|---|"]
    labels = {r.key: r.label for r in MAIN_ROWS}
    paper += [
        f"| {labels[k]} | {v['clip_t']:.3f} | {v['clip_i']:.3f} | {v['face_sim']:.3f} |"
        for k, v in PAPER_ABLATIONS.items()
    ]
    lines += [
        "",
        "## Notes",
        "",
        "- CLIP-T: mini CLIP cosine of image and prompt; CLIP-I: of image and reference photo (raw cosines).",
        "- ID sim: cosine of the evaluation face encoder (trained with another seed than the adapters' encoder) "
        "between the face in the image, located by the mini face detector (P(face) >= "
        f"{s['detector_threshold']}), and the reference face, located by the renderer's known layout. An image "
        "without a detected face counts as 0 (ID sim (detected) leaves it out). The reference copy reuses the "
        "known layout, so its ID sim is the metric's maximum, 1.",
        "- ID sim (other photo): the same cosine against another photo of the person (a random photo-style scene, "
        "pose and light, its face at its known layout), never given to a method; copy-paste gap = ID sim - ID sim "
        "(other photo), a missed face counting 0 in both. Near 0 the person is generated, large the reference "
        "photo is copied; the reference copy's gap is a perfect copy's.",
        f"- Detector ceiling: the same reference photos located by the detector instead of their layout score ID sim "
        f"{_fmt(ceiling.get('face_sim'))} (detection rate {_fmt(ceiling.get('face_detection_rate'))}): no generated "
        "image can be expected to score higher.",
        "- Attribute accuracy: the attribute classifier's prediction against what the prompt names "
        "(`parse_prompt`), over background, clothing kind, clothing colour, accessory and style only; per-attribute "
        "columns are the share of images that show the named value.",
        "- The IP-Adapter-style row is this project's captioned (joint) adapter run as a single stream, not the "
        "released IP-Adapter.",
        "",
        "The paper's ablation table (SDXL, FaceNet; IP-Adapter from its main comparison), for comparison:",
        "",
        *paper,
        "",
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields = ["table", "row", "label", "n_images"]
    for key, _ in COLUMNS:
        fields += [f for f in (key, f"{key}_sem") if any(f in r for r in rows)]
    write_csv(path, rows, fields)


def _grid(out: Path, rows: Sequence[Row], records: dict[str, list[dict]], id_scale: float, path: Path) -> None:
    """A small grid: one row per table row, one column per (identity, prompt) pair (seed 0, ID scale 1)."""
    first = next((records[r.run] for r in rows if r.run and records.get(r.run)), [])
    if not first:
        return
    pairs = list(dict.fromkeys((r["identity"], r["prompt_index"]) for r in first))
    identities = list(dict.fromkeys(i for i, _ in pairs))
    prompts = sorted({p for _, p in pairs})
    columns = [(identities[k % len(identities)], prompts[k % len(prompts)]) for k in range(min(4, len(pairs)))]
    table: list[tuple[str, list[Path | None]]] = []
    for row in rows:
        sources: list[Path | None] = []
        for identity, prompt_index in columns:
            if row.run is None:
                sources.append(out / "references" / f"{identity}.png")
                continue
            match = [
                r
                for r in records.get(row.run, [])
                if r["method"] == row.method
                and r["identity"] == identity
                and r["prompt_index"] == prompt_index
                and (r["method"] == "base-model" or math.isclose(r["id_scale"], id_scale))
            ]
            sources.append(out / "runs" / row.run / min(match, key=lambda r: r["seed"])["image"] if match else None)
        table.append((row.label, sources))
    grid = labelled_rows_grid(table, cell=80, label_width=290)
    _save_png(grid, path)


# ---------------------------------------------------------------------------------------------- the command
def _adapter_paths(weights: Path, overrides: dict[str, str | None]) -> dict[str, Path]:
    paths = {}
    for kind, stage in ADAPTER_STAGES.items():
        path = Path(overrides[kind]) if overrides.get(kind) else weights / stage / "adapter.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no {kind} adapter at {path} (train it, or pass --adapter-{kind.split('_')[-1]})")
        paths[kind] = path
    return paths


def reproduce(
    out: str | Path,
    weights: str | Path | None = None,
    config: ReproduceConfig | None = None,
    adapters: dict[str, str | None] | None = None,
    command: str | None = None,
    report_only: bool = False,
) -> dict[str, Any]:
    """Generate what is missing, then write the tables, plot and grids. Returns the results (also in
    ``results.json``) plus ``generated``: how many images this call made."""
    config = config or ReproduceConfig()
    adapters = adapters or {}
    stages = list(METRIC_STAGES) + [s for k, s in ADAPTER_STAGES.items() if not adapters.get(k)]
    weights = resolve_weights_dir(weights, stages)
    adapter_paths = _adapter_paths(weights, adapters)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identities, layouts = _identities(out, config)
    references = {i.name: Image.open(i.images[0]).convert("RGB") for i in identities}

    def analyzer(stage: str) -> KnownLayoutFaceAnalyzer:
        a = KnownLayoutFaceAnalyzer(weights, stage, threshold=config.detector_threshold)
        for image, landmarks in layouts:
            a.remember(image, landmarks)
        return a

    clip = load_clip_scorer(weights)
    attributes = load_attribute_scorer(weights)
    face_eval = analyzer("face_encoder_eval")
    face_metric = FaceSimilarity(face_eval)
    prompt_sets = _prompt_sets(config)
    seeds = list(range(config.seeds))
    records: dict[str, list[dict]] = {}
    pipes: dict[str, Any] = {}
    progress = _Progress()
    generated, timings = 0, {}
    for spec in RUNS:
        if spec.curve and (config.curve_identities == 0 or not config.curve_scales):
            continue
        run_dir = out / "runs" / spec.name
        run_identities = identities[: config.curve_identities] if spec.curve else identities
        prompt_set = prompt_sets["curve" if spec.curve else spec.prompt_set]
        adapter = adapter_paths[spec.adapter]
        settings = EvalSettings(
            model=str(weights / "base"),
            adapter=str(adapter),
            methods=list(spec.methods),
            seeds=seeds,
            id_scale=config.id_scale,
            curve_scales=list(config.curve_scales) if spec.curve else [],
            curve_methods=list(spec.methods) if spec.curve else [],
            num_inference_steps=config.steps,
            guidance_scale=config.guidance_scale,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            training_face_encoder="face_encoder",
            extra={
                "adapter_sha256": _sha256(adapter),
                "weights": weights_fingerprint(weights),
                "attributes": "attribute classifier vs parse_prompt, semantic attributes only",
                "detector_threshold": config.detector_threshold,
                "references": "renderer layout; generated images: mini face detector",
            },
        )
        before = len(read_records(run_dir / "records.jsonl"))
        if report_only:
            records[spec.name] = read_records(run_dir / "records.jsonl")
            continue
        if spec.adapter not in pipes:
            pipes[spec.adapter] = _load_pipe(weights, adapter, analyzer("face_encoder"))
        runner = WorldEvaluationRunner(
            pipes[spec.adapter],
            run_dir,
            settings,
            [METHODS[m] for m in spec.methods],
            run_identities,
            [prompt_set],
            clip=clip,
            face=face_metric,
            attributes=attributes,
            progress=progress,
        )
        progress.run = spec.name
        started = time.perf_counter()
        records[spec.name] = runner.run()
        timings[spec.name] = round(time.perf_counter() - started, 1)
        generated += len(records[spec.name]) - before

    # the reference photo itself, scored as if generated (cheap: recomputed every time)
    for table, set_name in (("main", "raw"), ("style", "style")):
        rows = []
        for identity in identities:
            image = references[identity.name]
            others = [Image.open(p).convert("RGB") for p in identity.others]
            refs = {"clip": clip.image_embeds([image]), "face": face_metric.reference([image])}
            refs["face_other"] = face_metric.reference(others, [str(p) for p in identity.others], other=True)
            for index, prompt in enumerate(prompt_sets[set_name].render(identity.class_word)):
                scores = _score_reference(clip, face_metric, attributes, image, prompt, refs)
                rows.append(
                    {
                        "method": "reference",
                        "identity": identity.name,
                        "prompt_set": set_name,
                        "prompt_index": index,
                        "prompt": prompt,
                        "seed": 0,
                        "id_scale": config.id_scale,
                        "image": f"references/{identity.name}.png",
                        **scores,
                    }
                )
        records[f"reference-{table}"] = rows

    curve_records = []
    for row in CURVE_ROWS:
        curve_records += [dict(r, method=row.label) for r in records.get(row.run, []) if r["method"] == row.method]
    points = []
    for point in tradeoff_points(curve_records, [r.label for r in CURVE_ROWS]):
        chosen = [
            r
            for r in curve_records
            if r["method"] == point["method"] and math.isclose(r["id_scale"], point["id_scale"])
        ]
        points.append({"method": point["method"], "id_scale": point["id_scale"], **_row_summary(chosen)})

    result = {
        "command": command or "python -m infinite_id.world.experiments.reproduce",
        "weights": weights_fingerprint(weights),
        "adapters": {k: str(v) for k, v in adapter_paths.items()},
        "settings": dataclasses.asdict(config),
        "main": _table_rows("main", MAIN_ROWS, records, config.id_scale),
        "style": _table_rows("style", STYLE_ROWS, records, config.id_scale),
        "tradeoff": points,
        "claims": check_world_claims(records, config.id_scale),
        "detector_ceiling": detector_ceiling(face_eval, list(references.values())),
        "timings_s": timings,
        "generation_s": {k: round(sum(r.get("generation_s", 0.0) for r in v), 1) for k, v in records.items()},
    }
    atomic_write(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    _write_csv(out / "results.csv", result["main"] + result["style"])
    atomic_write(out / "tables.md", _tables_markdown(result))
    if points:
        atomic_write(out / "tradeoff.json", json.dumps(points, indent=2) + "\n")
        plot_tradeoff(points, out / "tradeoff.png")
    _grid(out, MAIN_ROWS, records, config.id_scale, out / "grid.png")
    _grid(out, STYLE_ROWS, records, config.id_scale, out / "grid_style.png")
    return {**result, "generated": generated}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Reproduce the paper's tables in the miniature world.")
    parser.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    parser.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    parser.add_argument("--identities", type=int, default=None, help="held-out identities (default 16)")
    parser.add_argument("--prompts", type=int, default=None, help=f"raw-photo prompts, at most {len(RAW_PROMPTS)}")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per identity and prompt (default 1)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps (default 20)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 identities, 2 prompts, 2 steps")
    parser.add_argument("--adapter-enhanced", default=None, help="identity-enhanced adapter file (default: weights)")
    parser.add_argument("--adapter-joint", default=None, help="joint (captioned) adapter file (default: weights)")
    parser.add_argument("--report-only", action="store_true", help="rebuild the tables from the records")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = QUICK_CONFIG if args.quick else ReproduceConfig()
    changes = {
        k: getattr(args, k) for k in ("identities", "prompts", "seeds", "steps") if getattr(args, k) is not None
    }
    if changes:
        if "identities" in changes:
            changes["curve_identities"] = min(config.curve_identities, changes["identities"])
        if "prompts" in changes:
            changes["curve_prompts"] = min(config.curve_prompts, changes["prompts"])
        config = dataclasses.replace(config, **changes)
    command = "python -m infinite_id.world.experiments.reproduce " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    result = reproduce(
        args.out,
        args.weights,
        config,
        {"identity_enhanced": args.adapter_enhanced, "joint": args.adapter_joint},
        command=command.strip(),
        report_only=args.report_only,
    )
    print(Path(args.out) / "tables.md")
    print(json.dumps({"generated": result["generated"], "timings_s": result["timings_s"]}))


if __name__ == "__main__":
    main()
