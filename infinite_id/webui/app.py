"""The Gradio app: upload photos, see the faces found and pick one, write a prompt, get the text stream and the
identity stream side by side.

Safety: every upload is checked (count, bytes, decodable image, pixel count) before a face model sees it; photos
live in the session's memory, never at a path the browser can name; the server serves no folder of ours
(``allowed_paths`` stays empty), only Gradio's own cache of uploads and results; a bounded queue refuses what it
cannot hold, and the model runs one request at a time per process.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserInputError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local server

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from ..controls import ADAIN_CHOICES, DEFAULT_ADAIN, DEFAULT_ID_SCALE, DEFAULT_STEPS  # noqa: E402
from ..generation import STYLE_PRESETS, USER_ERRORS, GenerationSettings, Generator  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["ServeLimits", "UploadGuard", "WebSession", "build_app", "launch"]

ACCEPTED_TYPES = [".jpg", ".jpeg", ".png", ".webp", ".bmp"]
FACE_THUMB = 128
#: A face thumbnail shows the detector's box grown by this fraction on every side (hair, chin and ears included).
FACE_THUMB_MARGIN = 0.35


def face_thumbnail(image: Image.Image, box: tuple[float, float, float, float], size: int) -> Image.Image:
    """A square ``size`` px view of the face in ``box`` with a margin, as people expect to see a face (the
    recognition crop, tight and rotated, looks odd to them). Parts outside the photo are filled grey."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_THUMB_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    area = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    canvas = Image.new("RGB", (area[2] - area[0], area[3] - area[1]), (128, 128, 128))
    inside = (max(area[0], 0), max(area[1], 0), min(area[2], image.width), min(area[3], image.height))
    if inside[0] < inside[2] and inside[1] < inside[3]:
        canvas.paste(image.convert("RGB").crop(inside), (inside[0] - area[0], inside[1] - area[1]))
    return canvas.resize((size, size), Image.BICUBIC)


@dataclass
class ServeLimits:
    """What one server accepts (docs/webui.md, "Limits", says the same)."""

    concurrency: int = 1
    max_queue: int = 8
    max_upload_bytes: int = 10_000_000
    max_photos: int = 4
    max_steps: int = 50
    max_side: int = 1536
    #: Pixels and decoding memory one photo may take (checked from its header, before it is decoded): a 6000 x 4000
    #: camera photo fits, a 13000 x 13000 RGBA PNG of 657 kB (3 GiB to decode) does not.
    max_pixels: int = 40_000_000
    max_decoded_bytes: int = 256 * 2**20
    #: Uploads (all visitors together) accepted per minute outside the queue, before they are refused with 429.
    max_uploads_per_minute: int = 120
    #: Uploaded and generated files are deleted this long after they were written (and all at shutdown).
    keep_files_s: int = 600
    #: Upload bytes accepted while they may still be on disk (Gradio's cleaner runs every ``keep_files_s``, so a
    #: file lives up to twice that): the disk the uploads can take.
    max_kept_upload_bytes: int = 1_000_000_000

    @property
    def max_request_bytes(self) -> int:
        """The largest upload request: every photo at its limit, plus room for the multipart framing."""
        return self.max_photos * self.max_upload_bytes + 64 * 1024


@dataclass
class _Photos:
    """One visitor's uploaded photos, kept in memory: images, faces found, and the face chosen in each."""

    images: list[Image.Image] = field(default_factory=list)
    faces: list[list[Any]] = field(default_factory=list)
    choice: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


