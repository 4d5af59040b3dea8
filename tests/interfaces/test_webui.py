"""The web UI: upload checks, face choice, no server paths reachable, a bounded queue under load, and a real
browser (Debian's headless Chromium through Playwright) uploading a face photo and getting both streams back."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the web UI needs the ui extra: pip install 'infinite-id[ui]'")

import httpx  # noqa: E402  (a gradio dependency)

from infinite_id.webui import ServeLimits, WebSession, build_app, launch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"  # a real photo (75 kB): upload checks, no face model involved
PORTRAIT = ROOT / "examples" / "portraits" / "woman_1_large.png"  # what the default (miniature) model reads
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _group_photo() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    return Path(spec.submodule_search_locations[0]) / "data" / "images" / "t1.jpg"


@pytest.fixture(scope="module")
def generator():
    import torch

    from infinite_id.generation import open_generator

    torch.set_num_threads(1)
    return open_generator(device="cpu")  # the default model and face backend, as a fresh install has them


@pytest.fixture(scope="module")
def server(generator):
    """A real server on loopback with a small queue: one generation at a time, two waiting."""
    limits = ServeLimits(concurrency=1, max_queue=2, max_steps=8, max_upload_bytes=2_000_000)
    demo = build_app(generator, limits)
    url = launch(demo, limits, host="127.0.0.1", port=0, block=False)
    try:
        yield url.rstrip("/"), limits
    finally:
        demo.close()


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("INFINITE_ID_TEST_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_uploads_are_checked_before_any_face_model_runs(generator, tmp_path):
    session = WebSession(generator, ServeLimits(max_upload_bytes=50_000, max_photos=2))
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="photo 1 is not a usable photo") as info:
        session.load_photos([str(fake)])
    assert str(tmp_path) not in str(info.value)  # no server path in what the visitor reads
    with pytest.raises(ValueError, match=r"photo 1 is 0.075 MB; the limit is 0.05 MB"):
        session.load_photos([str(ASTRONAUT)])  # 75 kB
    with pytest.raises(ValueError, match="At most 2 photos"):
        session.load_photos([str(ASTRONAUT)] * 3)
    with pytest.raises(ValueError, match="Upload a photo"):
        session.load_photos([])


def test_a_photo_with_several_faces_lets_the_visitor_choose():
    """The miniature model's detector finds one face per image, so this runs on insightface with the smoke model."""
    from infinite_id.defaults import build_smoke_model
    from infinite_id.faces import get_face_analyzer
    from infinite_id.generation import Generator

    analyzer = get_face_analyzer("insightface")
    session = WebSession(Generator(build_smoke_model(analyzer.info), analyzer))
    photos = session.load_photos([str(_group_photo())])
    assert len(photos.faces[0]) >= 2 and photos.choice == [0]
    assert "click another face" in session.summary(photos)
    gallery = session.face_gallery(photos)
    assert len(gallery) == len(photos.faces[0]) and gallery[0][1].endswith("(used)")
    session.select_face(photos, 2)
    assert photos.choice == [2] and session.face_gallery(photos)[2][1].endswith("(used)")
    images, info = session.generate(photos, "a man in comic book style", "", "none", 1.0, "auto", 2, 3)
    assert [caption for _, caption in images] == ["text stream (the prompt alone)", "identity stream"]
    assert "seed 3 · 2 steps" in info


def test_face_thumbnails_show_the_whole_face_with_a_margin():
    from PIL import Image

    from infinite_id.webui.app import FACE_THUMB_MARGIN, face_thumbnail

    photo = Image.new("RGB", (100, 80), (255, 0, 0))
    thumb = face_thumbnail(photo, (60.0, 40.0, 100.0, 80.0), 64)  # a face in the corner: the margin leaves the photo
    assert thumb.size == (64, 64)
    assert thumb.getpixel((32, 32)) == (255, 0, 0) and thumb.getpixel((63, 63)) == (128, 128, 128)
    inner = face_thumbnail(photo, (40.0, 30.0, 60.0, 50.0), 64)  # the box is centred, grown on every side
    assert inner.getpixel((0, 0)) == inner.getpixel((63, 63)) == (255, 0, 0)
    assert 0 < FACE_THUMB_MARGIN < 1


def test_no_server_path_is_reachable(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=30) as client:
        for path in ("/etc/passwd", str(ASTRONAUT), str(ROOT / "pyproject.toml"), "../../../etc/passwd"):
            response = client.get(f"/gradio_api/file={path}")
            assert response.status_code in (403, 404), (path, response.status_code)


def _upload(client: httpx.Client) -> dict:
    with open(PORTRAIT, "rb") as handle:
        response = client.post("/gradio_api/upload", files=[("files", ("portrait.png", handle, "image/png"))])
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": "portrait.png"}


