"""The mini face-recognition encoder of the miniature world: the ArcFace analogue.

A small residual CNN maps an aligned face crop to an L2-normalised embedding (512-d by default, like ArcFace).
It is trained with an additive angular margin loss over training identities (see
:mod:`infinite_id.world.train_face`); a second, independently seeded copy serves only as the evaluation metric.
Weights are stored as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

from ..faces.alignment import arcface_template, estimate_similarity, warp_affine

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class FaceEncoderConfig:
    input_size: int = 40  # side of the aligned face crop
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embedding_dim: int = 512

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FaceEncoderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known - {"model_type"}
        if unknown:
            raise ValueError(f"unknown face encoder config keys: {sorted(unknown)}")
        values = {k: v for k, v in data.items() if k in known}
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


def world_face_template(size: int) -> np.ndarray:
    """Five-point template of the mini face crop: the ArcFace template shrunk to 75% and lowered a little,
    so the crop keeps the hair and the jaw line (both are identity in the miniature world)."""
    centre = np.array([size / 2.0, size / 2.0])
    return centre + (arcface_template(size) - centre) * 0.75 + np.array([0.0, 0.03 * size])


def align_world_face(image: Image.Image, landmarks, size: int = 40) -> Image.Image:
    """The aligned face crop the mini face encoder reads, from five landmarks (pixel-index coordinates)."""
    matrix = estimate_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), world_face_template(size))
    return warp_affine(image.convert("RGB"), matrix, (size, size))


def crops_to_tensor(crops: list[Image.Image]) -> torch.Tensor:
    """PIL crops -> float tensor (B, 3, S, S) in [-1, 1]."""
    array = np.stack([np.asarray(c, dtype=np.uint8) for c in crops])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _Block(nn.Module):
    """Two 3x3 convolutions with a residual path; the first may halve the resolution."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class MiniFaceEncoder(nn.Module):
    """Aligned face crop (B, 3, S, S) in [-1, 1] -> unit-norm identity embedding (B, embedding_dim)."""

    def __init__(self, config: FaceEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or FaceEncoderConfig()
        ch = self.config.channels
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1, bias=False), nn.BatchNorm2d(ch[0]), nn.ReLU())
        self.blocks = nn.Sequential(*[_Block(a, b, 2) for a, b in zip(ch, ch[1:], strict=False)])
        self.head = nn.Linear(ch[-1] * 4, self.config.embedding_dim)
        self.norm = nn.BatchNorm1d(self.config.embedding_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected face crops of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        x = self.blocks(self.stem(pixels))
        x = F.adaptive_avg_pool2d(x, 2).flatten(1)  # keep coarse layout: where the hair is matters
        return F.normalize(self.norm(self.head(x)), dim=-1)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(
            json.dumps({"model_type": "infinite-id-mini-face", **self.config.to_dict()}, indent=2) + "\n"
        )
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MiniFaceEncoder:
        directory = Path(directory)
        config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not a mini face encoder folder (needs {CONFIG_NAME}, {WEIGHTS_NAME})"
            )
        model = cls(FaceEncoderConfig.from_dict(json.loads(config_file.read_text())))
        state = load_file(str(weights_file))
        expected = model.state_dict()
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        wrong = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"{weights_file} does not match its config: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}, wrong shape {sorted(wrong)[:5]}"
            )
        model.load_state_dict(state)
        return model.eval()
