"""``infinite-id generate``: a reference photo + prompts -> PNGs of that person, with their settings inside."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import typer

from .. import controls
from . import app, fail
from .options import device_option, face_backend_option, face_model_dir_option, face_model_option

EPILOG = """\
\b
Examples:
  # offline, default (miniature) model
  infinite-id generate --ref examples/portraits/woman_1.png \\
      --prompt "a photo of a woman wearing a yellow sweater, on the beach"
  # two styles x three seeds, text stream saved beside each image
  infinite-id generate --ref me.jpg --prompt "a man" --style comic \\
      --style ghibli --seed 1-3 --also-text-stream
  # a real SDXL model with an Infinite-ID adapter
  infinite-id generate --ref me.jpg --prompts-file prompts.txt \\
      --model stabilityai/stable-diffusion-xl-base-1.0 \\
      --adapter infinite_id_adapter.safetensors \\
      --image-encoder path/to/clip-vit-h --device cuda
  # an IP-Adapter-FaceID-PlusV2 file you already have
  infinite-id generate --ref face.jpg --prompt "a woman in anime style" \\
      --model path/to/stable-diffusion-v1-5 \\
      --adapter ip-adapter-faceid-plusv2_sd15.bin \\
      --image-encoder path/to/models/image_encoder --face-model buffalo_l

Without --model the default model runs: the miniature model (64 px, trained from scratch on the miniature world,
offline, seconds on a CPU), with the face backend mini, which reads the world's portraits (examples/portraits/),
not real photos.
"""


def parse_seeds(text: str | None) -> list[int]:
    """``"7"``, ``"1,2,5"``, ``"0-3"`` (inclusive) or ``"random"``/``None`` (one random seed)."""
    if text is None or text.strip().lower() == "random":
        return [random.randrange(2**31)]
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                start, end = (int(x) for x in part.split("-", 1))
                if end < start or end - start >= 1000:
                    raise ValueError
                seeds.extend(range(start, end + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} is not a seed: use 7, 1,2,5, 0-3 or random", param_hint="--seed"
            ) from None
    if not seeds or any(s < 0 or s >= 2**63 for s in seeds):
        raise typer.BadParameter("seeds must be whole numbers from 0 to 2**63 - 1", param_hint="--seed")
    return seeds


def parse_size(text: str | None) -> tuple[int | None, int | None]:
    """``"1024"`` (square) or ``"WIDTHxHEIGHT"``; ``None``: the model's default."""
    if text is None:
        return None, None
    try:
        if "x" in text.lower():
            width, height = (int(x) for x in text.lower().split("x", 1))
        else:
            width = height = int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use 1024 or WIDTHxHEIGHT such as 832x1216", param_hint="--size") from None
    if not (8 <= width <= 4096 and 8 <= height <= 4096):
        raise typer.BadParameter(f"{text!r}: each side must be 8 to 4096 pixels", param_hint="--size")
    return width, height


def read_prompts(prompts: list[str], prompts_file: Path | None) -> list[str]:
    collected = [p.strip() for p in prompts]
    if any(not p for p in collected):
        raise typer.BadParameter("a prompt is empty", param_hint="--prompt")
    if prompts_file is not None:
        from ..outputs import check_input_file

        check_input_file(prompts_file, "--prompts-file")
        try:
            lines = prompts_file.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{prompts_file} is not UTF-8 text", param_hint="--prompts-file") from None
        from_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not from_file:
            raise typer.BadParameter(f"{prompts_file} holds no prompt", param_hint="--prompts-file")
        collected += from_file
    if not collected:
        raise typer.BadParameter("give --prompt TEXT (repeatable) or --prompts-file FILE", param_hint="--prompt")
    return collected


