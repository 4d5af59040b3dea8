"""``infinite-id serve``: the web UI (Gradio) on this machine."""

from __future__ import annotations

import typer

from . import app
from .options import device_option, face_backend_option, face_model_dir_option, face_model_option


@app.command("serve")
def serve_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 exposes it to your network)."),
    port: int = typer.Option(7860, "--port", help="Port (0: pick a free one)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model folder or hub id. Default: see `info`."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Infinite-ID adapter or IP-Adapter face file."),
    image_encoder: str | None = typer.Option(None, "--image-encoder", help="CLIP vision model folder or hub id."),
    face_backend: str = face_backend_option(),
    face_model: str | None = face_model_option(),
    face_model_dir: str | None = face_model_dir_option(),
    device: str = device_option(),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, float16, bfloat16."),
    concurrency: int = typer.Option(1, "--concurrency", help="Generations run at the same time (one per GPU)."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests waiting at most; more are refused politely."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest photo accepted, in MB."),
    max_steps: int = typer.Option(50, "--max-steps", help="Most denoising steps a visitor may ask for."),
) -> None:
    """Start the web UI: upload photos, pick the face, write a prompt, see text and identity streams side by side."""
    from ..generation import open_generator
    from ..webui import ServeLimits, build_app, launch

    if not 1 <= concurrency <= 64:
        raise typer.BadParameter("use 1 to 64", param_hint="--concurrency")
    if not 0 <= max_queue <= 10_000:
        raise typer.BadParameter("use 0 to 10000", param_hint="--max-queue")
    if not 0 < max_upload_mb <= 200:
        raise typer.BadParameter("use a size above 0 and at most 200 MB", param_hint="--max-upload-mb")
    if not 1 <= max_steps <= 1000:
        raise typer.BadParameter("use 1 to 1000", param_hint="--max-steps")
    if not 0 <= port <= 65535:
        raise typer.BadParameter("use 0 to 65535", param_hint="--port")
    _check_address(host, port)  # before the model loads: a busy port is not found a minute later
    generator = open_generator(
        model, adapter, image_encoder=image_encoder, face_backend=face_backend, face_model=face_model,
        face_model_dir=face_model_dir, device=device, dtype=dtype,
    )  # fmt: skip
    if max_steps > generator.limits.max_steps:
        raise typer.BadParameter(
            f"this model's scheduler takes at most {generator.limits.max_steps} steps", param_hint="--max-steps"
        )
    if generator.model.warning:
        typer.secho(f"WARNING: {generator.model.warning}", fg=typer.colors.YELLOW, err=True)
    limits = ServeLimits(
        concurrency=concurrency, max_queue=max_queue, max_upload_bytes=int(max_upload_mb * 1e6), max_steps=max_steps
    )
    demo = build_app(generator, limits)
    launch(demo, limits, host=host, port=port, block=True)


def _check_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on (unknown host, port taken or privileged)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise typer.BadParameter(f"{host!r} is not an address of this machine", param_hint="--host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port (0: any free one)",
                param_hint="--port",
            ) from None
