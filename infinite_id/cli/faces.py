"""``infinite-id faces IMAGE...``: list the faces found in each photo, so users can pick ``face_index``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from . import app


def _analyze(analyzer: Any, path: Path) -> dict[str, Any]:
    from ..faces import FaceError, load_image

    record: dict[str, Any] = {"image": str(path), "width": None, "height": None, "faces": [], "error": None}
    try:
        image = load_image(path, max_side=analyzer.max_side)
        faces = analyzer.detect(image)
    except (FaceError, FileNotFoundError) as exc:
        record["error"] = str(exc)
        return record
    record["width"], record["height"] = image.size
    for index, face in enumerate(faces):
        entry = {"index": index, **face.to_dict(), "usable": face.short_side >= analyzer.min_face_size}
        record["faces"].append(entry)
    return record


def _print_table(record: dict[str, Any], min_face_size: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if record["error"]:
        console.print(f"[bold red]{record['image']}[/]: {record['error']}")
        return
    count = len(record["faces"])
    title = f"{record['image']} ({record['width']}x{record['height']}): {count} face{'s' if count != 1 else ''}"
    if not count:
        console.print(f"[yellow]{title}[/]")
        return
    table = Table(title=title, title_justify="left")
    for column in ("face_index", "box (x1, y1, x2, y2)", "size", "score", "note"):
        table.add_column(column)
    for face in record["faces"]:
        x1, y1, x2, y2 = face["box"]
        note = "" if face["usable"] else f"too small to embed (< {min_face_size:.0f} px)"
        table.add_row(
            str(face["index"]),
            f"{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}",
            f"{face['width']:.0f}x{face['height']:.0f}",
            f"{face['score']:.3f}",
            note,
        )
    console.print(table)


@app.command("faces")
def faces_command(
    images: list[Path] = typer.Argument(..., help="One or more photos."),
    backend: str = typer.Option(
        "auto", "--backend", "-b", help="auto, insightface, dlib or mini (miniature-world renders)."
    ),
    model: str | None = typer.Option(None, "--model", help="insightface model pack (antelopev2, buffalo_l, ...)."),
    model_dir: Path | None = typer.Option(None, "--model-dir", help="Folder with the backend's model files."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """List the faces in each photo (largest first: face_index 0 is the default choice), with box, size and score."""
    from ..faces import BackendUnavailableError, get_face_analyzer

    options: dict[str, Any] = {}
    if model is not None:
        options["model"] = model
    if model_dir is not None:
        options["model_dir"] = model_dir
    try:
        analyzer = get_face_analyzer(backend, **options)
    except (BackendUnavailableError, ValueError, TypeError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    records = [_analyze(analyzer, path) for path in images]
    if as_json:
        typer.echo(json.dumps({"backend": analyzer.info.to_dict(), "images": records}, indent=2))
    else:
        typer.echo(f"Face backend: {analyzer.info.describe()}")
        for record in records:
            _print_table(record, analyzer.min_face_size)
    if any(record["error"] for record in records):
        raise typer.Exit(code=1)
