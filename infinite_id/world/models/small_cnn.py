"""Shared pieces of the miniature world's small CNNs: a residual backbone and safetensors save/load.

A saved model is a folder with ``config.json`` (the config dataclass plus a ``model_type`` tag) and
``model.safetensors``. Loading checks the tag and every tensor's name and shape, so a wrong or truncated file is
refused with a clear error instead of loading half a model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

ConfigT = TypeVar("ConfigT")
ModelT = TypeVar("ModelT", bound="SavableModel")


def config_to_dict(config) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known - {"model_type"}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


class SavableModel(nn.Module):
    """A module with a frozen-dataclass ``config`` that saves to and loads from a folder."""

    model_type: ClassVar[str]
    config_class: ClassVar[type]

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"model_type": self.model_type, **config_to_dict(self.config)}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.detach().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls: type[ModelT], directory: str | Path) -> ModelT:
        directory = Path(directory)
        config_file, weights_file = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_file.is_file() or not weights_file.is_file():
            raise FileNotFoundError(
                f"{directory} is not a {cls.model_type} folder (needs {CONFIG_NAME}, {WEIGHTS_NAME})"
            )
        data = json.loads(config_file.read_text())
        if data.get("model_type") != cls.model_type:
            raise ValueError(f"{config_file} describes a {data.get('model_type')!r}, not a {cls.model_type!r}")
        model = cls(config_from_dict(cls.config_class, data))
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


class ResidualBlock(nn.Module):
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


class ResidualBackbone(nn.Module):
    """Stem at full resolution, then one downsampling residual block per extra width; pooled to a ``grid`` x
    ``grid`` map (2 by default), so the features keep coarse layout (a hat is at the top, a necklace at the
    bottom)."""

    def __init__(self, channels: tuple[int, ...], grid: int = 2) -> None:
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"need at least two widths, got {channels}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU()
        )
        self.blocks = nn.Sequential(*[ResidualBlock(a, b, 2) for a, b in zip(channels, channels[1:], strict=False)])
        self.grid = grid
        self.out_features = channels[-1] * grid * grid

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(pixels.shape)}")
        return F.adaptive_avg_pool2d(self.blocks(self.stem(pixels)), self.grid).flatten(1)
