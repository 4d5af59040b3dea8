"""Turn evaluation records into tables (Markdown, CSV, JSON), image grids, the ID-similarity vs CLIP-T curve and the
paper's claims checked (:mod:`.claims`).

One convention for error bars everywhere (here and in the miniature world's reproduction): a mean is shown with
its standard error over images (``± sem``), and the table header says so. The JSON and CSV carry ``<metric>_sem``
and, for the evaluation tables, ``<metric>_std`` (the population standard deviation, kept for older readers).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from ..outputs import atomic_write
from .claims import ALL_PROMPTS, check_claims, claims_for_methods, claims_markdown, metric_value, rows_by_method
from .methods import METHODS
from .metrics import OTHER_PHOTOS_DIR, summarize

__all__ = [
    "ERROR_BARS",
    "aggregate",
    "copy_paste_note",
    "evaluation_claims",
    "format_cell",
    "labelled_rows_grid",
    "markdown_table",
    "plot_tradeoff",
    "summarize_records",
    "tradeoff_points",
    "write_csv",
    "write_grids",
    "write_report",
    "write_tables",
]

#: What every table's ``±`` means; the header of each column with error bars repeats it (``CLIP-T ± sem``).
ERROR_BARS = "mean ± standard error of the mean (sem) over images"
#: The metrics :func:`summarize_records` averages besides the face columns.
MEAN_METRICS = ("clip_t", "clip_i", "dino")
#: The copy-paste measure's columns: present only where an identity has other photos (``<identity>/others/``).
COPY_PASTE_METRICS = ("face_sim_other", "copy_paste_gap")
METRIC_COLUMNS = (
    "clip_t",
    "clip_i",
    "face_sim",
    "face_sim_detected",
    "face_detection_rate",
    *COPY_PASTE_METRICS,
    "dino",
)
COLUMN_TITLES = {
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "face_sim": "Face sim",
    "face_sim_detected": "Face sim (detected)",
    "face_detection_rate": "Face det. rate",
    "face_sim_other": "Face sim (other photo)",
    "copy_paste_gap": "Copy-paste gap",
    "dino": "DINO",
}


def summarize_records(records: Sequence[dict[str, Any]], metrics: Sequence[str] = MEAN_METRICS) -> dict[str, Any]:
    """One table row: ``n_images``; per metric present, its mean, ``_sem`` and ``_std``; and the face columns:
    ``face_sim`` (no face counts as 0) with its ``_sem``/``_std``, ``face_sim_detected`` and
    ``face_detection_rate``; and where images of identities with other photos are among the records, the
    copy-paste columns ``face_sim_other`` and ``copy_paste_gap`` (no face counts as 0) over those images."""
    row: dict[str, Any] = {"n_images": len(records)}
    for metric in metrics:
        stats = summarize([r.get(metric) for r in records])
        if stats["n"]:
            row[metric], row[f"{metric}_sem"], row[f"{metric}_std"] = stats["mean"], stats["sem"], stats["std"]
    faces = [r for r in records if "face_detected" in r]
    if faces:
        with_zero = summarize([metric_value(r, "face_sim") for r in faces])
        row.update({"face_sim": with_zero["mean"], "face_sim_sem": with_zero["sem"], "face_sim_std": with_zero["std"]})
        row["face_sim_detected"] = summarize([r["face_sim"] for r in faces if r["face_detected"]])["mean"]
        row["face_detection_rate"] = sum(bool(r["face_detected"]) for r in faces) / len(faces)
    for metric in COPY_PASTE_METRICS:
        stats = summarize([metric_value(r, metric) for r in faces if metric in r])
        if stats["n"]:
            row[metric], row[f"{metric}_sem"], row[f"{metric}_std"] = stats["mean"], stats["sem"], stats["std"]
    return row


def copy_paste_note(rows: Sequence[dict[str, Any]], with_others: int | None = None, of: int | None = None) -> str:
    """The one line under a table on the copy-paste gap: what it is, or why its columns are absent.
    ``with_others`` / ``of``: how many of the evaluated identities have other photos, when known."""
    if not any(r.get("copy_paste_gap") is not None for r in rows):
        if with_others:
            return "Copy-paste gap: not measured, there is no face encoder (--face-encoder none)."
        return (
            "Copy-paste gap: not measured, no identity has other photos (put them in the identity's "
            f"{OTHER_PHOTOS_DIR}/ sub-folder, docs/evaluation.md)."
        )
    count = f" ({with_others} of {of} identities)" if with_others is not None and of is not None else ""
    return (
        "Copy-paste gap = Face sim - Face sim (other photo): similarity to the reference photo the method "
        f"conditions on minus the mean similarity to other photos of the same person{count}, over those "
        "identities' images, a missed face counting 0 in both; near 0 the person is generated, large the "
        "reference photo is copied."
    )


def aggregate(records: Sequence[dict[str, Any]], id_scale: float, methods: Sequence[str]) -> list[dict[str, Any]]:
    """One row per (prompt set, method) at the main ID scale, plus an ``all`` prompt-set row per method."""
    main = _main_scale(records, id_scale)
    sets = list(dict.fromkeys(r["prompt_set"] for r in main))
    rows = []
    for prompt_set in [*sets, ALL_PROMPTS] if len(sets) > 1 else sets:
        for method in methods:
            chosen = [r for r in main if r["method"] == method and prompt_set in (ALL_PROMPTS, r["prompt_set"])]
            if not chosen:
                continue
            label = METHODS[method].label if method in METHODS else method
            rows.append({"prompt_set": prompt_set, "method": method, "label": label, **summarize_records(chosen)})
    return rows


def _main_scale(records: Sequence[dict[str, Any]], id_scale: float) -> list[dict[str, Any]]:
    """The records of the main table: at the main ID scale (the text stream has none)."""
    return [r for r in records if math.isclose(r["id_scale"], id_scale) or r["method"] == "base-model"]


def evaluation_claims(records: Sequence[dict[str, Any]], id_scale: float, methods: Sequence[str]) -> list[dict]:
    """The paper's claims this evaluation can answer (both methods evaluated, and pairs of images to compare),
    checked at the main ID scale; ``[]`` when none."""
    results = check_claims(claims_for_methods(methods), rows_by_method(_main_scale(records, id_scale)))
    return [c for c in results if c["n"]]


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [c for c in METRIC_COLUMNS if any(c in r for r in rows)]


def format_cell(row: dict[str, Any], key: str, error: bool = True) -> str:
    """``0.340 ± 0.004`` (the mean and its ``_sem`` when ``error`` and known), ``0.340``, or ``-`` when absent."""
    value = row.get(key)
    if value is None:
        return "-"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.3f}"
    if error and row.get(f"{key}_sem") is not None:
        text += f" ± {row[f'{key}_sem']:.3f}"
    return text


def _lead_cell(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown_table(
    rows: Sequence[dict[str, Any]],
    lead: Sequence[tuple[str, str]],
    columns: Sequence[tuple[str, str]],
    errors: Collection[str] = (),
) -> list[str]:
    """A Markdown table: ``lead`` columns as they are, then the ``columns`` any row has, to 3 decimals; those in
    ``errors`` with ``± sem``, which their header says (``CLIP-T ± sem``)."""
    shown = [(k, t) for k, t in columns if any(r.get(k) is not None for r in rows)]
    titles = [t for _, t in lead] + [f"{t} ± sem" if k in errors else t for k, t in shown]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        cells = [_lead_cell(row.get(k)) for k, _ in lead] + [format_cell(row, k, k in errors) for k, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> Path:
    """``rows`` as CSV with ``fields`` as columns (missing or ``None``: empty), written atomically."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return atomic_write(path, buffer.getvalue())


