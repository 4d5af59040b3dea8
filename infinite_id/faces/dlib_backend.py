"""The dlib backend: HOG (or CNN) detection, 5-point landmarks and dlib's 128-d ResNet face descriptor.

The descriptor and the 5-point landmark model are public domain, so this is the commercially usable backend.
Models come from the ``face_recognition_models`` package (found without importing it: its ``__init__`` needs the
retired ``pkg_resources``), from ``model_dir``, or from the folder in ``INFINITE_ID_DLIB_MODELS``. The 68-point
model is never used (its training data excludes commercial use).

dlib's 5-point model marks the two corners of each eye and the base of the nose, not the mouth. The ArcFace-order
keypoints reported here are obtained by fitting a similarity from those three points (eye centres, nose base) to
where they sit on the ArcFace template, measured against insightface's SCRFD keypoints on the package photos
(bench/face_speed.py, ``--calibrate``), and mapping the template's five points back into the image. Mouth corners
are therefore estimated, not detected.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import UserInputError
from .alignment import ARCFACE_TEMPLATE_112, apply_transform, estimate_similarity
from .base import DetectedFace, FaceAnalyzer, FaceEncoderInfo
from .errors import BackendUnavailableError
from .image_io import DEFAULT_MAX_SIDE

MODELS_ENV_VAR = "INFINITE_ID_DLIB_MODELS"
DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_FILE = "mmod_human_face_detector.dat"
MODEL_NAME = "dlib_face_recognition_resnet_model_v1"

#: Where dlib's left eye centre, right eye centre and nose base sit on the 112 px ArcFace template (mean over
#: 52 faces of the package photos and their mirror images, aligned by SCRFD keypoints).
DLIB_POINTS_ON_ARCFACE_TEMPLATE_112 = np.array([[35.8, 53.9], [70.8, 53.5], [53.7, 81.7]])

INSTALL_HINT = "pip install dlib-bin face_recognition_models  (or: pip install 'infinite-id[faces]')"


def find_dlib_models(model_dir: str | os.PathLike | None = None) -> Path:
    """The folder with dlib's model files: ``model_dir``, ``$INFINITE_ID_DLIB_MODELS`` or face_recognition_models."""
    searched: list[Path] = []
    if model_dir is not None:
        searched.append(Path(model_dir).expanduser())
    if os.environ.get(MODELS_ENV_VAR):
        searched.append(Path(os.environ[MODELS_ENV_VAR]).expanduser())
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        searched.append(Path(list(spec.submodule_search_locations)[0]) / "models")
    for folder in searched:
        if (folder / DESCRIPTOR_FILE).is_file() and (folder / LANDMARKS_FILE).is_file():
            return folder
    looked = ", ".join(str(folder) for folder in searched) or "nowhere (no folder given, none installed)"
    raise BackendUnavailableError(
        f"dlib model files {DESCRIPTOR_FILE} and {LANDMARKS_FILE} not found (looked in {looked}). "
        f"Install them with `pip install face_recognition_models`, or put them in a folder given as model_dir= "
        f"or in ${MODELS_ENV_VAR}."
    )


class DlibFaceAnalyzer(FaceAnalyzer):
    """dlib detection + 5-point landmarks + 128-d descriptor (public-domain models, commercial use fine).

    Args:
        detector: ``"hog"`` (fast, frontal faces) or ``"cnn"`` (MMOD, more robust, much slower on CPU).
        upsample: how many times the image is upsampled before detection (1 finds faces down to ~40 px).
        model_dir: folder with the .dat files (default: the face_recognition_models package).
        num_jitters: descriptor jitters (dlib's test-time augmentation; 0 is deterministic and fastest).
    """

    backend_name = "dlib"

    def __init__(
        self,
        detector: str = "hog",
        upsample: int = 1,
        model_dir: str | os.PathLike | None = None,
        num_jitters: int = 0,
        min_face_size: float | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        super().__init__(min_face_size=min_face_size, max_side=max_side)
        if detector not in ("hog", "cnn"):
            raise UserInputError(f"Unknown dlib detector {detector!r}; use 'hog' or 'cnn'.")
        try:
            import dlib
        except ImportError as exc:
            raise BackendUnavailableError(f"The dlib backend needs dlib ({exc}). Install: {INSTALL_HINT}") from exc
        folder = find_dlib_models(model_dir)
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            if not (folder / CNN_DETECTOR_FILE).is_file():
                raise BackendUnavailableError(f"The CNN detector needs {CNN_DETECTOR_FILE} in {folder}.")
            self._detector = dlib.cnn_face_detection_model_v1(str(folder / CNN_DETECTOR_FILE))
        self.detector_kind = detector
        self.upsample = int(upsample)
        self.num_jitters = int(num_jitters)
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self._descriptor = dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_FILE))
        self._info = FaceEncoderInfo(backend=self.backend_name, model=MODEL_NAME, dim=128)

    @property
    def info(self) -> FaceEncoderInfo:
        return self._info

    def _rectangles(self, pixels: np.ndarray) -> list[tuple[object, float]]:
        if self.detector_kind == "cnn":
            return [(d.rect, float(d.confidence)) for d in self._detector(pixels, self.upsample)]
        rects, scores, _ = self._detector.run(pixels, self.upsample, 0.0)
        return list(zip(rects, (float(s) for s in scores), strict=True))

    def _shape(self, pixels: np.ndarray, box: tuple[float, float, float, float]):
        x1, y1, x2, y2 = (round(v) for v in box)
        return self._landmarks(pixels, self._dlib.rectangle(x1, y1, max(x2 - 1, x1), max(y2 - 1, y1)))

    @staticmethod
    def keypoints_from_shape(points: np.ndarray) -> np.ndarray:
        """ArcFace-order keypoints from dlib's 5 landmarks (two corners per eye, then the nose base)."""
        eyes = sorted([points[0:2].mean(axis=0), points[2:4].mean(axis=0)], key=lambda p: p[0])
        measured = np.array([eyes[0], eyes[1], points[4]], dtype=np.float64)
        to_image = estimate_similarity(DLIB_POINTS_ON_ARCFACE_TEMPLATE_112, measured)
        return apply_transform(to_image, ARCFACE_TEMPLATE_112)

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        pixels = np.asarray(image)
        width, height = image.size
        faces = []
        for rect, score in self._rectangles(pixels):
            # dlib boxes are inclusive pixel ranges; ours are [x1, x2) like the other backends'.
            box = (
                float(max(rect.left(), 0)),
                float(max(rect.top(), 0)),
                float(min(rect.right() + 1, width)),
                float(min(rect.bottom() + 1, height)),
            )
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            shape = self._shape(pixels, box)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(DetectedFace(box=box, keypoints=self.keypoints_from_shape(points), score=score))
        return faces

    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        pixels = np.ascontiguousarray(np.asarray(image))
        shape = self._shape(pixels, face.box)
        return np.asarray(self._descriptor.compute_face_descriptor(pixels, shape, self.num_jitters), dtype=np.float32)
