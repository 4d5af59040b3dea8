"""Existing IP-Adapter face weights (released key layouts, tiny sizes) as the identity stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from ip_adapter_layouts import HEAD_DIM, image_proj, ip_adapter, save
from tiny_models import FACE_DIM, tiny_image_encoder

from infinite_id.adapter import AdapterError
from infinite_id.faces.base import FaceEncoderInfo
from infinite_id.loaders import detect_ip_adapter_kind, is_ip_adapter_file, load_ip_adapter, read_ip_adapter_file

PROMPT = "a woman in comic book style"
TEST_FACE = FaceEncoderInfo(backend="precomputed", model="test", dim=FACE_DIM)


def _files(tmp_path, pipe, kind, suffix, lora_rank=0, name=None, seed=0, **layout):
    g = torch.Generator().manual_seed(seed)
    cross = pipe.unet.config.cross_attention_dim
    clip = pipe.image_encoder.config.projection_dim if kind == "plain" else pipe.image_encoder.config.hidden_size
    path = tmp_path / (name or f"ip-adapter-{kind}{suffix}")
    save(path, image_proj(kind, cross, clip, FACE_DIM, g, **layout), ip_adapter(pipe.unet, g, lora_rank))
    return path


def _generate(pipe, reference, **kwargs):
    image, embed = reference
    kwargs.setdefault("num_inference_steps", 2)
    return pipe(
        PROMPT, id_images=image, face_embeds=embed, generator=torch.Generator().manual_seed(0), output_type="np",
        **kwargs,
    )  # fmt: skip


def _plain(tiny_model_dirs, family):
    plain = DiffusionPipeline.from_pretrained(tiny_model_dirs[family])
    plain.set_progress_bar_config(disable=True)
    gen = torch.Generator().manual_seed(0)
    return plain(PROMPT, num_inference_steps=2, guidance_scale=5.0, generator=gen, output_type="np").images


CASES = [  # kind, family, suffix, LoRA rank, layout (see ip_adapter_layouts.image_proj), expected ID tokens
    ("plain", "sd15", ".bin", 0, {}, 4),
    ("plus", "sd15", ".bin", 0, {}, 16),
    ("plus", "sdxl", ".safetensors", 0, {"width": 40}, 16),  # the _sdxl_vit-h Resampler: narrower than its output
    ("full", "sd15", ".safetensors", 0, {}, 17),
    ("faceid", "sd15", ".bin", 4, {}, 4),
    ("faceid", "sdxl", ".safetensors", 4, {}, 4),
    ("faceid", "sd15", ".bin", 0, {"tokens": 16}, 16),  # FaceID-Portrait: 16 tokens, no LoRA
    ("faceid-plus", "sd15", ".safetensors", 4, {}, 4),
    ("faceid-plus", "sdxl", ".bin", 4, {}, 4),
]
CASE_IDS = [f"{c[0]}{'-portrait' if c[4].get('tokens') else ''}-{c[1]}{c[2]}" for c in CASES]


@pytest.mark.parametrize(("kind", "family", "suffix", "rank", "layout", "tokens"), CASES, ids=CASE_IDS)
def test_released_layouts_drive_mixed_attention_and_adain(kind, family, suffix, rank, layout, tokens, tmp_path,
                                                          make_pipe, reference, tiny_model_dirs):  # fmt: skip
    pipe = make_pipe(family, adapter=False)
    path = _files(tmp_path, pipe, kind, suffix, rank, **layout)
    assert is_ip_adapter_file(path)
    assert detect_ip_adapter_kind(read_ip_adapter_file(path)[0]) == kind
    info = load_ip_adapter(pipe, path, face_encoder=TEST_FACE, lora="skip")
    assert info.kind == kind and info.base_family == family
    assert info.lora == ("skipped" if rank else "none")
    cond, uncond = pipe.encode_identity(reference[0], face_embeds=reference[1])
    assert cond.shape == uncond.shape == (1, tokens, pipe.unet.config.cross_attention_dim)
    if kind == "plus":
        assert info.projection.width == layout.get("width", pipe.unet.config.cross_attention_dim)
    assert not torch.allclose(cond, uncond)

    out = _generate(pipe, reference, return_text_stream=True, adain=True)
    # The UNet is untouched (LoRA skipped): the text stream is the plain base model, the identity stream differs.
    np.testing.assert_allclose(out.text_images, _plain(tiny_model_dirs, family), atol=1e-4)
    assert np.abs(out.images - out.text_images).max() > 1e-3
    # Scale 0 without mixed attention: the identity stream is the text stream.
    off = _generate(pipe, reference, return_text_stream=True, id_scale=0.0, self_attention="independent")
    np.testing.assert_allclose(off.images, off.text_images, atol=1e-4)


def test_faceid_lora_is_fused_into_every_attention_layer(tmp_path, make_pipe, reference, tiny_model_dirs):
    pipe = make_pipe("sd15", adapter=False)
    path = _files(tmp_path, pipe, "faceid", ".bin", lora_rank=4)
    _, ip = read_ip_adapter_file(path)
    first = next(iter(pipe.unet.attn_processors)).removesuffix(".processor")
    to_q = dict(pipe.unet.named_modules())[first].to_q
    before = to_q.weight.detach().clone()
    info = load_ip_adapter(pipe, path, face_encoder=TEST_FACE, lora="fuse", lora_scale=0.5)
    assert info.lora == f"fused into {len(pipe.unet.attn_processors)} attention layers"
    expected = before + 0.5 * ip["0.to_q_lora.up.weight"] @ ip["0.to_q_lora.down.weight"]
    torch.testing.assert_close(to_q.weight.detach(), expected)
    out = _generate(pipe, reference, return_text_stream=True)
    assert np.abs(out.text_images - _plain(tiny_model_dirs, "sd15")).max() > 1e-4  # both streams see the LoRA


def test_lora_error_mode_refuses_before_touching_the_unet(tmp_path, make_pipe):
    pipe = make_pipe("sd15", adapter=False)
    path = _files(tmp_path, pipe, "faceid", ".safetensors", lora_rank=4)
    with pytest.raises(AdapterError, match="LoRA"):
        load_ip_adapter(pipe, path, face_encoder=TEST_FACE, lora="error")
    assert pipe.image_proj is None


def _layer_norm(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"], sd[name + ".bias"])


def _reference_perceiver(sd, prefix, features, latents):
    """The perceiver resampler, written independently with F.scaled_dot_product_attention."""
    x = F.linear(features, sd[prefix + "proj_in.weight"], sd[prefix + "proj_in.bias"])
    depth = len({k.split(".")[len(prefix.split("."))] for k in sd if k.startswith(prefix + "layers.")})
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        xn, ln = _layer_norm(x, sd, p + "0.norm1"), _layer_norm(latents, sd, p + "0.norm2")
        heads = sd[p + "0.to_q.weight"].shape[0] // HEAD_DIM
        q = F.linear(ln, sd[p + "0.to_q.weight"])
        k, v = F.linear(torch.cat([xn, ln], 1), sd[p + "0.to_kv.weight"]).chunk(2, -1)
        q, k, v = (t.unflatten(-1, (heads, HEAD_DIM)).transpose(1, 2) for t in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        latents = latents + F.linear(att, sd[p + "0.to_out.weight"])
        h = F.linear(_layer_norm(latents, sd, p + "1.0"), sd[p + "1.1.weight"])
        latents = latents + F.linear(F.gelu(h), sd[p + "1.3.weight"])
    out = F.linear(latents, sd[prefix + "proj_out.weight"], sd[prefix + "proj_out.bias"])
    return _layer_norm(out, sd, prefix + "norm_out")


@pytest.mark.parametrize("shortcut", [False, True], ids=["faceid-plus", "faceid-plusv2"])
def test_faceid_plus_projection_matches_the_published_formula(shortcut, tmp_path, make_pipe):
    pipe = make_pipe("sd15", adapter=False)
    name = "ip-adapter-faceid-plusv2_sd15.bin" if shortcut else "ip-adapter-faceid-plus_sd15.bin"
    path = _files(tmp_path, pipe, "faceid-plus", ".bin", name=name)
    info = load_ip_adapter(pipe, path, face_encoder=TEST_FACE, shortcut_scale=0.7)
    assert info.projection.shortcut is shortcut  # V2 is told by the file name
    sd, _ = read_ip_adapter_file(path)
    g = torch.Generator().manual_seed(1)
    clip, face = torch.randn(2, 17, 32, generator=g), torch.randn(2, FACE_DIM, generator=g)
    d = pipe.unet.config.cross_attention_dim
    h = F.linear(
        F.gelu(F.linear(face, sd["proj.0.weight"], sd["proj.0.bias"])), sd["proj.2.weight"], sd["proj.2.bias"]
    )
    tokens = _layer_norm(h.reshape(2, 4, d), sd, "norm")
    out = _reference_perceiver(sd, "perceiver_resampler.", clip, tokens)
    expected = tokens + 0.7 * out if shortcut else out
    torch.testing.assert_close(pipe.image_proj(clip, face), expected, atol=1e-5, rtol=1e-4)


def test_plus_resampler_matches_the_published_formula(tmp_path, make_pipe):
    pipe = make_pipe("sdxl", adapter=False)
    path = _files(tmp_path, pipe, "plus", ".safetensors")
    load_ip_adapter(pipe, path, face_encoder=TEST_FACE)
    sd, _ = read_ip_adapter_file(path)
    clip = torch.randn(3, 17, 32, generator=torch.Generator().manual_seed(2))
    expected = _reference_perceiver(sd, "", clip, sd["latents"].expand(3, -1, -1))
    torch.testing.assert_close(pipe.image_proj(clip, None), expected, atol=1e-5, rtol=1e-4)


def test_vit_h_adapter_with_a_bigg_encoder_is_a_clear_error(tmp_path, make_pipe):
    pipe = make_pipe("sdxl", adapter=False)
    path = _files(tmp_path, pipe, "plus", ".safetensors", name="ip-adapter-plus-face_sdxl_vit-h.safetensors")
    wider, processor = tiny_image_encoder(hidden=48)  # stands in for ViT-bigG next to the file's "ViT-H"
    with pytest.raises(AdapterError, match=r"image encoder mismatch.*width 32.*width 48.*ViT-H.*ViT-bigG"):
        load_ip_adapter(pipe, path, image_encoder=wider, feature_extractor=processor, face_encoder=TEST_FACE)
    assert pipe.image_proj is None


def test_adapter_for_another_base_model_is_a_clear_error(tmp_path, make_pipe):
    sdxl = make_pipe("sdxl", adapter=False)
    path = _files(tmp_path, sdxl, "faceid", ".bin", lora_rank=4)
    sd15 = make_pipe("sd15", adapter=False)
    with pytest.raises(AdapterError, match="width 64"):
        load_ip_adapter(sd15, path, face_encoder=TEST_FACE)


def test_faceid_defaults_to_the_face_encoder_it_was_trained_with(tmp_path, make_pipe):
    pipe = make_pipe("sd15", adapter=False)
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "ip-adapter-faceid_sd15.bin"
    save(path, image_proj("faceid", 32, 32, 512, g), ip_adapter(pipe.unet, g))
    load_ip_adapter(pipe, path)
    assert pipe.adapter_metadata.face_encoder == FaceEncoderInfo("insightface", "buffalo_l", 512)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return {}


def test_pickles_that_need_code_are_refused_unrun(tmp_path, make_pipe):
    path = tmp_path / "evil.bin"
    torch.save({"image_proj": {"x": torch.zeros(1)}, "ip_adapter": _Payload()}, str(path))
    with pytest.raises(AdapterError, match="weights_only"):
        read_ip_adapter_file(path)
    assert not _Payload.ran


def test_infinite_id_adapters_and_ip_adapters_are_told_apart(tmp_path, make_pipe):
    ours = make_pipe("sd15")
    saved = ours.save_adapter(tmp_path / "ours.safetensors")
    assert not is_ip_adapter_file(saved)
    with pytest.raises(AdapterError, match="load_adapter"):
        read_ip_adapter_file(saved)
    theirs = _files(tmp_path, ours, "plus", ".safetensors")
    with pytest.raises(AdapterError, match="infinite_id.loaders.ip_adapter"):
        ours.load_adapter(theirs)


def test_faceid_lora_is_added_once_and_taken_out_on_unload(tmp_path, make_pipe, reference):
    pipe = make_pipe("sd15", adapter=False)
    path = _files(tmp_path, pipe, "faceid", ".bin", lora_rank=4)
    first = next(iter(pipe.unet.attn_processors)).removesuffix(".processor")
    to_q = dict(pipe.unet.named_modules())[first].to_q
    base = to_q.weight.detach().clone()
    load_ip_adapter(pipe, path, face_encoder=TEST_FACE)
    fused = to_q.weight.detach().clone()
    assert not torch.allclose(fused, base)
    load_ip_adapter(pipe, path, face_encoder=TEST_FACE)  # reload: replaced, not added again
    torch.testing.assert_close(to_q.weight.detach(), fused)
    pipe.unload_adapter()
    torch.testing.assert_close(to_q.weight.detach(), base)
    load_ip_adapter(pipe, path, face_encoder=TEST_FACE)  # after unload: once again
    torch.testing.assert_close(to_q.weight.detach(), fused)
    load_ip_adapter(pipe, path, face_encoder=TEST_FACE, lora="skip")  # another load without LoRA takes it out
    torch.testing.assert_close(to_q.weight.detach(), base)


def test_an_image_encoder_without_a_feature_extractor_gets_clip_preprocessing(tmp_path, make_pipe, reference):
    pipe = make_pipe("sdxl", adapter=False)
    path = _files(tmp_path, pipe, "plus", ".safetensors", width=40)
    encoder = pipe.image_encoder
    pipe.register_modules(image_encoder=None, feature_extractor=None)  # an SDXL folder without them
    load_ip_adapter(pipe, path, image_encoder=encoder, face_encoder=TEST_FACE)
    size = encoder.config.image_size
    assert pipe.feature_extractor.crop_size == {"height": size, "width": size}
    cond, _ = pipe.encode_identity(reference[0], face_embeds=reference[1])
    assert cond.shape == (1, 16, pipe.unet.config.cross_attention_dim)


def test_ip_adapter_imports_are_adapter_objects_set_through_the_public_method(tmp_path, make_pipe):
    from infinite_id.loaders import IPAdapter

    pipe = make_pipe("sd15", adapter=False)
    path = _files(tmp_path, pipe, "faceid", ".bin", lora_rank=4)
    info = load_ip_adapter(pipe, path, face_encoder=TEST_FACE)
    assert isinstance(pipe.adapter, IPAdapter) and pipe.adapter.info is info
    assert pipe.identity_encoder is pipe.adapter.identity_encoder
    assert info.lora.startswith("fused into") and pipe.adapter_metadata.training["lora"] == info.lora
    # the same object, built without a pipeline, attaches to another one of the same base model
    other = make_pipe("sd15", adapter=False)
    adapter = IPAdapter.from_state_dicts(*read_ip_adapter_file(path), other.unet, source=path.name,
                                         face_encoder=TEST_FACE, lora="skip")  # fmt: skip
    assert other.set_adapter(adapter).info.lora == "skipped"
