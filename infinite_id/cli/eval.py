"""``infinite-id eval``: the paper's metrics for any model the pipeline loads, over methods, identities, prompts and
seeds; resumable; tables, grids and the ID-similarity vs CLIP-T curve. See docs/evaluation.md."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import typer

from ..controls import DEFAULT_GUIDANCE, DEFAULT_ID_SCALE, DEFAULT_STEPS
from . import app

FACE_ALIASES = {"arcface": "insightface", "insightface": "insightface", "dlib": "dlib"}


def _csv(text: str, cast=str) -> list:
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def load_factory(spec: str) -> Any:
    """``python:package.module:callable`` -> the object the callable returns (how the miniature world, or any
    custom model, plugs in its own CLIP scorer or face encoder)."""
    target = spec.removeprefix("python:")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise typer.BadParameter(f"{spec!r}: use python:package.module:callable")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"{spec!r}: {exc}") from None
    return factory() if callable(factory) else factory


def resolve_device(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
        raise typer.BadParameter(f"unknown dtype {dtype!r}", param_hint="--dtype")
    return device, getattr(torch, dtype)


def _available_face_backends() -> list[str]:
    from ..faces import get_face_analyzer
    from ..faces.errors import BackendUnavailableError

    found = []
    for name in ("insightface", "dlib"):
        try:
            get_face_analyzer(name)
        except (BackendUnavailableError, ImportError, OSError):
            continue
        found.append(name)
    return found


def _face_metric(spec: str, training_backend: str | None):
    from ..evaluation import FaceSimilarity, choose_face_backend
    from ..faces import get_face_analyzer

    if spec == "none":
        return None
    if spec.startswith("python:"):
        return FaceSimilarity(load_factory(spec))
    if spec == "auto":
        backend = choose_face_backend(training_backend, _available_face_backends())
        if backend == training_backend:
            logging.getLogger(__name__).warning(
                "only the adapter's own face encoder (%s) is installed: face similarity is not independent", backend
            )
    elif spec in FACE_ALIASES:
        backend = FACE_ALIASES[spec]
    else:
        raise typer.BadParameter(f"{spec!r}: use auto, arcface, dlib, none or python:module:factory")
    return FaceSimilarity(get_face_analyzer(backend))


@app.command("eval")
def eval_command(
    model: str = typer.Option(..., "--model", help="Base model: diffusers folder (SDXL or SD 1.5) or hub id."),
    adapter: str = typer.Option(..., "--adapter", help="Infinite-ID adapter (.safetensors, folder or hub id)."),
    identities: Path = typer.Option(
        ...,
        "--identities",
        help="Folder: one photo per person, or one sub-folder of photos per person; a person's others/ sub-folder "
        "holds other photos of them, scored for the copy-paste gap but never conditioned on.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Results folder; rerun with it to resume."),
    prompts: list[str] = typer.Option(
        ["paper"], "--prompts", help="raw, style, paper (both) or a .txt/.json file; repeatable."
    ),
    methods: str = typer.Option(
        "infinite-id,no-mixed-attention,mutual-attention,no-adain,full-adain,identity-only,base-model",
        help="Comma-separated method presets (docs/evaluation.md).",
    ),
    seeds: int = typer.Option(4, help="Seeds 0..N-1 per identity and prompt."),
    id_scale: float = typer.Option(DEFAULT_ID_SCALE, help="ID scale of the main table."),
    curve_scales: str = typer.Option("0,0.25,0.5,0.75,1.0", help="ID scales of the trade-off curve ('' for none)."),
    curve_methods: str = typer.Option("infinite-id,no-mixed-attention", help="Methods drawn on the curve."),
    steps: int = typer.Option(DEFAULT_STEPS, help="Denoising steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, help="Classifier-free guidance scale."),
    height: int = typer.Option(None, help="Image height (default: the model's)."),
    width: int = typer.Option(None, help="Image width (default: the model's)."),
    negative_prompt: str = typer.Option(None, help="Negative prompt for every image."),
    class_word: str = typer.Option("person", help="Fills {class_word} for identities not in identities.json."),
    clip_model: str = typer.Option(
        "openai/clip-vit-large-patch14",
        help="CLIP for CLIP-T/CLIP-I: transformers folder or hub id, python:module:factory, or none.",
    ),
    dino_model: str = typer.Option(None, help="DINO model (e.g. facebook/dinov2-base) for DINO similarity."),
    face_encoder: str = typer.Option(
        "auto",
        help="Face-similarity encoder: auto (not the adapter's), arcface, dlib, none, python:module:factory.",
    ),
    adapter_face_encoder: str = typer.Option(
        "auto", help="Face encoder feeding the adapter: auto (the one in its metadata) or python:module:factory."
    ),
    image_encoder: str = typer.Option(None, help="CLIP vision model for the adapter, if the base model has none."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, mps ..."),
    dtype: str = typer.Option("auto", help="auto (float16 on GPU), float32, float16, bfloat16."),
    grids: bool = typer.Option(True, help="Write image grids."),
    report_only: bool = typer.Option(False, help="Only rebuild tables, grids and plot from existing records."),
) -> None:
    """Evaluate Infinite-ID and its ablations: CLIP-T, CLIP-I, face similarity, DINO, detection rate, and the
    copy-paste gap where identities have other photos."""
    import json

    from ..evaluation import (
        ClipScorer,
        DinoScorer,
        EvalSettings,
        EvaluationRunner,
        load_identities,
        read_records,
        resolve_methods,
        resolve_prompt_sets,
        write_report,
    )

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    people = load_identities(identities, class_word)
    if not report_only:
        from ..evaluation.runner import check_eval_output

        check_eval_output(output, [identities])  # before any model loads
    references = {i.name: i.images for i in people}
    if report_only:
        settings_path = output / "settings.json"
        if not settings_path.is_file():
            raise typer.BadParameter(f"{output} holds no evaluation", param_hint="--output")
        settings = json.loads(settings_path.read_text())
        written = write_report(read_records(output / "records.jsonl"), output, settings, references, grids=grids)
        typer.echo(f"tables: {', '.join(str(p) for p in written['tables'].values())}")
        return

    if seeds < 1:
        raise typer.BadParameter("use 1 or more", param_hint="--seeds")
    try:
        chosen = resolve_methods(_csv(methods))
        prompt_sets = resolve_prompt_sets(prompts)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    dev, torch_dtype = resolve_device(device, dtype)

    from ..errors import UserInputError, model_loading
    from ..faces import analyzer_for
    from ..generation import model_limits
    from ..pipelines import InfiniteIDPipeline

    with model_loading(f"the base model {model}"):
        pipe = InfiniteIDPipeline.from_pretrained(model, torch_dtype=torch_dtype)
    with model_loading(f"the adapter {adapter}"):
        metadata = pipe.load_adapter(adapter, image_encoder=image_encoder)
    try:  # the ranges only the loaded model knows, before any image
        model_limits(pipe).check(steps, height, width)
    except UserInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    if adapter_face_encoder == "auto":
        pipe.set_face_analyzer(analyzer_for(metadata.face_encoder))
    else:
        pipe.set_face_analyzer(load_factory(adapter_face_encoder))

    clip = None
    if clip_model.startswith("python:"):
        clip = load_factory(clip_model)
    elif clip_model != "none":
        with model_loading(f"the CLIP model {clip_model}"):
            clip = ClipScorer.from_pretrained(clip_model, device=dev)
    dino = None
    if dino_model:
        with model_loading(f"the DINO model {dino_model}"):
            dino = DinoScorer.from_pretrained(dino_model, device=dev)
    face = _face_metric(face_encoder, metadata.face_encoder.backend)

    curve = [m for m in _csv(curve_methods) if m in {c.name for c in chosen}]
    settings = EvalSettings(
        model=str(model),
        adapter=str(adapter),
        methods=[m.name for m in chosen],
        seeds=list(range(seeds)),
        id_scale=id_scale,
        curve_scales=_csv(curve_scales, float),
        curve_methods=curve if _csv(curve_scales) else [],
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=height,
        width=width,
        negative_prompt=negative_prompt,
        clip_model=None if clip is None else clip.describe(),
        dino_model=dino_model,
        face_encoder=None if face is None else face.describe(),
        training_face_encoder=metadata.face_encoder.describe(),
        device=str(dev),
        dtype=str(torch_dtype).removeprefix("torch."),
    )

    from rich.progress import Progress

    with Progress() as bar:
        task = bar.add_task("evaluating", total=None)
        runner = EvaluationRunner(
            pipe,
            output,
            settings,
            chosen,
            people,
            prompt_sets,
            clip=clip,
            face=face,
            dino=dino,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        records = runner.run()
    saved = json.loads((output / "settings.json").read_text())
    written = write_report(records, output, saved, references, grids=grids)
    typer.echo((output / "results.md").read_text())
    typer.echo(f"written: {', '.join(str(p) for p in written['tables'].values())}")
    if written.get("tradeoff"):
        typer.echo(f"trade-off curve: {written['tradeoff']}")
