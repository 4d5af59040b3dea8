"""Five-point face alignment: a least-squares similarity transform onto the ArcFace template, applied with PIL.

Coordinates follow the pixel-index convention used by face detectors (the centre of pixel (0, 0) is (0, 0));
PIL's own convention (pixel centres at +0.5) is converted here, so a keypoint lands exactly where the template
says, at any output size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import FaceError

#: The standard ArcFace 5-point template in a 112 x 112 crop: left eye, right eye, nose tip, left and right
#: mouth corner (image left/right). Scaled linearly for other crop sizes.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def arcface_template(size: int) -> np.ndarray:
    """The ArcFace template for a ``size`` x ``size`` crop, in pixel-index coordinates."""
    return ARCFACE_TEMPLATE_112 * (float(size) / 112.0)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) that best maps ``src`` onto ``dst``.

    Solves ``[a -b; b a] p + t = q`` for (a, b, tx, ty) in the least-squares sense. Raises ``ValueError`` for
    degenerate input (fewer than two distinct points, or non-finite values).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"Need matching point sets of at least two points, got {src.shape} and {dst.shape}.")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise FaceError("Keypoints hold NaN or infinite values.")
    if np.ptp(src, axis=0).max() < 1e-6:
        raise FaceError("Keypoints are all at the same place; cannot align the face.")
    n = len(src)
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    target = dst.reshape(-1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, target, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to (N, 2) ``points``."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    linear = np.linalg.inv(matrix[:, :2])
    return np.column_stack([linear, -linear @ matrix[:, 2]])


def warp_affine(image: Image.Image, matrix: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Warp ``image`` by the 2x3 ``matrix`` (input pixel index -> output pixel index) into an image of ``size``.

    Areas outside the input are black. When the face is much larger than the output, the image is first
    box-downsampled by an integer factor so the bilinear sampling does not alias.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(0.5 / scale) if scale > 0 else 1
    if factor >= 2:
        image = image.reduce(factor)
        # Pixel-index coordinates in the reduced image: x' = (x + 0.5) / factor - 0.5.
        rescale = np.array([[factor, 0.0, 0.5 * (factor - 1)], [0.0, factor, 0.5 * (factor - 1)]])
        matrix = np.column_stack([matrix[:, :2] @ rescale[:, :2], matrix[:, :2] @ rescale[:, 2] + matrix[:, 2]])
    inverse = invert_transform(matrix)
    # PIL samples the input at A^-1 (u - 0.5 - t) + 0.5 for output centre u, both in PIL's +0.5 convention.
    linear = inverse[:, :2]
    offset = inverse[:, 2] - linear @ np.array([0.5, 0.5]) + 0.5
    coefficients = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    return image.transform(
        size, Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )


def alignment_matrix(keypoints: np.ndarray, size: int) -> np.ndarray:
    """The transform that maps a face's five keypoints onto the ArcFace template of a ``size`` crop."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(5, 2)
    return estimate_similarity(keypoints, arcface_template(size))


def align_face(image: Image.Image, keypoints: np.ndarray, size: int) -> Image.Image:
    """The RGB face crop of ``size`` x ``size`` aligned by its five keypoints onto the ArcFace template."""
    size = int(size)
    if size < 8:
        raise ValueError(f"Aligned crop size must be at least 8 px, got {size}.")
    return warp_affine(image.convert("RGB"), alignment_matrix(keypoints, size), (size, size))
