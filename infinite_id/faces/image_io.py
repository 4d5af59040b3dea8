"""Loading any user photo as an RGB PIL image, with one clear error for everything that is not a usable photo.

Rules (documented in docs/faces.md and tested in tests/faces/test_image_io.py):

- EXIF orientation is applied, so coordinates refer to the image as a viewer shows it.
- Transparency (RGBA, LA, palette with transparency) is composited over white; grayscale, palette, CMYK,
  YCbCr and 1-bit images are converted to RGB; 16- and 32-bit integer and float images are rescaled to 8 bits
  from their bit depth (not clipped). Multi-frame files (GIF, TIFF) use their first frame.
- Images with more than ``max_pixels`` pixels, or whose decoding and conversion to RGB would take more than
  ``max_bytes`` of memory (estimated from the header), are refused before they are decoded; images
  whose long side exceeds ``max_side`` are downscaled to it (JPEGs decode at reduced size directly). Face
  coordinates then refer to the downscaled image.
- Images smaller than ``min_side`` on either side are refused: no detector can find a face in them.
- Arrays are H x W (gray), H x W x 1, H x W x 3 (RGB, not BGR) or H x W x 4 (RGBA); uint8, uint16, bool or float
  (floats in [0, 1] are taken as normalised, otherwise as 0..255).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import MissingInputError
from .errors import InvalidImageError

#: Long-side cap when loading; detectors work at <= 640 px and the CLIP crop is 224 px, so 2048 loses nothing.
DEFAULT_MAX_SIDE = 2048
#: Refuse images with more pixels than this before decoding them (about 16k x 16k).
DEFAULT_MAX_PIXELS = 256_000_000
#: Refuse images smaller than this on either side.
DEFAULT_MIN_SIDE = 16
#: Refuse images whose decoding would take more memory than this (estimated from the header, before decoding):
#: a pixel limit alone lets a 13000 x 13000 RGBA PNG of 657 kB through, which takes 2 GB to decode and convert.
DEFAULT_MAX_DECODED_BYTES = 2 * 1024**3


def source_name(source: Any) -> str:
    """A short human-readable name for an image input, used in every error message."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return str(filename) if filename else f"<PIL image {source.width}x{source.height} {source.mode}>"
    if isinstance(source, np.ndarray):
        return f"<array {tuple(source.shape)} {source.dtype}>"
    return f"<{type(source).__name__}>"