@app.command("generate", epilog=EPILOG)
def generate_command(
    ref: list[Path] = typer.Option(
        [], "--ref", "-r", help="Reference photo of the person (repeat for several photos of the same person)."
    ),
    embedding: Path | None = typer.Option(
        None,
        "--embedding",
        help="Precomputed face embedding (.npy/.safetensors) instead of running a face model; --ref then only "
        "feeds the CLIP branch (crop it to the face).",
    ),
    face_index: int | None = typer.Option(
        None, "--face-index", help="Which face when a photo has several (0 = largest; `infinite-id faces` lists them)."
    ),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="Prompt (repeatable)."),
    prompts_file: Path | None = typer.Option(None, "--prompts-file", help="Text file, one prompt per line."),
    negative_prompt: str | None = typer.Option(None, "--negative-prompt", "-n", help="Negative prompt."),
    style: list[str] = typer.Option(
        [],
        "--style",
        help="Style preset appended to each prompt (repeatable): none, comic, disney, oil-painting, ghibli, ukiyo-e, "
        "watercolor, anime.",
    ),
    seed: str | None = typer.Option(None, "--seed", "-s", help="Seed(s): 7, 1,2,5 or 0-3. Default: one random seed."),
    steps: int = typer.Option(
        controls.DEFAULT_STEPS, "--steps", help=f"Denoising steps (the paper: {controls.DEFAULT_STEPS})."
    ),
    guidance: float = typer.Option(
        controls.DEFAULT_GUIDANCE,
        "--guidance",
        help=f"Classifier-free guidance scale (the paper: {controls.DEFAULT_GUIDANCE:g}).",
    ),
    id_scale: float = typer.Option(
        controls.DEFAULT_ID_SCALE, "--id-scale", help="Weight of the identity (0 = base model)."
    ),
    adain: str = typer.Option(
        controls.DEFAULT_ADAIN,
        "--adain",
        help=f"AdaIN-mean: {', '.join(controls.ADAIN_CHOICES)} (auto: on when the prompt names a style; full: the "
        "ablation).",
    ),
    self_attention: str = typer.Option(
        controls.DEFAULT_SELF_ATTENTION,
        "--self-attention",
        help=f"{', '.join(controls.SELF_ATTENTION_CHOICES)} (the first is the paper's, the others ablations).",
    ),
    multi_image: str = typer.Option("concat", "--multi-image", help="Several --ref photos: concat (paper) or mean."),
    size: str | None = typer.Option(None, "--size", help="1024 or WIDTHxHEIGHT. Default: the model's."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Base model: diffusers folder or hub id (SDXL or SD 1.5). Default: see below."
    ),
    adapter: str | None = typer.Option(
        None, "--adapter", "-a", help="Infinite-ID adapter (.safetensors) or IP-Adapter face file (.bin/.safetensors)."
    ),
    image_encoder: str | None = typer.Option(
        None, "--image-encoder", help="CLIP vision model folder or hub id, if the base model folder has none."
    ),
    face_backend: str = face_backend_option(),
    face_model: str | None = face_model_option(),
    face_model_dir: str | None = face_model_dir_option(),
    device: str = device_option(),
    dtype: str = typer.Option("auto", "--dtype", help="auto (float16 on GPU), float32, float16, bfloat16."),
    out: Path = typer.Option(
        Path("outputs"), "--out", "-o", help="Output folder (created; files are never replaced)."
    ),
    also_text_stream: bool = typer.Option(
        False, "--also-text-stream", help="Also save the text stream's image (the prompt without the person)."
    ),
    fast: bool = typer.Option(
        False,
        "--fast",
        help="The fast preset: mixed attention over the first fifth of the steps, then one stream (about 1.3x the "
        "plain model's step instead of 2.2x; some loss of prompt fidelity, see docs/method.md).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate the person in REF as each prompt describes: one PNG per prompt, style and seed.

    Each PNG carries its prompt, seed and settings in its metadata (PNG text 'parameters' and 'infinite_id').
    """
    from rich.console import Console

    from ..errors import UserInputError
    from ..generation import STYLE_PRESETS, GenerationSettings
    from ..outputs import check_input_file, check_writable
    from ..sampling import FAST_PRESET, check_text_stream

    console = Console(stderr=True)
    # 1. Arguments, all checked before anything is loaded.
    if not ref and embedding is None:
        raise typer.BadParameter("give the person: --ref PHOTO (or --embedding FILE)", param_hint="--ref")
    for path in ref:
        check_input_file(path, "--ref")
    if embedding is not None:
        check_input_file(embedding, "--embedding")
    if embedding is not None and len(ref) > 1:
        raise typer.BadParameter("--embedding describes one photo: give at most one --ref", param_hint="--embedding")
    prompts = read_prompts(prompt, prompts_file)
    styles = [None if s.strip().lower() == "none" else s.strip().lower() for s in style] or [None]
    for s in styles:
        if s not in (None, *STYLE_PRESETS):
            raise typer.BadParameter(f"{s!r}: choose none, {', '.join(STYLE_PRESETS)}", param_hint="--style")
    seeds = parse_seeds(seed)
    width, height = parse_size(size)
    checks = (("--adain", controls.check_adain, adain), ("--self-attention", controls.check_self_attention,
                                                         self_attention))  # fmt: skip
    for hint, check, value in checks:
        try:
            check(value)
        except UserInputError as exc:
            raise typer.BadParameter(str(exc), param_hint=hint) from None
    if multi_image not in ("concat", "mean"):
        raise typer.BadParameter(f"{multi_image!r}: choose concat or mean", param_hint="--multi-image")
    backends = controls.face_backend_choices()
    if face_backend not in backends:
        raise typer.BadParameter(f"{face_backend!r}: choose {', '.join(backends)}", param_hint="--face-backend")
    if fast:
        try:
            check_text_stream(FAST_PRESET["text_stream"], also_text_stream)
        except UserInputError as exc:
            raise typer.BadParameter(str(exc), param_hint="--fast") from None
    check_writable(out, "--out")  # before the model loads: a generation is not thrown away at the end
    jobs = [
        GenerationSettings(
            prompt=p, negative_prompt=negative_prompt, style=s, seed=sd, steps=steps, guidance=guidance,
            id_scale=id_scale, adain=adain, self_attention=self_attention, height=height, width=width, fast=fast,
        )
        for p in prompts for s in styles for sd in seeds
    ]  # fmt: skip
    for job in jobs:
        try:
            job.check()
        except UserInputError as exc:
            raise typer.BadParameter(str(exc)) from None

    # 2. Model, face analyzer and the identity (once for all images).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..generation import open_generator, save_result

    with console.status("loading the model and the face analyzer"):
        generator = open_generator(
            model, adapter, image_encoder=image_encoder, face_backend=face_backend, face_model=face_model,
            face_model_dir=face_model_dir, embedding=str(embedding) if embedding else None, device=device,
            dtype=dtype,
        )  # fmt: skip
    if generator.model.warning:
        console.print(f"[bold yellow]WARNING:[/] {generator.model.warning}")
    console.print(f"model: {generator.model.description}; face encoder: {generator.analyzer.info.describe()}")
    for job in jobs:  # the limits that only the loaded model knows (its native size, its scheduler)
        try:
            generator.check(job)
        except UserInputError as exc:
            raise typer.BadParameter(str(exc)) from None
    for text in dict.fromkeys(job.full_prompt for job in jobs):
        note = generator.truncation_note(text)
        if note:
            console.print(f"[bold yellow]WARNING:[/] {note}")
    sources = list(ref)
    if not sources:  # an embedding alone: only families that read no CLIP can do without a photo
        if getattr(generator.pipe.identity_encoder, "clip_input", "hidden") != "none":
            raise fail("this model's identity encoder reads the face photo too: add --ref PHOTO (the face)")
        from PIL import Image

        sources = [Image.new("RGB", (224, 224), (128, 128, 128))]
    identity = generator.identity(sources, face_index, multi_image=multi_image)

    # 3. Images.
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    written: list[Path] = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet) as progress:
        task = progress.add_task("generating", total=len(jobs) * steps)
        for number, job in enumerate(jobs, 1):
            progress.update(task, description=f"image {number}/{len(jobs)} (seed {job.seed})")
            result = generator.generate(
                identity, job, text_stream=also_text_stream, on_step=lambda _: progress.advance(task)
            )
            written += save_result(result, out)
    for path in written:
        typer.echo(str(path))
