"""Turn evaluation records into tables (Markdown, CSV, JSON), image grids and the ID-similarity vs CLIP-T curve."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from .methods import METHODS
from .metrics import summarize, summarize_face_scores

__all__ = ["aggregate", "plot_tradeoff", "tradeoff_points", "write_grids", "write_report", "write_tables"]

ALL_PROMPTS = "all"
METRIC_COLUMNS = ("clip_t", "clip_i", "face_sim", "face_sim_detected", "face_detection_rate", "dino")
COLUMN_TITLES = {
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "face_sim": "Face sim",
    "face_sim_detected": "Face sim (detected)",
    "face_detection_rate": "Face det. rate",
    "dino": "DINO",
}


def _summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"n_images": len(records)}
    for metric in ("clip_t", "clip_i", "dino"):
        values = [r.get(metric) for r in records if metric in r]
        if values:
            stats = summarize(values)
            row[metric], row[f"{metric}_std"] = stats["mean"], stats["std"]
    if any("face_detected" in r for r in records):
        faces = summarize_face_scores([r for r in records if "face_detected" in r])
        row.update({k: faces[k] for k in ("face_sim", "face_sim_detected", "face_detection_rate")})
    return row


def aggregate(records: Sequence[dict[str, Any]], id_scale: float, methods: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (prompt set, method) at the main ID scale, plus an ``all`` prompt-set row per method."""
    main = [r for r in records if math.isclose(r["id_scale"], id_scale) or r["method"] == "base-model"]
    sets = list(dict.fromkeys(r["prompt_set"] for r in main))
    rows = []
    for prompt_set in [*sets, ALL_PROMPTS] if len(sets) > 1 else sets:
        for method in methods:
            chosen = [r for r in main if r["method"] == method and prompt_set in (ALL_PROMPTS, r["prompt_set"])]
            if not chosen:
                continue
            label = METHODS[method].label if method in METHODS else method
            rows.append({"prompt_set": prompt_set, "method": method, "label": label, **_summary(chosen)})
    return rows


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [c for c in METRIC_COLUMNS if any(c in r for r in rows)]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_tables(rows: Sequence[dict[str, Any]], out_dir: str | Path, settings: dict[str, Any]) -> dict[str, Path]:
    """``results.md``, ``results.csv`` and ``results.json`` (the JSON carries the settings too)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    lines = [
        "| prompts | method | images | " + " | ".join(COLUMN_TITLES[c] for c in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [row["prompt_set"], row["label"], str(row["n_images"])]
        for c in columns:
            cell = _fmt(row.get(c))
            if f"{c}_std" in row and row.get(f"{c}_std") is not None:
                cell += f" ± {row[f'{c}_std']:.3f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"ID scale {settings.get('id_scale')}, seeds {settings.get('seeds')}, "
        f"{settings.get('num_inference_steps')} steps, guidance {settings.get('guidance_scale')}.",
        f"CLIP: {settings.get('clip_model')}; face encoder: {settings.get('face_encoder')} "
        f"(adapter trained with {settings.get('training_face_encoder')}); DINO: {settings.get('dino_model')}.",
        "All similarities are raw cosines (± population std over images). "
        "Face sim counts an image without a detected face as 0; Face sim (detected) leaves such images out.",
    ]
    paths = {"md": out_dir / "results.md", "csv": out_dir / "results.csv", "json": out_dir / "results.json"}
    paths["md"].write_text("\n".join(lines + notes) + "\n", encoding="utf-8")
    fields = ["prompt_set", "method", "label", "n_images"]
    fields += [f for c in columns for f in (c, f"{c}_std") if any(f in r for r in rows)]
    with open(paths["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    paths["json"].write_text(json.dumps({"settings": settings, "rows": list(rows)}, indent=2, default=str) + "\n")
    return paths


def _label_cell(image: Image.Image, text: str, size: int) -> Image.Image:
    cell = Image.new("RGB", (size, size + 14), "white")
    cell.paste(image.convert("RGB").resize((size, size)), (0, 14))
    ImageDraw.Draw(cell).text((2, 1), text[: max(4, size // 6)], fill="black")
    return cell


def write_grids(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    references: dict[str, Sequence[Path]],
    id_scale: float,
    methods: Sequence[str],
    cell: int = 192,
) -> list[Path]:
    """One grid per identity and prompt set: a row per method (first seed), a column per prompt, the reference
    photo first. Returns the PNG paths (``grids/<identity>-<set>.png``)."""
    out_dir = Path(out_dir)
    grid_dir = out_dir / "grids"
    grid_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in records if math.isclose(r["id_scale"], id_scale) or r["method"] == "base-model"]
    written = []
    for identity in dict.fromkeys(r["identity"] for r in main):
        for prompt_set in dict.fromkeys(r["prompt_set"] for r in main if r["identity"] == identity):
            chosen = [r for r in main if r["identity"] == identity and r["prompt_set"] == prompt_set]
            seed = min(r["seed"] for r in chosen)
            prompts = sorted({r["prompt_index"] for r in chosen})
            rows = [m for m in methods if any(r["method"] == m for r in chosen)]
            grid = Image.new("RGB", ((len(prompts) + 1) * cell, len(rows) * (cell + 14)), "white")
            ref = Image.open(references[identity][0]) if references.get(identity) else Image.new("RGB", (cell, cell))
            for y, method in enumerate(rows):
                grid.paste(_label_cell(ref, method, cell), (0, y * (cell + 14)))
                for x, index in enumerate(prompts):
                    match = [
                        r for r in chosen if r["method"] == method and r["prompt_index"] == index and r["seed"] == seed
                    ]
                    if not match:
                        continue
                    path = out_dir / match[0]["image"]
                    if path.is_file():
                        with Image.open(path) as image:
                            tile = _label_cell(image, match[0]["prompt"], cell)
                        grid.paste(tile, ((x + 1) * cell, y * (cell + 14)))
            target = grid_dir / f"{identity}-{prompt_set}.png"
            grid.save(target)
            written.append(target)
    return written


def tradeoff_points(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Mean face similarity and CLIP-T per (method, ID scale): the data of the trade-off curve."""
    points = []
    for method in methods:
        scales = sorted({r["id_scale"] for r in records if r["method"] == method})
        for scale in scales:
            chosen = [r for r in records if r["method"] == method and math.isclose(r["id_scale"], scale)]
            row = _summary(chosen)
            if row.get("clip_t") is None or row.get("face_sim") is None:
                continue
            points.append({"method": method, "id_scale": scale, **row})
    return points


