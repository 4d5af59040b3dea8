"""The paper's metrics (CLIP-T, CLIP-I, face-identity similarity) plus DINO similarity and the face-detection rate.

Every metric is a raw cosine similarity in [-1, 1] (no CLIPScore x100 / x2.5 scaling): the paper's CLIP-T of
about 0.34 is a raw cosine. The scorers take models as objects, not names, so any model works:

* :class:`ClipScorer`: a transformers ``CLIPModel``, or a text and a vision model with projections
  (``CLIPTextModelWithProjection`` + ``CLIPVisionModelWithProjection``, or the miniature world's own), plus their
  tokenizer and image processor.
* :class:`DinoScorer`: any transformers vision backbone whose ``last_hidden_state[:, 0]`` is the class token
  (``Dinov2Model``, DINO ``ViTModel``), compared as DreamBooth's DINO metric does.
* :class:`FaceSimilarity`: any face analyzer with ``detect(image) -> faces (largest first)`` and
  ``embed(image, face) -> vector`` (``infinite_id.faces.FaceAnalyzer``: ArcFace, dlib, ...). Evaluate with an
  encoder *other* than the one the adapter was trained on (:func:`choose_face_backend`), as the paper does.

A generated image in which the analyzer finds no face has no identity similarity. :func:`summarize_face_scores`
reports it both ways: counted as 0 (``face_sim``, the headline number) and left out (``face_sim_detected``),
next to the detection rate, so no method can look better by losing faces.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ..errors import UserInputError

__all__ = [
    "ClipScorer",
    "DinoScorer",
    "FaceEmbedder",
    "FaceScore",
    "FaceSimilarity",
    "NoReferenceFaceError",
    "OTHER_PHOTOS_DIR",
    "choose_face_backend",
    "cosine_matrix",
    "summarize",
    "summarize_face_scores",
]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(n, d) x (m, d) -> (n, m)`` cosine similarities, computed in float32."""
    a = torch.nn.functional.normalize(torch.as_tensor(a).float(), dim=-1)
    b = torch.nn.functional.normalize(torch.as_tensor(b).float(), dim=-1)
    return a @ b.T


def _rgb(images: Image.Image | Sequence[Image.Image]) -> list[Image.Image]:
    images = [images] if isinstance(images, Image.Image) else list(images)
    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"metrics take PIL images, got {type(image).__name__}")
    return [image.convert("RGB") for image in images]