def load_image(
    source: str | Path | Image.Image | np.ndarray | bytes,
    max_side: int | None = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> Image.Image:
    """Load a photo as an RGB image with EXIF orientation applied; see the module docstring for the rules.

    Raises:
        FileNotFoundError: a path that does not exist.
        InvalidImageError: anything else that is not a usable photo; the message names the input.
    """
    name = source_name(source)
    if isinstance(source, np.ndarray):
        image = _image_from_array(source, name)
    elif isinstance(source, Image.Image):
        image = source
        _check_pixels(image, name, max_pixels)
        image = _decode(image, name, None, max_bytes)
    elif isinstance(source, (str, Path, bytes)):
        image = _open(source, name, max_pixels, max_side, max_bytes)
    else:
        raise InvalidImageError(
            f"Cannot read an image from {name}: pass a file path, a PIL image or an H x W x C numpy array."
        )
    image = _apply_exif_orientation(image)
    image = to_rgb(image, name)
    if min(image.size) < min_side:
        raise InvalidImageError(
            f"{name} is only {image.width}x{image.height} px; a face photo needs at least {min_side} px on each side."
        )
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def _open(source: str | Path | bytes, name: str, max_pixels: int, max_side: int | None, max_bytes: int) -> Image.Image:
    if isinstance(source, bytes):
        stream: Any = io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        if str(source).startswith(("http:/", "https:/")):
            raise InvalidImageError(f"{name} is a URL; images are read from local files only: download it first.")
        if not path.exists():
            raise MissingInputError(f"Image file not found: {name}")
        if path.is_dir():
            raise InvalidImageError(f"{name} is a folder, not an image file.")
        stream = path
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces PIL's bomb warning; PIL still raises past twice its own limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"{name} is too large to decode safely (possible decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(f"{name} is not an image file, or its format is not supported.") from exc
    except OSError as exc:
        raise InvalidImageError(f"Cannot read {name}: {exc}") from exc
    _check_pixels(image, name, max_pixels)
    return _decode(image, name, max_side, max_bytes)


def _check_pixels(image: Image.Image, name: str, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{name} is {width}x{height} px ({width * height / 1e6:.0f} MP), more than the {max_pixels / 1e6:.0f} MP "
            f"limit; refusing to decode it (a possible decompression bomb). Downscale it first, or raise max_pixels."
        )


#: Bytes per pixel of a decoded PIL image, by mode (the rest: one byte per band).
_MODE_BYTES = {"1": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "I": 4, "F": 4, "RGB": 4, "RGBX": 4}


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """Memory that decoding an image of ``mode`` and ``size`` and converting it to RGB takes at its peak: the
    decoded pixels, plus (transparency) an RGBA copy, a white background and their composite, plus the RGB result."""
    pixels = size[0] * size[1]
    decoded = pixels * _MODE_BYTES.get(mode, len(mode) if mode.isalpha() else 4)
    alpha = 3 * 4 * pixels if ("A" in mode or mode in ("P", "PA")) else 0
    return decoded + alpha + 4 * pixels  # PIL keeps RGB in 4 bytes per pixel


def _check_memory(image: Image.Image, name: str, max_bytes: int) -> None:
    need = decoded_bytes(image.mode, image.size)
    if need > max_bytes:
        raise InvalidImageError(
            f"{name} is {image.width}x{image.height} px ({image.mode}): decoding it would take about "
            f"{need / 2**20:.0f} MiB, more than the {max_bytes / 2**20:.0f} MiB limit. Downscale it first."
        )


def _decode(image: Image.Image, name: str, max_side: int | None, max_bytes: int) -> Image.Image:
    """Fully decode the (first frame of the) image now, so corrupt or truncated data fails here, clearly; refuse
    first what would not fit in ``max_bytes``."""
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if max_side is not None and image.format == "JPEG" and max(image.size) > 2 * max_side:
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale directly: huge JPEGs then cost a fraction of the memory.
            image.draft(image.mode, (max_side, max_side))
        _check_memory(image, name, max_bytes)
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"{name} is corrupt or truncated: {exc}") from exc
    return image


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not make a good photo unusable
        return image


def to_rgb(image: Image.Image, name: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (transparency over white, high bit depths rescaled, not clipped)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image), name)).convert("RGB")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InvalidImageError(f"{name} has image mode {mode!r}, which cannot be converted to RGB.") from exc


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Rescale an integer, boolean or float array to uint8 by its nominal range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidImageError(f"{name} holds NaN or infinite pixel values.")
        top = 1.0 if array.size == 0 or float(array.max()) <= 1.0 else 255.0
        return np.clip(np.rint(array.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.min()) < 0:
            raise InvalidImageError(f"{name} holds negative pixel values.")
        peak = int(array.max()) if array.size else 0
        # Nominal range: 16 bits for uint16; for wider integers (PIL mode "I") 8 bits if the values fit, else 16
        # bits (16-bit PNG/TIFF), else the type's full range.
        if array.dtype == np.uint16:
            top = 65535
        else:
            top = 255 if peak <= 255 else 65535 if peak <= 65535 else int(np.iinfo(array.dtype).max)
        return np.rint(array.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    raise InvalidImageError(f"{name} has pixel type {array.dtype}, which is not an image type.")


def _image_from_array(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(_to_uint8(array, name)))
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(_to_uint8(array, name)))
    hint = " (channels first? use array.transpose(1, 2, 0))" if array.ndim == 3 and array.shape[0] in (1, 3, 4) else ""
    raise InvalidImageError(
        f"{name} is not an image array: expected H x W, H x W x 1, H x W x 3 (RGB) or H x W x 4 (RGBA){hint}."
    )
