"""Adapter files: round trip, layout, and clear errors for every kind of mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import FACE_DIM, tiny_image_encoder

from infinite_id.adapter import AdapterError, load_adapter_file
from infinite_id.faces.base import FaceEncoderInfo


def _images(pipe, reference, **kwargs):
    image, embed = reference
    return pipe(
        "a photo of a woman",
        id_images=image,
        face_embeds=embed,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(3),
        **kwargs,
    ).images


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_round_trip_gives_identical_images(family, make_pipe, reference, tmp_path):
    pipe = make_pipe(family, seed=11)
    with torch.no_grad():  # make the ID weights differ from their text-initialised values
        for p in pipe.unet.attn_processors.values():
            for w in p.parameters():
                w.add_(torch.randn_like(w) * 0.05)
    before = _images(pipe, reference)
    path = pipe.save_adapter(tmp_path / "adapter", training={"mode": "identity-enhanced", "steps": 0})
    assert path.suffix == ".safetensors"

    fresh = make_pipe(family, adapter=False)
    metadata = fresh.load_adapter(path)
    assert metadata.base_family == family and metadata.training["mode"] == "identity-enhanced"
    np.testing.assert_array_equal(_images(fresh, reference), before)


def test_file_layout_is_image_proj_and_positional_ip_adapter(make_pipe, tmp_path):
    pipe = make_pipe("sdxl")
    path = pipe.save_adapter(tmp_path / "a.safetensors")
    keys = load_file(str(path)).keys()
    assert all(k.startswith(("image_proj.", "ip_adapter.")) for k in keys)
    ip_keys = sorted(k for k in keys if k.startswith("ip_adapter."))
    processors = list(pipe.unet.attn_processors)
    # IP-Adapter's layout: ip_adapter.{index in attn_processors}.to_{k,v}_ip.weight, on the cross-attention slots
    for k in ip_keys:
        index = int(k.split(".")[1])
        assert processors[index].endswith("attn2.processor"), k
    assert len(ip_keys) == 2 * sum(name.endswith("attn2.processor") for name in processors)
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["infinite_id"])
    assert meta["base_family"] == "sdxl" and meta["face_encoder"]["dim"] == FACE_DIM
    assert meta["projection"]["face_num_tokens"] == 4 and meta["format"] == "infinite-id-adapter"


def test_wrong_family_is_refused_with_a_sentence(make_pipe, tmp_path):
    path = make_pipe("sd15").save_adapter(tmp_path / "sd15.safetensors")
    sdxl = make_pipe("sdxl", adapter=False)
    with pytest.raises(AdapterError, match="trained for a sd15 base model.*sdxl"):
        sdxl.load_adapter(path)


def test_wrong_shape_is_refused_with_a_sentence(make_pipe, tmp_path):
    path = make_pipe("sd15").save_adapter(tmp_path / "a.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        header = f.metadata()
    key = next(k for k in tensors if k.endswith("to_k_ip.weight"))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(path), metadata=header)
    with pytest.raises(AdapterError, match="wrong shapes.*to_k_ip"):
        make_pipe("sd15", adapter=False).load_adapter(path)


def test_wrong_image_encoder_is_refused(make_pipe, tmp_path):
    path = make_pipe("sd15").save_adapter(tmp_path / "a.safetensors")
    pipe = make_pipe("sd15", adapter=False)
    wide, processor = tiny_image_encoder(hidden=48)
    with pytest.raises(AdapterError, match="CLIP image encoder.*width 48"):
        pipe.load_adapter(path, image_encoder=wide, feature_extractor=processor)


def test_wrong_face_encoder_is_refused(make_pipe, reference, tmp_path):
    pipe = make_pipe("sd15")
    image, embed = reference
    with pytest.raises(AdapterError, match=f"{FACE_DIM + 1} dimensions"):
        pipe("x", id_images=image, face_embeds=np.zeros(FACE_DIM + 1, "float32"), num_inference_steps=1)

    class OtherAnalyzer:
        info = FaceEncoderInfo(backend="dlib", model="dlib_face_recognition_resnet_model_v1", dim=128)

    with pytest.raises(ValueError, match="dlib"):
        pipe.set_face_analyzer(OtherAnalyzer())


def test_corrupt_missing_and_foreign_files(tmp_path, make_pipe):
    pipe = make_pipe("sd15", adapter=False)
    with pytest.raises(FileNotFoundError):
        pipe.load_adapter(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match="not a readable safetensors"):
        load_adapter_file(bad)
    foreign = tmp_path / "ip-adapter.safetensors"
    save_file({"image_proj.proj.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(AdapterError, match="no Infinite-ID metadata"):
        load_adapter_file(foreign)


def test_save_is_atomic_and_keeps_the_previous_file(make_pipe, tmp_path, monkeypatch):
    import infinite_id.adapter as adapter_module

    pipe = make_pipe("sd15")
    path = pipe.save_adapter(tmp_path / "a.safetensors")
    original = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(adapter_module, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        pipe.save_adapter(path)
    assert path.read_bytes() == original