def _call(url: str, file_data: dict, seed: int) -> str:
    """One API request; returns "complete" or "refused: <message>" (anything else fails the test)."""
    with httpx.Client(base_url=url, timeout=120) as client:
        data = [[file_data], None, "a woman in oil painting style", "", "none", 1.0, "auto", 6, seed]
        response = client.post("/gradio_api/call/generate", json={"data": data})
        if response.status_code != 200:
            return f"refused: HTTP {response.status_code} {response.text[:100]}"
        event_id = response.json()["event_id"]
        event = None
        with client.stream("GET", f"/gradio_api/call/generate/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    return "complete" if event == "complete" else f"refused: {line[5:].strip()[:100]}"
    return f"unanswered (last event {event})"


def test_bounded_concurrent_load_is_answered_or_cleanly_refused(server):
    url, limits = server
    with httpx.Client(base_url=url, timeout=30) as client:
        file_data = _upload(client)
    requests = 8  # > concurrency + queue: some must be refused
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=requests) as pool:
        outcomes = list(pool.map(lambda seed: _call(url, file_data, seed), range(requests)))
    elapsed = time.monotonic() - started
    print(f"load test: {requests} concurrent requests in {elapsed:.1f} s -> {outcomes}")
    assert all(o == "complete" or o.startswith("refused") for o in outcomes), outcomes
    assert outcomes.count("complete") >= 1
    refused = [o for o in outcomes if o.startswith("refused")]
    assert all("queue" in o.lower() or "busy" in o.lower() for o in refused), refused
    assert len(refused) >= requests - limits.concurrency - limits.max_queue - 1
    assert elapsed < 120
    # The server is still healthy afterwards.
    assert _call(url, file_data, 99) == "complete"


def test_browser_uploads_a_face_and_gets_both_streams(server, artifact_dir):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    url, _ = server
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(90_000)
            page.goto(url)
            page.locator("#uploads input[type=file]").set_input_files(str(PORTRAIT))
            page.locator("#faces img").first.wait_for()
            assert "one face" in page.locator("#faces-info").inner_text()
            page.locator("#prompt textarea").fill("a photo of a woman wearing a yellow sweater, on the beach")
            page.get_by_text("Settings").click()
            steps = page.locator("#steps input[type=range]")  # the keyboard moves a slider as a visitor would
            steps.focus()
            steps.press("Home")  # 1 step
            for _ in range(3):
                steps.press("ArrowRight")
            page.wait_for_function("document.querySelector('#steps input[type=number]').value === '4'")
            page.locator("#generate").click()
            page.locator("#result img").nth(1).wait_for()
            page.locator("#result-info").get_by_text("seed").wait_for()
            captions = page.locator("#result").inner_text()
            info = page.locator("#result-info").inner_text()
            shot = artifact_dir / "webui_generate.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert "identity stream" in captions and "text stream" in captions
    assert "4 steps" in info and "miniature model" in info  # the steps field reached the generation
    assert shot.stat().st_size > 10_000


# ---------------------------------------------------------------- hostile uploads (issue 13, class 6)


def _png_bomb(width: int, height: int) -> bytes:
    """A valid, all-transparent RGBA PNG written row by row (never held decoded): 13000 x 13000 is 657 kB on disk
    and 3 GiB to decode and convert."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer, row = zlib.compressobj(9), b"\x00" * (width * 4 + 1)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _rss_bytes(field: str) -> int:
    """This process's resident memory (``VmRSS``) or its peak since the last reset (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _roomy_server(generator, keep_files_s: int):
    """A server whose queue holds the hostile requests and the next visitor, so that the visitor waits behind them."""
    limits = ServeLimits(concurrency=1, max_queue=16, max_steps=8, max_upload_bytes=2_000_000,
                         keep_files_s=keep_files_s, max_uploads_per_minute=30,
                         max_kept_upload_bytes=12_000_000)  # fmt: skip
    demo = build_app(generator, limits)
    url = launch(demo, limits, host="127.0.0.1", port=0, block=False)
    try:
        yield url.rstrip("/"), limits, demo
    finally:
        demo.close()


@pytest.fixture(scope="module")
def roomy_server(generator):
    """Uploads kept long enough for a queue on a loaded machine (the cleaner must not race the visitors)."""
    yield from _roomy_server(generator, keep_files_s=120)


@pytest.fixture(scope="module")
def forgetful_server(generator):
    """Uploads kept 2 s, so the cleaner's work can be watched."""
    yield from _roomy_server(generator, keep_files_s=2)


