"""``atomic_write`` / ``atomic_file``: a file appears whole or not at all, and no temporary file outlives a write."""

from __future__ import annotations

import os
import threading

import pytest
from PIL import Image

from infinite_id.outputs import atomic_file, atomic_write


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_bytes_text_and_callback_land_whole(tmp_path):
    assert atomic_write(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "b.txt", "gr\u00fc\u00dfe\nline\n")
    assert (tmp_path / "b.txt").read_bytes() == "gr\u00fc\u00dfe\nline\n".encode()
    image = Image.new("RGB", (4, 3), "red")
    atomic_write(tmp_path / "c.png", lambda tmp: image.save(tmp, format="PNG"), fsync=True)
    with Image.open(tmp_path / "c.png") as back:
        assert back.size == (4, 3) and back.getpixel((0, 0)) == (255, 0, 0)
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and _leftovers(tmp_path) == []

    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "never.bin") as tmp:
        tmp.write_bytes(b"x")
        raise KeyboardInterrupt
    assert not (tmp_path / "never.bin").exists() and _leftovers(tmp_path) == []


def test_temp_names_are_unique_hidden_and_beside_the_target(tmp_path):
    seen = []
    with atomic_file(tmp_path / "x.safetensors") as first, atomic_file(tmp_path / "x.safetensors") as second:
        seen += [first, second]
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(".x.safetensors.") and first.name.endswith(".tmp")
        assert first.is_file() and os.stat(first).st_size == 0  # reserved, so no third writer can take it
        first.write_text("1")
        second.write_text("2")
    assert (tmp_path / "x.safetensors").read_text() == "1"  # the last to finish (the outer block) wins, whole
    assert not any(p.exists() for p in seen)


def test_concurrent_writers_never_leave_a_torn_file(tmp_path):
    target = tmp_path / "shared.txt"
    payloads = [str(i) * 50_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write, args=(target, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in payloads and _leftovers(tmp_path) == []