#: The evaluation table's columns with error bars.
ERROR_COLUMNS = ("clip_t", "clip_i", "face_sim", *COPY_PASTE_METRICS, "dino")


def write_tables(
    rows: Sequence[dict[str, Any]],
    out_dir: str | Path,
    settings: dict[str, Any],
    claims: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """``results.md``, ``results.csv`` and ``results.json`` (the JSON carries the settings, and ``claims`` when
    any were checked)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = _columns(rows)
    lines = markdown_table(
        rows,
        (("prompt_set", "prompts"), ("label", "method"), ("n_images", "images")),
        [(c, COLUMN_TITLES[c]) for c in columns],
        ERROR_COLUMNS,
    )
    notes = [
        "",
        f"ID scale {settings.get('id_scale')}, seeds {settings.get('seeds')}, "
        f"{settings.get('num_inference_steps')} steps, guidance {settings.get('guidance_scale')}.",
        f"CLIP: {settings.get('clip_model')}; face encoder: {settings.get('face_encoder')} "
        f"(adapter trained with {settings.get('training_face_encoder')}); DINO: {settings.get('dino_model')}.",
        f"All similarities are raw cosines, {ERROR_BARS}. "
        "Face sim counts an image without a detected face as 0; Face sim (detected) leaves such images out.",
        copy_paste_note(rows, *_identities_with_others(settings)),
    ]
    if claims:
        notes += ["", "## The paper's claims, checked", "", *claims_markdown(claims, measured="this run")]
    paths = {"md": out_dir / "results.md", "csv": out_dir / "results.csv", "json": out_dir / "results.json"}
    atomic_write(paths["md"], "\n".join(lines + notes) + "\n")
    fields = ["prompt_set", "method", "label", "n_images"]
    fields += [f for c in columns for f in (c, f"{c}_std", f"{c}_sem") if any(f in r for r in rows)]
    write_csv(paths["csv"], rows, fields)
    data: dict[str, Any] = {"settings": settings, "rows": list(rows)}
    if claims:
        data["claims"] = list(claims)
    atomic_write(paths["json"], json.dumps(data, indent=2, default=str) + "\n")
    return paths


def _identities_with_others(settings: dict[str, Any]) -> tuple[int | None, int | None]:
    """How many of the settings' identities have other photos, and of how many (``None`` when not recorded)."""
    identities = settings.get("identities")
    if not isinstance(identities, dict):
        return None, None
    return sum(bool(v.get("other_photos")) for v in identities.values() if isinstance(v, dict)), len(identities)


def _label_cell(image: Image.Image, text: str, size: int) -> Image.Image:
    cell = Image.new("RGB", (size, size + 14), "white")
    cell.paste(image.convert("RGB").resize((size, size)), (0, 14))
    ImageDraw.Draw(cell).text((2, 1), text[: max(4, size // 6)], fill="black")
    return cell


def labelled_rows_grid(
    rows: Sequence[tuple[str, Sequence[Path | None]]], cell: int = 80, label_width: int = 290
) -> Image.Image:
    """A grid with one row per ``(label, image files)``: the label on the left, then each image resized to
    ``cell`` pixels; a missing file (or ``None``) leaves its cell blank, so the columns stay aligned."""
    width = max((len(files) for _, files in rows), default=0)
    grid = Image.new("RGB", (label_width + cell * width, cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for y, (label, files) in enumerate(rows):
        draw.text((4, y * cell + cell // 2 - 6), label[: max(4, label_width // 6)], fill="black")
        for x, path in enumerate(files):
            if path is not None and Path(path).is_file():
                with Image.open(path) as image:
                    grid.paste(image.convert("RGB").resize((cell, cell)), (label_width + x * cell, y * cell))
    return grid


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
    main = _main_scale(records, id_scale)
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
            atomic_write(target, lambda tmp, grid=grid: grid.save(tmp, format="PNG"))
            written.append(target)
    return written


def tradeoff_points(records: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Mean face similarity and CLIP-T per (method, ID scale): the data of the trade-off curve."""
    points = []
    for method in methods:
        scales = sorted({r["id_scale"] for r in records if r["method"] == method})
        for scale in scales:
            chosen = [r for r in records if r["method"] == method and math.isclose(r["id_scale"], scale)]
            row = summarize_records(chosen)
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
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
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
    claims = evaluation_claims(records, settings["id_scale"], methods)
    written: dict[str, Any] = {"tables": write_tables(rows, out_dir, settings, claims), "rows": rows, "claims": claims}
    if grids:
        written["grids"] = write_grids(records, out_dir, references, settings["id_scale"], methods)
    curve_methods = settings.get("curve_methods") or []
    points = tradeoff_points([r for r in records if r["method"] in curve_methods], curve_methods)
    if points:
        atomic_write(out_dir / "tradeoff.json", json.dumps(points, indent=2) + "\n")
        written["tradeoff"] = plot_tradeoff(points, out_dir / "tradeoff.png")
    return written