def _timed_call(url: str, file_data: dict, seed: int) -> float:
    started = time.monotonic()
    assert _call(url, file_data, seed) == "complete"
    return time.monotonic() - started


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak memory")
def test_hostile_uploads_keep_memory_bounded_and_the_next_visitor_served(roomy_server):
    """Two 13000 x 13000 RGBA PNGs (657 kB each, over the pixel limit) and two 6000 x 6000 ones (under it, 690 MiB
    to decode: over the memory limit) are refused from their headers: the server's peak memory grows by less than
    ``memory_bound`` (four such uploads grew it by 3.3 GB before), and the next visitor, queued behind them, waits at
    most twice as long as a normal visit measured in the same run (plus 1 s for a loaded machine)."""
    memory_bound = 400 * 2**20
    url, _, _ = roomy_server
    bombs = [_png_bomb(side, side) for side in (13000, 6000)]
    with httpx.Client(base_url=url, timeout=30) as client:
        normal = _upload(client)
        hostile = []
        for number in range(4):
            bomb = bombs[number // 2]
            response = client.post("/gradio_api/upload", files=[("files", (f"b{number}.png", bomb, "image/png"))])
            response.raise_for_status()
            hostile.append({"path": response.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": "b.png"})
    baseline = min(_timed_call(url, normal, seed) for seed in (1, 2))  # warm, then normal

    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: what follows is measured alone
    before = _rss_bytes("VmRSS")

    def attack(number: int) -> str:
        with httpx.Client(base_url=url, timeout=120) as client:
            data = [[hostile[number]], None, "a woman", "", "none", 1.0, "auto", 6, number]
            event_id = client.post("/gradio_api/call/generate", json={"data": data}).json()["event_id"]
            with client.stream("GET", f"/gradio_api/call/generate/{event_id}") as stream:
                return "".join(stream.iter_lines())

    with ThreadPoolExecutor(max_workers=4) as pool:
        attacks = [pool.submit(attack, n) for n in range(4)]
        time.sleep(0.2)  # the attacks are queued first
        next_visitor = _timed_call(url, normal, 3)
        answers = [a.result() for a in attacks]
    grown = _rss_bytes("VmHWM") - before
    print(f"hostile uploads: peak memory +{grown / 2**20:.0f} MiB; next visitor {next_visitor:.2f} s "
          f"(normal {baseline:.2f} s)")  # fmt: skip
    assert all("event: error" in a for a in answers), answers
    assert all("MP limit" in a for a in answers[:2]) and all("MiB limit" in a for a in answers[2:]), answers
    assert grown < memory_bound
    assert next_visitor <= 2 * baseline + 1.0


def test_uploads_outside_the_queue_are_bounded_and_deleted(forgetful_server):
    url, limits, demo = forgetful_server
    with httpx.Client(base_url=url, timeout=30) as client:
        too_big = b"x" * (limits.max_request_bytes + 1)
        response = client.post("/gradio_api/upload", files=[("files", ("big.png", too_big, "image/png"))])
        assert response.status_code == 413 and "per request" in response.text
        uploaded = _upload(client)
        kept = uploaded["path"]
        assert Path(kept).is_file()
        bystander = Path(kept).parents[1] / "someone-elses-file.txt"  # in the same cache folder, not ours
        bystander.write_text("not the server's")
        deadline = time.monotonic() + 15  # keep_files_s=2: Gradio's cleaner deletes it within a few seconds
        while Path(kept).exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not Path(kept).exists(), "an upload outlived keep_files_s"
        answer = _call(url, uploaded, 0)  # a visitor who waited too long is told, in a sentence
        assert answer.startswith("refused") and "upload it again" in answer, answer
        assert bystander.read_text() == "not the server's"  # the cleaner deletes only what this server wrote
        bystander.unlink()
        time.sleep(2 * limits.keep_files_s)  # what was uploaded so far no longer counts against the disk budget
        full = b"x" * (limits.max_request_bytes - 1024)  # 8 MB each: the second would hold 16 MB of the 12
        budget = [client.post("/gradio_api/upload", files=[("files", ("f.png", full, "image/png"))]) for _ in "ab"]
        assert budget[1].status_code == 429 and "too many uploads" in budget[1].text, budget[1].text
        statuses = []
        for _ in range(limits.max_uploads_per_minute + 1):
            response = client.post("/gradio_api/upload", files=[("files", ("a.png", b"tiny", "image/png"))])
            statuses.append(response.status_code)
    assert 429 in statuses and statuses.count(200) <= limits.max_uploads_per_minute


def test_an_api_error_does_not_echo_server_paths(roomy_server):
    url, _, _ = roomy_server
    outside = {"path": str(ROOT / "pyproject.toml"), "meta": {"_type": "gradio.FileData"}, "orig_name": "a.png"}
    with httpx.Client(base_url=url, timeout=60) as client:
        data = [[outside], None, "a woman", "", "none", 1.0, "auto", 2, 0]
        response = client.post("/gradio_api/call/generate", json={"data": data})
        text = response.text
        if response.status_code == 200:
            with client.stream("GET", f"/gradio_api/call/generate/{response.json()['event_id']}") as stream:
                text += "".join(stream.iter_lines())
    assert "error" in text.lower()
    for private in (os.getcwd(), str(ROOT), "/tmp/"):
        assert private not in text, text[:300]