class WebSession:
    """The UI's behaviour as plain methods (the Gradio callbacks call these; tests can too)."""

    def __init__(self, generator: Generator, limits: ServeLimits | None = None) -> None:
        self.generator = generator
        self.limits = limits or ServeLimits()
        self._model_lock = threading.Lock()  # one pipeline call at a time: schedulers keep per-call state

    # ------------------------------------------------------------------ uploads
    def load_photos(self, paths: list[str] | None) -> _Photos:
        """Validate and decode uploads, detect their faces. Raises ``ValueError`` with a sentence for people."""
        from ..faces.image_io import load_image

        paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in (paths or [])]
        if not paths:
            raise UserInputError("Upload a photo of the person first.")
        if len(paths) > self.limits.max_photos:
            raise UserInputError(f"At most {self.limits.max_photos} photos, please ({len(paths)} uploaded).")
        photos = _Photos()
        for number, path in enumerate(paths, 1):
            name = f"photo {number}"
            try:
                size = os.path.getsize(path)
            except FileNotFoundError:  # the cleaner removed it: it waited longer than uploads are kept
                raise UserInputError(
                    f"{name} is no longer on the server (uploads are kept {self.limits.keep_files_s} s); upload it "
                    "again."
                ) from None
            if size > self.limits.max_upload_bytes:
                raise UserInputError(
                    f"{name} is {size / 1e6:.2g} MB; the limit is {self.limits.max_upload_bytes / 1e6:g} MB."
                )
            try:
                with open(path, "rb") as handle:  # decoded from bytes: the name and extension are not trusted
                    data = handle.read()
                image = load_image(
                    data, max_side=2048, max_pixels=self.limits.max_pixels, max_bytes=self.limits.max_decoded_bytes
                )
            except USER_ERRORS as exc:
                raise UserInputError(f"{name} is not a usable photo ({_strip_paths(str(exc), path)}).") from None
            faces = self.generator.find_faces(image)
            photos.images.append(image)
            photos.faces.append(faces)
            photos.choice.append(0)
            photos.names.append(name)
        return photos

    def face_gallery(self, photos: _Photos) -> list[tuple[Image.Image, str]]:
        items = []
        for p, (image, faces) in enumerate(zip(photos.images, photos.faces, strict=True)):
            for f, face in enumerate(faces):
                crop = face_thumbnail(self.generator.analyzer.load(image), face.box, FACE_THUMB)
                mark = " (used)" if photos.choice[p] == f else ""
                items.append((crop, f"{photos.names[p]} · face {f}{mark}"))
        return items

    def summary(self, photos: _Photos) -> str:
        lines = []
        for p, faces in enumerate(photos.faces):
            if not faces:
                lines.append(f"- {photos.names[p]}: **no face found**, use another photo")
            elif len(faces) == 1:
                lines.append(f"- {photos.names[p]}: one face")
            else:
                lines.append(
                    f"- {photos.names[p]}: {len(faces)} faces, using face {photos.choice[p]} "
                    "(click another face above to use it)"
                )
        return "\n".join(lines)

    def select_face(self, photos: _Photos, gallery_index: int) -> _Photos:
        """A click on face ``gallery_index`` of the faces gallery makes it the face used for its photo."""
        flat = [(p, f) for p, faces in enumerate(photos.faces) for f in range(len(faces))]
        if 0 <= gallery_index < len(flat):
            p, f = flat[gallery_index]
            photos.choice[p] = f
        return photos

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        photos: _Photos | None,
        prompt: str,
        negative_prompt: str,
        style: str,
        id_scale: float,
        adain: str,
        steps: int,
        seed: int | None,
    ) -> tuple[list[tuple[Image.Image, str]], str]:
        """Both streams for one prompt: ``([(text image, caption), (identity image, caption)], info)``."""
        if photos is None or not photos.images:
            raise UserInputError("Upload a photo of the person first.")
        missing = [photos.names[p] for p, faces in enumerate(photos.faces) if not faces]
        if missing:
            raise UserInputError(f"No face in {', '.join(missing)}: remove it or use another photo.")
        steps = int(steps)
        if not 1 <= steps <= self.limits.max_steps:
            raise UserInputError(f"Steps must be 1 to {self.limits.max_steps}.")
        seed = random.randrange(2**31) if seed is None or int(seed) < 0 else int(seed)
        settings = GenerationSettings(
            prompt=(prompt or "").strip(),
            negative_prompt=(negative_prompt or "").strip() or None,
            style=None if style in (None, "", "none") else style,
            seed=seed,
            steps=steps,
            id_scale=float(id_scale),
            adain=adain,
        )
        settings.check()
        with self._model_lock:
            identity = self.generator.identity(photos.images, photos.choice)
            result = self.generator.generate(identity, settings, text_stream=True)
        gallery = [(result.text_image, "text stream (the prompt alone)"), (result.image, "identity stream")]
        info = f"seed {seed} · {settings.steps} steps · {settings.full_prompt!r} · {self.generator.model.description}"
        note = self.generator.truncation_note(settings.full_prompt)
        if note:
            info += f"\n\n**Note:** {note}"
        return gallery, info