def plot_tradeoff(points: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """ID similarity (y) against CLIP-T (x), one line per method, each point labelled with its ID scale."""
    if not points:
        return None
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the trade-off plot needs matplotlib: pip install 'infinite-id[eval]'") from exc

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for method in dict.fromkeys(p["method"] for p in points):
        mine = sorted((p for p in points if p["method"] == method), key=lambda p: p["id_scale"])
        xs, ys = [p["clip_t"] for p in mine], [p["face_sim"] for p in mine]
        ax.plot(xs, ys, marker="o", label=METHODS[method].label if method in METHODS else method)
        for p in mine:
            ax.annotate(f"{p['id_scale']:g}", (p["clip_t"], p["face_sim"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("CLIP-T (image-prompt cosine)")
    ax.set_ylabel("Face similarity (missing face = 0)")
    ax.set_title("Identity vs prompt fidelity over the ID scale")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    records: Sequence[dict[str, Any]],
    out_dir: str | Path,
    settings: dict[str, Any],
    references: dict[str, Sequence[Path]],
    grids: bool = True,
) -> dict[str, Any]:
    """All outputs of an evaluation folder; returns what was written."""
    out_dir = Path(out_dir)
    methods = [m["name"] if isinstance(m, dict) else m for m in settings["methods"]]
    rows = aggregate(records, settings["id_scale"], methods)
    written: dict[str, Any] = {"tables": write_tables(rows, out_dir, settings), "rows": rows}
    if grids:
        written["grids"] = write_grids(records, out_dir, references, settings["id_scale"], methods)
    curve_methods = settings.get("curve_methods") or []
    points = tradeoff_points([r for r in records if r["method"] in curve_methods], curve_methods)
    if points:
        (out_dir / "tradeoff.json").write_text(json.dumps(points, indent=2) + "\n")
        written["tradeoff"] = plot_tradeoff(points, out_dir / "tradeoff.png")
    return written
