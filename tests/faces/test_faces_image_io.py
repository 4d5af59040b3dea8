"""Every kind of photo a user may bring: converted to RGB, oriented, capped, or refused with a clear error."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infinite_id.faces import InvalidImageError, load_image


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares a huge size but carries almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )
    return path


def quadrant_image(size=(60, 40)) -> Image.Image:
    """Red top-left quadrant on blue, so orientation is observable."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[..., 2] = 255
    pixels[: size[1] // 2, : size[0] // 2] = (255, 0, 0)
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    quadrant_image().save(path, exif=exif, quality=95)
    loaded = load_image(path)
    assert loaded.size == (40, 60)  # width and height swapped
    # The red quadrant, top-left as stored, is top-right once displayed.
    pixels = np.asarray(loaded)
    assert pixels[5, 35, 0] > 200 and pixels[5, 35, 2] < 60
    assert pixels[55, 5, 2] > 200


def test_rgba_is_composited_over_white():
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[:10] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    loaded = load_image(Image.fromarray(rgba))
    assert loaded.mode == "RGB"
    assert np.asarray(loaded)[0, 0].tolist() == [255, 0, 0]
    assert np.asarray(loaded)[15, 0].tolist() == [255, 255, 255]


def test_palette_with_transparency_and_grayscale_and_cmyk(tmp_path):
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.paste(1, (0, 0, 10, 20))
    palette.info["transparency"] = 0
    loaded = load_image(palette)
    assert np.asarray(loaded)[0, 0].tolist() == [10, 200, 30] and np.asarray(loaded)[0, 15].tolist() == [255] * 3

    gray = load_image(Image.new("L", (20, 20), 77))
    assert gray.mode == "RGB" and np.asarray(gray)[0, 0].tolist() == [77, 77, 77]

    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    red = np.asarray(load_image(path))[10, 10]
    assert red[0] > 200 and red[1] < 60 and red[2] < 60

    assert load_image(Image.new("1", (20, 20), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    values = np.full((20, 20), 32768, dtype=np.uint16)  # mid-gray in 16 bits
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert abs(int(np.asarray(load_image(path))[0, 0, 0]) - 128) <= 1
    assert abs(int(np.asarray(load_image(values))[0, 0, 0]) - 128) <= 1
    rgb16 = np.full((20, 20, 3), 65535, dtype=np.uint16)
    assert np.asarray(load_image(rgb16))[0, 0].tolist() == [255, 255, 255]


def test_arrays_of_every_supported_kind():
    assert load_image(np.full((20, 30, 3), 0.5)).getpixel((0, 0)) == (128, 128, 128)  # floats in [0, 1]
    assert load_image(np.full((20, 30, 3), 200.0)).getpixel((0, 0)) == (200, 200, 200)  # floats in 0..255
    assert load_image(np.ones((20, 30), dtype=bool)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.zeros((20, 30, 1), dtype=np.uint8)).size == (30, 20)
    with pytest.raises(InvalidImageError, match="channels first"):
        load_image(np.zeros((3, 20, 30), dtype=np.uint8))
    with pytest.raises(InvalidImageError, match="not an image array"):
        load_image(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InvalidImageError, match="NaN"):
        load_image(np.full((20, 20), np.nan))
    with pytest.raises(InvalidImageError, match="negative"):
        load_image(np.full((20, 20), -3, dtype=np.int32))
    with pytest.raises(InvalidImageError, match="not an image type"):
        load_image(np.full((20, 20), "a"))
    with pytest.raises(InvalidImageError, match="file path, a PIL image"):
        load_image(42)


def test_tiny_images_are_refused_with_their_size():
    with pytest.raises(InvalidImageError, match=r"only 8x40 px"):
        load_image(np.zeros((40, 8, 3), dtype=np.uint8))


def test_huge_images_are_capped_and_bombs_refused(tmp_path):
    big = Image.new("RGB", (3000, 1500), (10, 20, 30))
    loaded = load_image(big, max_side=1000)
    assert loaded.size == (1000, 500)
    path = tmp_path / "big.jpg"
    big.save(path)
    assert load_image(path, max_side=700).size == (700, 350)  # JPEG draft decoding, then exact resize
    assert load_image(path, max_side=None).size == (3000, 1500)

    # Our own pixel limit refuses before decoding (the file has no pixel data: decoding would fail differently).
    with pytest.raises(InvalidImageError, match=r"12000x12000 px \(144 MP\), more than the 100 MP limit"):
        load_image(write_png_header(tmp_path / "bomb.png", 12000, 12000), max_pixels=100_000_000)
    # Far past PIL's own limit, PIL refuses in open(); that is reported the same way.
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        load_image(write_png_header(tmp_path / "bomb2.png", 100_000, 100_000))


def test_corrupt_truncated_and_non_image_files(tmp_path, yaoming):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        load_image(missing)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(InvalidImageError, match="notes.jpg is not an image"):
        load_image(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match="empty.png"):
        load_image(empty)
    with pytest.raises(InvalidImageError, match="is a folder"):
        load_image(tmp_path)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(yaoming).read_bytes()[:4000])
    with pytest.raises(InvalidImageError, match="truncated.jpg is corrupt or truncated"):
        load_image(truncated)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(Path(yaoming).read_bytes()[:200] + bytes(range(256)) * 20)
    with pytest.raises(InvalidImageError, match="garbage.png"):
        load_image(garbage)


def test_first_frame_of_animations_and_bytes_input(tmp_path):
    frames = [Image.new("RGB", (20, 20), color) for color in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path).getpixel((5, 5))[0] > 200
    buffer = io.BytesIO()
    frames[1].save(buffer, format="PNG")
    assert load_image(buffer.getvalue()).getpixel((5, 5)) == (0, 255, 0)