def _first_param(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _features(output: Any, names: Sequence[str]) -> torch.Tensor:
    """The embedding tensor in a model output (transformers 4 returns tensors, 5 returns output objects)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in names:
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"cannot find an embedding ({', '.join(names)}) in {type(output).__name__}")


class ClipScorer:
    """CLIP-T (image vs prompt) and CLIP-I (image vs reference image) with any CLIP-like model pair.

    Args:
        model: a ``CLIPModel`` (or anything with ``get_text_features``/``get_image_features``).
        text_model, vision_model: instead of ``model``, a text and a vision model with projections (their
            outputs carry ``text_embeds`` / ``image_embeds``).
        tokenizer: the text model's tokenizer.
        image_processor: its ``CLIPImageProcessor`` (or any callable giving ``pixel_values``).
        batch_size: images or prompts per forward pass.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        *,
        text_model: torch.nn.Module | None = None,
        vision_model: torch.nn.Module | None = None,
        tokenizer,
        image_processor,
        batch_size: int = 16,
    ) -> None:
        if model is None and (text_model is None or vision_model is None):
            raise ValueError("give a CLIP model, or both text_model and vision_model")
        if model is not None and (text_model is not None or vision_model is not None):
            raise ValueError("give either a CLIP model or a text/vision pair, not both")
        self.model, self.text_model, self.vision_model = model, text_model, vision_model
        for m in (model, text_model, vision_model):
            if m is not None:
                m.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.batch_size = int(batch_size)
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls, path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, **kwargs
    ) -> ClipScorer:
        """Load a transformers CLIP folder or hub id (``openai/clip-vit-large-patch14``, ...)."""
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        model = CLIPModel.from_pretrained(path, torch_dtype=dtype).to(device)
        return cls(
            model,
            tokenizer=AutoTokenizer.from_pretrained(path),
            image_processor=CLIPImageProcessor.from_pretrained(path),
            **kwargs,
        )

    def describe(self) -> str:
        m = self.model if self.model is not None else self.vision_model
        return str(getattr(m.config, "_name_or_path", "") or type(m).__name__)

    def _max_length(self) -> int:
        m = self.model if self.model is not None else self.text_model
        config = getattr(m.config, "text_config", m.config)
        limit = getattr(config, "max_position_embeddings", 77)
        tok_limit = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(limit, tok_limit))

    @torch.no_grad()
    def text_embeds(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``(n, d)`` (float32, CPU); prompts longer than the model's context are cut."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        text = self.model if self.model is not None else self.text_model
        param = _first_param(text)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            tokens = self.tokenizer(
                chunk, padding="max_length", truncation=True, max_length=self._max_length(), return_tensors="pt"
            )
            ids = tokens["input_ids"].to(param.device)
            mask = tokens.get("attention_mask")
            mask = None if mask is None else mask.to(param.device)
            if self.model is not None:
                out = _features(
                    self.model.get_text_features(input_ids=ids, attention_mask=mask), ("pooler_output", "text_embeds")
                )
            else:
                out = _features(self.text_model(input_ids=ids, attention_mask=mask), ("text_embeds",))
            out = torch.nn.functional.normalize(out.float(), dim=-1).cpu()
            self._text_cache.update(zip(chunk, out, strict=True))
        return torch.stack([self._text_cache[p] for p in prompts])

    @torch.no_grad()
    def image_embeds(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings ``(n, d)`` (float32, CPU)."""
        images = _rgb(images)
        vision = self.model if self.model is not None else self.vision_model
        param = _first_param(vision)
        rows = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.image_processor(images=images[start : start + self.batch_size], return_tensors="pt")
            pixels = pixels["pixel_values"].to(device=param.device, dtype=param.dtype)
            if self.model is not None:
                out = _features(self.model.get_image_features(pixel_values=pixels), ("pooler_output", "image_embeds"))
            else:
                out = _features(self.vision_model(pixel_values=pixels), ("image_embeds",))
            rows.append(torch.nn.functional.normalize(out.float(), dim=-1).cpu())
        return torch.cat(rows)

    def clip_t(self, images: Image.Image | Sequence[Image.Image], prompts: str | Sequence[str]) -> torch.Tensor:
        """CLIP-T of each image against its prompt (one prompt for all, or one per image): ``(n,)``."""
        images = _rgb(images)
        prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompts) != len(images):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        return (self.image_embeds(images) * self.text_embeds(prompts)).sum(-1)

    def clip_i(
        self,
        images: Image.Image | Sequence[Image.Image],
        references: Image.Image | Sequence[Image.Image] | torch.Tensor,
    ) -> torch.Tensor:
        """CLIP-I of each image: mean cosine to the reference photo(s) (images or their embeddings): ``(n,)``."""
        refs = references if isinstance(references, torch.Tensor) else self.image_embeds(references)
        return cosine_matrix(self.image_embeds(images), refs).mean(dim=1)


class DinoScorer:
    """DINO image similarity: cosine of the class tokens of a self-supervised ViT (DreamBooth's DINO metric).

    Args:
        model: ``Dinov2Model``, a DINO ``ViTModel`` or any model whose ``last_hidden_state[:, 0]`` is a class
            token (the final layer norm applied).
        image_processor: its processor (``AutoImageProcessor``).
    """

    def __init__(self, model: torch.nn.Module, image_processor, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.image_processor = image_processor
        self.batch_size = int(batch_size)

    @classmethod
    def from_pretrained(
        cls, path: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> DinoScorer:
        from transformers import AutoImageProcessor, AutoModel

        model = AutoModel.from_pretrained(path, torch_dtype=dtype).to(device)
        return cls(model, AutoImageProcessor.from_pretrained(path))

    def describe(self) -> str:
        return str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__)

    @torch.no_grad()
    def image_embeds(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        images = _rgb(images)
        param = _first_param(self.model)
        rows = []
        for start in range(0, len(images), self.batch_size):
            pixels = self.image_processor(images=images[start : start + self.batch_size], return_tensors="pt")
            pixels = pixels["pixel_values"].to(device=param.device, dtype=param.dtype)
            hidden = _features(self.model(pixel_values=pixels), ("last_hidden_state",))
            rows.append(torch.nn.functional.normalize(hidden[:, 0].float(), dim=-1).cpu())
        return torch.cat(rows)

    def similarity(
        self,
        images: Image.Image | Sequence[Image.Image],
        references: Image.Image | Sequence[Image.Image] | torch.Tensor,
    ) -> torch.Tensor:
        """Mean cosine of each image's class token to the reference(s): ``(n,)``."""
        refs = references if isinstance(references, torch.Tensor) else self.image_embeds(references)
        return cosine_matrix(self.image_embeds(images), refs).mean(dim=1)


@runtime_checkable
class FaceEmbedder(Protocol):
    """What face similarity needs of a face analyzer (``infinite_id.faces.FaceAnalyzer`` has it)."""

    @property
    def info(self) -> Any: ...

    def detect(self, image: Any) -> list[Any]: ...

    def embed(self, image: Any, face: Any) -> np.ndarray: ...


class NoReferenceFaceError(UserInputError):
    """A reference photo (or another photo of the person) has no detectable face for the evaluation's face
    encoder."""


#: The sub-folder of an identity's folder that holds its other photos: scored against, never conditioned on.
OTHER_PHOTOS_DIR = "others"


@dataclass
class FaceScore:
    """Face similarity of one generated image: ``similarity`` is ``None`` when no face was detected.

    ``has_other``: the identity has other photos (besides the reference the method conditions on);
    ``other_similarity`` is then the mean cosine to them, and the record carries ``face_sim_other`` and
    ``copy_paste_gap`` (similarity to the reference minus to the other photos: how much of the "identity" is a
    copy of the reference photo).
    """

    detected: bool
    similarity: float | None
    num_faces: int
    other_similarity: float | None = None
    has_other: bool = False

    @property
    def copy_paste_gap(self) -> float | None:
        if self.similarity is None or self.other_similarity is None:
            return None
        return self.similarity - self.other_similarity

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"face_detected": self.detected, "face_sim": self.similarity}
        row["num_faces"] = self.num_faces
        if self.has_other:
            row["face_sim_other"] = self.other_similarity
            row["copy_paste_gap"] = self.copy_paste_gap
        return row


class FaceSimilarity:
    """Identity similarity: cosine between the largest face in a generated image and the reference face(s).

    ``analyzer`` is any :class:`FaceEmbedder`. Use an encoder independent of the adapter's training encoder
    (the paper trains with ArcFace and reports FaceNet); :func:`choose_face_backend` picks one.
    """

    def __init__(self, analyzer: FaceEmbedder) -> None:
        for name in ("detect", "embed"):
            if not callable(getattr(analyzer, name, None)):
                raise TypeError(f"the face analyzer needs a {name}() method, {type(analyzer).__name__} has none")
        self.analyzer = analyzer

    def describe(self) -> str:
        info = getattr(self.analyzer, "info", None)
        if info is None:
            return type(self.analyzer).__name__
        return info.describe() if hasattr(info, "describe") else str(info)

    def embed(self, image: Image.Image) -> tuple[np.ndarray | None, int]:
        """The unit embedding of the largest face (``None`` if there is none) and how many faces were found."""
        faces = self.analyzer.detect(image)
        if not faces:
            return None, 0
        largest = max(faces, key=lambda f: getattr(f, "area", 0.0))
        vector = np.asarray(self.analyzer.embed(image, largest), dtype=np.float64).reshape(-1)
        norm = np.linalg.norm(vector)
        if not np.isfinite(norm) or norm < 1e-12:
            return None, len(faces)
        return (vector / norm).astype(np.float32), len(faces)

    def reference(
        self,
        images: Image.Image | Sequence[Image.Image],
        names: Sequence[str] | None = None,
        other: bool = False,
    ) -> np.ndarray:
        """Embeddings ``(n, dim)`` of reference photos (``other``: of other photos of the person, which are scored
        against but not conditioned on); a photo without a face is an error, not a zero."""
        images = _rgb(images)
        rows = []
        for i, image in enumerate(images):
            vector, _ = self.embed(image)
            if vector is None:
                name = names[i] if names is not None else f"{'other photo' if other else 'reference'} #{i}"
                fix = (
                    f"another photo of the person, used only for the copy-paste gap: use a clearer, frontal photo, "
                    f"remove it from the identity's {OTHER_PHOTOS_DIR}/ folder, or use another --face-encoder"
                    if other
                    else "use a clearer, frontal photo of the face, or another --face-encoder"
                )
                raise NoReferenceFaceError(
                    f"the evaluation face encoder ({self.describe()}) finds no face in {name}: {fix}"
                )
            rows.append(vector)
        return np.stack(rows)

    def score(
        self, image: Image.Image, reference_embeds: np.ndarray, other_embeds: np.ndarray | None = None
    ) -> FaceScore:
        """Mean cosine of the generated image's largest face to the reference embeddings, and, given
        ``other_embeds`` (other photos of the person), to those: the copy-paste measure."""
        vector, count = self.embed(_rgb(image)[0])
        has_other = other_embeds is not None and len(other_embeds) > 0
        if vector is None:
            return FaceScore(detected=False, similarity=None, num_faces=count, has_other=has_other)
        score = FaceScore(True, self._mean_cosine(vector, reference_embeds), count, has_other=has_other)
        if has_other:
            score.other_similarity = self._mean_cosine(vector, other_embeds)
        return score

    @staticmethod
    def _mean_cosine(vector: np.ndarray, embeds: np.ndarray) -> float:
        refs = np.asarray(embeds, dtype=np.float32).reshape(-1, vector.shape[0])
        return float(cosine_matrix(torch.from_numpy(vector[None]), torch.from_numpy(refs)).mean())


def summarize(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean, standard deviation (population), standard error and count of the non-missing values."""
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": None, "std": None, "sem": None, "n": 0}
    arr = np.asarray(xs, dtype=np.float64)
    std = float(arr.std())
    return {"mean": float(arr.mean()), "std": std, "sem": std / math.sqrt(len(xs)), "n": len(xs)}


def summarize_face_scores(scores: Sequence[FaceScore | dict]) -> dict[str, float | int | None]:
    """Face metrics over many images, with both treatments of images where no face was detected.

    ``face_sim``: mean with undetected faces counted as 0 (the headline: losing the face costs); ``face_sim_detected``:
    mean over images with a face only; ``face_detection_rate``: the share of images with a face.
    """
    rows = [s.to_dict() if isinstance(s, FaceScore) else s for s in scores]
    if not rows:
        return {"face_sim": None, "face_sim_detected": None, "face_detection_rate": None, "n_images": 0}
    detected = [r["face_sim"] for r in rows if r["face_detected"]]
    with_zero = [r["face_sim"] if r["face_detected"] else 0.0 for r in rows]
    return {
        "face_sim": summarize(with_zero)["mean"],
        "face_sim_detected": summarize(detected)["mean"],
        "face_detection_rate": len(detected) / len(rows),
        "n_images": len(rows),
    }


def choose_face_backend(training_backend: str | None, available: Sequence[str]) -> str:
    """The evaluation face encoder: the first available backend that is not the adapter's training encoder.

    Falls back to the training backend (with the choice recorded in the settings) only when nothing else is
    installed; raises when nothing is available at all.
    """
    available = list(available)
    if not available:
        raise RuntimeError("no face backend is available: install the `faces` extra (dlib-bin or insightface)")
    independent = [b for b in available if b != training_backend]
    return independent[0] if independent else available[0]