def _strip_paths(message: str, path: str) -> str:
    """Error messages name the upload, never the server's temporary path."""
    return message.replace(str(path), "the upload")


def _user_error(exc: BaseException) -> gr.Error:
    return gr.Error(str(exc), print_exception=False)


def build_app(generator: Generator, limits: ServeLimits | None = None) -> gr.Blocks:
    """The Gradio Blocks app for ``generator`` (not launched)."""
    limits = limits or ServeLimits()
    session = WebSession(generator, limits)
    warning = generator.model.warning

    keep = limits.keep_files_s
    with gr.Blocks(title="Infinite-ID", analytics_enabled=False, delete_cache=(keep, keep)) as demo:
        gr.Markdown(
            "# Infinite-ID\nUpload a photo of a person, write a prompt, and get that person in the scene or style "
            "you describe. Left: the **text stream** (the prompt alone); right: the **identity stream** (the result)."
        )
        if warning:
            escaped = warning.replace("<", "&lt;").replace(">", "&gt;")
            gr.Markdown(f"> **Note:** {escaped}", elem_id="model-warning")
        photos_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                uploads = gr.File(
                    label=f"Reference photos (1-{limits.max_photos}, up to {limits.max_upload_bytes / 1e6:g} MB each)",
                    file_count="multiple",
                    file_types=ACCEPTED_TYPES,
                    type="filepath",
                    elem_id="uploads",
                )
                faces = gr.Gallery(
                    label="Faces found (click one to use it)",
                    columns=4,
                    height=170,
                    object_fit="contain",
                    allow_preview=False,
                    elem_id="faces",
                )
                faces_info = gr.Markdown(elem_id="faces-info")
                prompt = gr.Textbox(
                    label="Prompt",
                    value="a photo of a woman wearing a yellow sweater, on the beach",
                    lines=2,
                    elem_id="prompt",
                )
                style = gr.Dropdown(["none", *STYLE_PRESETS], value="none", label="Style preset", elem_id="style")
                with gr.Accordion("Settings", open=False):
                    negative = gr.Textbox(label="Negative prompt", value="", elem_id="negative")
                    id_scale = gr.Slider(
                        0.0, 2.0, value=DEFAULT_ID_SCALE, step=0.05, label="ID scale", elem_id="id-scale"
                    )
                    adain = gr.Radio(
                        list(ADAIN_CHOICES),
                        value=DEFAULT_ADAIN,
                        label="AdaIN-mean (auto: on for style prompts; full: the ablation)",
                    )
                    steps = gr.Slider(
                        1,
                        limits.max_steps,
                        value=min(DEFAULT_STEPS, limits.max_steps),
                        step=1,
                        label="Steps",
                        elem_id="steps",
                    )
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", elem_id="seed")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=1):
                result = gr.Gallery(
                    label="Text stream | identity stream",
                    columns=2,
                    height=420,
                    elem_id="result",
                    preview=False,
                    format="png",
                )
                result_info = gr.Markdown(elem_id="result-info")

        def on_upload(paths):
            if not paths:
                return [], "", None
            try:
                photos = session.load_photos(paths)
            except USER_ERRORS as exc:
                raise _user_error(exc) from None
            return session.face_gallery(photos), session.summary(photos), photos

        def on_select(photos, evt: gr.SelectData):
            if photos is None:
                return [], "", None
            photos = session.select_face(photos, evt.index)
            return session.face_gallery(photos), session.summary(photos), photos

        def on_generate(paths, photos, prompt_text, negative_text, style_name, scale, adain_mode, n_steps, seed_value):
            try:
                if photos is None and paths:  # API callers send files without the page's session state
                    photos = session.load_photos(paths)
                return session.generate(
                    photos, prompt_text, negative_text, style_name, scale, adain_mode, n_steps, seed_value
                )
            except USER_ERRORS as exc:
                raise _user_error(exc) from None

        uploads.change(
            on_upload, uploads, [faces, faces_info, photos_state], concurrency_limit=limits.concurrency, api_name=False
        )
        faces.select(on_select, photos_state, [faces, faces_info, photos_state], api_name=False)
        run.click(
            on_generate,
            [uploads, photos_state, prompt, negative, style, id_scale, adain, steps, seed],
            [result, result_info],
            concurrency_limit=limits.concurrency,
            api_name="generate",
        )
    demo.queue(max_size=limits.max_queue, default_concurrency_limit=limits.concurrency)
    return demo


