"""Mini-model configs, the compact world tokenizer and the mini face encoder: shapes, save/reload, budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from infinite_id.clip_tokenizer import clip_tokenizer
from infinite_id.world.models import configs
from infinite_id.world.models.compact_tokenizer import world_tokenizer
from infinite_id.world.models.face_model import WEIGHTS_NAME, FaceEncoderConfig, MiniFaceEncoder
from infinite_id.world.scene.captions import caption, sample_mentions
from infinite_id.world.scene.factors import GENDERS, Semantics


@pytest.fixture(scope="module")
def tokenizer() -> CLIPTokenizer:
    return world_tokenizer()


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_world_tokenizer_splits_captions_like_real_clip(tokenizer):
    full = clip_tokenizer()
    rng = np.random.default_rng(0)
    assert len(tokenizer) < 1200
    for _ in range(300):
        semantics = Semantics.sample(rng)
        text = caption(semantics, GENDERS[int(rng.integers(2))], rng, sample_mentions(semantics, rng))
        assert tokenizer.tokenize(text) == full.tokenize(text), text
        assert len(tokenizer(text).input_ids) <= configs.MAX_TOKENS
    assert tokenizer.tokenize("a zebra") != []  # unknown words still tokenise, into pieces


def test_world_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    text = "a photo of a lady wearing a red hoodie, in the snow"
    assert again(text).input_ids == tokenizer(text).input_ids


def test_mini_base_model_shapes_and_reload(tokenizer, tmp_path):
    torch.manual_seed(0)
    vae, unet = configs.make_vae(), configs.make_unet()
    text_encoder = CLIPTextModel(configs.clip_text_config(len(tokenizer)))
    images = torch.rand(2, 3, configs.IMAGE_SIZE, configs.IMAGE_SIZE) * 2 - 1
    latents = vae.encode(images).latent_dist.mode()
    assert latents.shape == (2, configs.LATENT_CHANNELS, configs.LATENT_SIZE, configs.LATENT_SIZE)
    ids = tokenizer(["a man", "a woman in sketch style"], padding="max_length", return_tensors="pt").input_ids
    assert ids.shape == (2, configs.MAX_TOKENS)
    context = text_encoder(ids).last_hidden_state
    noise = unet(latents, torch.tensor([1, 900]), encoder_hidden_states=context).sample
    assert noise.shape == latents.shape
    for name, model, cls in (("vae", vae, AutoencoderKL), ("unet", unet, UNet2DConditionModel)):
        model.save_pretrained(tmp_path / name)
        reloaded = cls.from_pretrained(tmp_path / name)
        assert _params(reloaded) == _params(model)
    text_encoder.save_pretrained(tmp_path / "text_encoder")
    again = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    torch.testing.assert_close(again(ids).last_hidden_state, context)


def test_mini_clip_towers(tokenizer, tmp_path):
    clip = configs.make_clip(len(tokenizer))
    images = torch.rand(2, 3, configs.IMAGE_SIZE, configs.IMAGE_SIZE)
    ids = tokenizer(["a man", "a woman"], padding="max_length", return_tensors="pt").input_ids
    out = clip(input_ids=ids, pixel_values=images)
    assert out.logits_per_image.shape == (2, 2)
    vision = CLIPVisionModelWithProjection(configs.clip_vision_config())
    vision.vision_model.load_state_dict(clip.vision_model.state_dict())
    vision.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    vision.save_pretrained(tmp_path / "image_encoder")
    again = CLIPVisionModelWithProjection.from_pretrained(tmp_path / "image_encoder")
    embeds = torch.nn.functional.normalize(again(pixel_values=images).image_embeds, dim=-1)
    torch.testing.assert_close(embeds, out.image_embeds, atol=1e-5, rtol=1e-4)
    assert again(pixel_values=images).last_hidden_state.shape == (2, (configs.IMAGE_SIZE // 8) ** 2 + 1, 128)


def test_face_encoder_embeds_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = MiniFaceEncoder().eval()
    crops = torch.rand(3, 3, 48, 48) * 2 - 1
    embedding = model(crops)
    assert embedding.shape == (3, FaceEncoderConfig().embedding_dim)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(3))
    model.save_pretrained(tmp_path / "face")
    torch.testing.assert_close(MiniFaceEncoder.from_pretrained(tmp_path / "face")(crops), embedding)
    with pytest.raises(ValueError, match="shape"):
        model(torch.rand(3, 48, 48))


def test_face_encoder_refuses_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="infinite-id-mini-face"):
        MiniFaceEncoder.from_pretrained(tmp_path / "missing")
    MiniFaceEncoder().save_pretrained(tmp_path / "face")
    state = load_file(str(tmp_path / "face" / WEIGHTS_NAME))
    state["head.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "face" / WEIGHTS_NAME))
    with pytest.raises(ValueError, match="wrong shape"):
        MiniFaceEncoder.from_pretrained(tmp_path / "face")
    config = tmp_path / "face" / "config.json"
    config.write_text(config.read_text().replace("infinite-id-mini-face", "something-else"))
    with pytest.raises(ValueError, match="not a 'infinite-id-mini-face'"):
        MiniFaceEncoder.from_pretrained(tmp_path / "face")


def test_all_mini_models_fit_the_weight_budget(tokenizer):
    budget_bytes = 100 * 10**6  # issue #11: shipped weights may grow to 100 MB
    clip = configs.make_clip(len(tokenizer))
    # the base model's text encoder is the mini CLIP's text tower fine-tuned with the UNet: a second copy
    models = [configs.make_vae(), configs.make_unet(), clip, clip.text_model]
    models += [MiniFaceEncoder(), MiniFaceEncoder()]  # the face encoder and the independent evaluation copy
    total = sum(_params(m) for m in models)
    assert total * 4 < 0.9 * budget_bytes  # float32, leaving room for the attribute classifier and adapters
