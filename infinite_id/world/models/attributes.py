"""The miniature world's attribute classifier: exact semantic accuracy of a generated image.

One residual CNN reads a 64x64 image and predicts, with one head each, every attribute a prompt can name
(style, background, clothing kind and colour, accessory) plus the gender word. Comparing its predictions with
:func:`infinite_id.world.scene.captions.parse_prompt` of the prompt gives the exact attribute accuracy of a sample,
a sharper semantic metric than CLIP-T.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..scene.factors import ACCESSORIES, BACKGROUNDS, CLOTHING_COLOURS, CLOTHING_KINDS, GENDERS, STYLES
from .small_cnn import ResidualBackbone, SavableModel

#: Attribute name -> its values, in label order.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "gender": GENDERS,
    "style": STYLES,
    "background": BACKGROUNDS,
    "clothing": CLOTHING_KINDS,
    "clothing_colour": tuple(CLOTHING_COLOURS),
    "accessory": ACCESSORIES,
}


@dataclass(frozen=True)
class AttributeClassifierConfig:
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)


def images_to_tensor(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1]."""
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().float().div(127.5).sub(1.0)


class AttributeClassifier(SavableModel):
    """Image (B, 3, 64, 64) in [-1, 1] -> logits per attribute (dict of (B, n_values))."""

    model_type = "infinite-id-mini-attributes"
    config_class = AttributeClassifierConfig

    def __init__(self, config: AttributeClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or AttributeClassifierConfig()
        self.backbone = ResidualBackbone(self.config.channels)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(self.backbone.out_features, len(values)) for name, values in ATTRIBUTE_VALUES.items()}
        )

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(pixels)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: list[Image.Image]) -> list[dict[str, str]]:
        """The most likely value of every attribute, per image."""
        was_training = self.training
        self.eval()
        logits = self(images_to_tensor(images))
        self.train(was_training)
        names = list(ATTRIBUTE_VALUES)
        best = {n: logits[n].argmax(dim=1).tolist() for n in names}
        return [{n: ATTRIBUTE_VALUES[n][best[n][i]] for n in names} for i in range(len(images))]


def attribute_accuracy(predicted: dict[str, str], named: dict[str, str]) -> float | None:
    """Share of the attributes a prompt names (``parse_prompt(prompt).named()``) that the image shows;
    ``None`` when the prompt names none."""
    checked = [k for k in named if k in ATTRIBUTE_VALUES]
    if not checked:
        return None
    return sum(predicted[k] == named[k] for k in checked) / len(checked)