class UploadGuard:
    """ASGI middleware in front of Gradio's upload route, which runs outside the queue: a request must say its
    size and stay under ``max_request_bytes`` (413); all visitors together get ``max_per_minute`` uploads and
    ``max_kept_bytes`` within ``kept_for_s`` (how long an upload can stay on disk), beyond which they get 429.
    Gradio itself refuses a single file above ``max_file_size``."""

    def __init__(
        self,
        app: Any,
        max_request_bytes: int,
        max_per_minute: int,
        max_kept_bytes: int = 1_000_000_000,
        kept_for_s: float = 1200.0,
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_per_minute = max_per_minute
        self.max_kept_bytes = max_kept_bytes
        self.kept_for_s = kept_for_s
        self._recent: collections.deque[tuple[float, int]] = collections.deque()  # (time, bytes) of each upload
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/upload"):
            problem = self._problem(dict(scope["headers"]).get(b"content-length"))
            if problem is not None:
                from starlette.responses import PlainTextResponse

                await PlainTextResponse(problem[1], status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, length: bytes | None) -> tuple[int, str] | None:
        if length is None or not length.isdigit():
            return 411, "An upload must state its Content-Length."
        if int(length) > self.max_request_bytes:
            return 413, f"Uploads are limited to {self.max_request_bytes / 1e6:.3g} MB per request."
        size, now = int(length), time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0][0] > max(60.0, self.kept_for_s):
                self._recent.popleft()
            if sum(1 for when, _ in self._recent if now - when <= 60) >= self.max_per_minute:
                return 429, "Too many uploads; try again in a minute."
            kept = sum(n for when, n in self._recent if now - when <= self.kept_for_s)
            if kept + size > self.max_kept_bytes:
                return 429, "The server holds too many uploads; try again later."
            self._recent.append((now, size))
        return None


def launch(demo: gr.Blocks, limits: ServeLimits, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Start the server (``port=0``: a free one). Returns the local URL when ``block`` is False."""
    if port == 0:
        import socket

        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    from starlette.middleware import Middleware

    guard = Middleware(
        UploadGuard,
        max_request_bytes=limits.max_request_bytes,
        max_per_minute=limits.max_uploads_per_minute,
        max_kept_bytes=limits.max_kept_upload_bytes,
        kept_for_s=2 * limits.keep_files_s,
    )
    demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        app_kwargs={"middleware": [guard]},
        max_file_size=limits.max_upload_bytes,
        show_error=False,  # only our own messages (gr.Error) reach visitors: no server path in a library error
        quiet=not block,
        allowed_paths=[],
        ssr_mode=False,
        footer_links=["api"],
    )
    return demo.local_url
