"""Metrics on tiny random models and on known cases: an image against itself, against noise, equivalences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from infinite_id.evaluation.metrics import (
    ClipScorer,
    DinoScorer,
    FaceScore,
    FaceSimilarity,
    NoReferenceFaceError,
    choose_face_backend,
    cosine_matrix,
    summarize_face_scores,
)


@pytest.fixture
def clip_scorer(tiny_clip):
    model, tokenizer, processor = tiny_clip
    return ClipScorer(model, tokenizer=tokenizer, image_processor=processor)


def test_cosine_matrix_known_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    expected = torch.tensor([[1.0, 2**-0.5, -1.0], [0.0, 2**-0.5, 0.0]])
    assert torch.allclose(cosine_matrix(a, b), expected, atol=1e-6)


def test_clip_i_image_against_itself_is_one_and_noise_is_lower(clip_scorer, images):
    photo, noise = images.smooth(0), images.noise(1)
    self_sim = clip_scorer.clip_i([photo], [photo])
    noise_sim = clip_scorer.clip_i([photo], [noise])
    assert torch.allclose(self_sim, torch.ones(1), atol=1e-5)
    assert noise_sim.item() < 1 - 1e-3
    assert -1.0 <= noise_sim.item() <= 1.0
    # symmetric, and several references are averaged
    assert torch.allclose(clip_scorer.clip_i([noise], [photo]), noise_sim, atol=1e-5)
    both = clip_scorer.clip_i([photo], [photo, noise])
    assert torch.allclose(both, (self_sim + noise_sim) / 2, atol=1e-5)


def test_clip_t_matches_the_model_and_does_not_depend_on_batching(clip_scorer, tiny_clip, images):
    model, tokenizer, processor = tiny_clip
    pictures = [images.smooth(0), images.noise(1), images.smooth(2)]
    prompts = ["a photo of a man in the snow", "a woman in anime style", "a photo of a man"]
    scores = clip_scorer.clip_t(pictures, prompts)
    with torch.no_grad():
        ids = tokenizer(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        text = model.get_text_features(input_ids=ids.input_ids, attention_mask=ids.attention_mask)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
        pixels = processor(images=pictures, return_tensors="pt").pixel_values
        image = model.get_image_features(pixel_values=pixels)
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
    manual = torch.nn.functional.cosine_similarity(text, image, dim=-1)
    assert torch.allclose(scores, manual, atol=1e-5)
    clip_scorer.batch_size = 1
    single = torch.cat([clip_scorer.clip_t([p], t) for p, t in zip(pictures, prompts, strict=True)])
    assert torch.allclose(single, scores, atol=1e-5)
    with pytest.raises(ValueError, match="2 prompts"):
        clip_scorer.clip_t(pictures, prompts[:2])


def test_text_and_vision_pair_equals_clip_model(clip_scorer, tiny_clip, images):
    model, tokenizer, processor = tiny_clip
    text_model = CLIPTextModelWithProjection(
        model.config.text_config.__class__(
            **{**model.config.text_config.to_dict(), "projection_dim": model.config.projection_dim}
        )
    )
    vision_model = CLIPVisionModelWithProjection(
        model.config.vision_config.__class__(
            **{**model.config.vision_config.to_dict(), "projection_dim": model.config.projection_dim}
        )
    )
    state = model.state_dict()
    for sub, prefixes in (
        (text_model, ("text_model.", "text_projection.")),
        (vision_model, ("vision_model.", "visual_projection.")),
    ):
        missing, _ = sub.load_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)}, strict=False)
        assert not [k for k in missing if "position_ids" not in k]
    pair = ClipScorer(text_model=text_model, vision_model=vision_model, tokenizer=tokenizer, image_processor=processor)
    pictures, prompts = [images.smooth(0), images.noise(3)], ["a man", "a woman in oil painting style"]
    assert torch.allclose(pair.clip_t(pictures, prompts), clip_scorer.clip_t(pictures, prompts), atol=1e-5)
    assert torch.allclose(
        pair.clip_i(pictures, [images.smooth(5)]), clip_scorer.clip_i(pictures, [images.smooth(5)]), atol=1e-5
    )
    with pytest.raises(ValueError, match="not both"):
        ClipScorer(model, text_model=text_model, tokenizer=tokenizer, image_processor=processor)


def test_clip_scorer_round_trips_through_from_pretrained(clip_scorer, tiny_clip, images, tmp_path):
    model, tokenizer, processor = tiny_clip
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = ClipScorer.from_pretrained(str(tmp_path))
    pictures = [images.smooth(0), images.noise(1)]
    assert torch.allclose(
        loaded.clip_t(pictures, "a photo of a man"), clip_scorer.clip_t(pictures, "a photo of a man"), atol=1e-5
    )


def test_dino_known_cases_and_loading(tiny_dino, images, tmp_path):
    model, processor = tiny_dino
    dino = DinoScorer(model, processor)
    photo, noise = images.smooth(0), images.noise(1)
    assert torch.allclose(dino.similarity([photo], [photo]), torch.ones(1), atol=1e-5)
    assert dino.similarity([photo], [noise]).item() < 1 - 1e-3
    with torch.no_grad():
        cls = model(pixel_values=processor(images=[photo], return_tensors="pt").pixel_values).last_hidden_state[:, 0]
    assert torch.allclose(dino.image_embeds([photo]), torch.nn.functional.normalize(cls, dim=-1), atol=1e-5)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = DinoScorer.from_pretrained(str(tmp_path))
    assert torch.allclose(loaded.similarity([photo], [noise]), dino.similarity([photo], [noise]), atol=1e-5)


def test_face_similarity_itself_noise_and_missing_reference(eval_face_analyzer, images):
    face = FaceSimilarity(eval_face_analyzer)
    photo, other, noise = images.smooth(0), images.smooth(9), images.noise(1)
    refs = face.reference([photo])
    assert refs.shape == (1, 32)
    same = face.score(photo, refs)
    assert same.detected and same.similarity == pytest.approx(1.0, abs=1e-5) and same.num_faces == 1
    different = face.score(other, refs)
    assert different.detected and different.similarity < 0.99
    none = face.score(noise, refs)
    assert none == FaceScore(detected=False, similarity=None, num_faces=0)
    with pytest.raises(NoReferenceFaceError, match="noise.png"):
        face.reference([noise], names=["noise.png"])
    with pytest.raises(TypeError, match="detect"):
        FaceSimilarity(object())


def test_detection_rate_accounting():
    scores = [FaceScore(True, 0.8, 1), FaceScore(True, 0.4, 2), FaceScore(False, None, 0), FaceScore(False, None, 0)]
    summary = summarize_face_scores(scores)
    assert summary["face_sim"] == pytest.approx(0.3)  # (0.8 + 0.4 + 0 + 0) / 4
    assert summary["face_sim_detected"] == pytest.approx(0.6)
    assert summary["face_detection_rate"] == pytest.approx(0.5)
    assert summary["n_images"] == 4
    nothing = summarize_face_scores([FaceScore(False, None, 0)])
    assert nothing["face_sim"] == 0.0 and nothing["face_sim_detected"] is None and nothing["face_detection_rate"] == 0


def test_choose_face_backend_prefers_an_independent_encoder():
    assert choose_face_backend("insightface", ["insightface", "dlib"]) == "dlib"
    assert choose_face_backend("dlib", ["insightface", "dlib"]) == "insightface"
    assert choose_face_backend("insightface", ["insightface"]) == "insightface"
    with pytest.raises(RuntimeError, match="no face backend"):
        choose_face_backend("dlib", [])


def test_real_face_encoder_known_cases(images):
    """With a real encoder (dlib, carried by PyPI packages): a photo matches itself, noise has no face."""
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    from infinite_id.faces import get_face_analyzer
    from infinite_id.faces.errors import BackendUnavailableError

    try:
        analyzer = get_face_analyzer("dlib")
    except BackendUnavailableError as exc:
        pytest.skip(f"dlib backend unavailable: {exc}")
    face = FaceSimilarity(analyzer)
    photo = Image.fromarray(skimage_data.astronaut())
    refs = face.reference([photo])
    assert face.score(photo, refs).similarity == pytest.approx(1.0, abs=1e-4)
    flipped = face.score(photo.transpose(Image.FLIP_LEFT_RIGHT), refs)
    assert flipped.detected and flipped.similarity > 0.9
    assert not face.score(images.noise(0, size=256), refs).detected
    assert np.isclose(np.linalg.norm(refs[0]), 1.0, atol=1e-5)
