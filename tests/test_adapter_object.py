"""The adapter as one object: built by the file reader and the IP-Adapter importer alike, checked before it changes
the pipeline, received through ``pipe.set_adapter``, and a new family is one subclass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import FACE_DIM, tiny_image_encoder

from infinite_id.adapter import AdapterError, IdentityAdapter
from infinite_id.faces.base import FaceEncoderInfo
from infinite_id.identity import IdentityFeatures

TEST_FACE = FaceEncoderInfo(backend="precomputed", model="test", dim=FACE_DIM)


def _run(pipe, reference, **kwargs):
    image, embed = reference
    return pipe(
        "a photo", id_images=image, face_embeds=embed, num_inference_steps=2, output_type="np",
        generator=torch.Generator().manual_seed(0), **kwargs,
    ).images  # fmt: skip


def test_an_adapter_read_from_a_file_and_set_is_the_loaded_one(make_pipe, reference, tmp_path):
    path = make_pipe("sd15").save_adapter(tmp_path / "a.safetensors")
    loaded = make_pipe("sd15", adapter=False)
    loaded.load_adapter(path)
    pipe = make_pipe("sd15", adapter=False)
    adapter = IdentityAdapter.from_file(path, pipe.image_encoder, pipe.feature_extractor)
    assert pipe.set_adapter(adapter) is adapter and pipe.adapter is adapter
    assert pipe.image_proj is adapter.projection and pipe.adapter_metadata is adapter.metadata
    assert pipe.identity_encoder is adapter.identity_encoder  # one code path, whatever the family
    np.testing.assert_allclose(_run(pipe, reference), _run(loaded, reference), atol=1e-6)
    pipe.unload_adapter()
    with pytest.raises(RuntimeError, match="already handed"):  # never a silent re-initialisation from the text
        pipe.set_adapter(adapter)


def test_an_adapter_is_checked_before_it_changes_the_pipeline(make_pipe, tmp_path):
    path = make_pipe("sd15").save_adapter(tmp_path / "a.safetensors")
    sdxl = make_pipe("sdxl", adapter=False)
    processors = dict(sdxl.unet.attn_processors)
    with pytest.raises(AdapterError, match="sd15 base model"):
        sdxl.set_adapter(IdentityAdapter.from_file(path, sdxl.image_encoder, sdxl.feature_extractor))
    wide, processor = tiny_image_encoder(hidden=48)
    pipe = make_pipe("sd15", adapter=False)
    with pytest.raises(AdapterError, match="width 48"):
        pipe.set_adapter(IdentityAdapter.from_file(path, wide, processor))
    assert pipe.adapter is None and pipe.image_encoder is not wide  # nothing registered
    assert dict(sdxl.unet.attn_processors) == processors

    class DlibAnalyzer:
        info = FaceEncoderInfo(backend="dlib", model="dlib_face_recognition_resnet_model_v1", dim=128)

    pipe.set_face_analyzer(DlibAnalyzer())
    with pytest.raises(ValueError, match="dlib"):
        pipe.set_adapter(IdentityAdapter.from_file(path, pipe.image_encoder, pipe.feature_extractor))
    assert pipe.adapter is None


def test_encode_refuses_embeddings_of_another_width(make_pipe):
    adapter = make_pipe("sd15").adapter
    clip = torch.zeros(1, 17, adapter.metadata.projection.clip_dim)
    with pytest.raises(AdapterError, match=f"{FACE_DIM + 1} dimensions"):
        adapter.encode(IdentityFeatures(torch.zeros(1, FACE_DIM + 1), clip))
    cond, uncond = adapter.encode(IdentityFeatures(torch.zeros(2, FACE_DIM), clip.expand(2, -1, -1)), "mean")
    assert cond.shape == uncond.shape == (1, adapter.projection.config.num_id_tokens, 32)


def test_a_new_adapter_family_is_one_class(make_pipe, reference):
    """A family whose tokens ignore CLIP: only its identity encoder differs; the pipeline runs it unchanged."""
    base = make_pipe("sd15")
    ours = base.adapter

    class FaceOnlyEncoder:
        def __init__(self, inner) -> None:
            self.inner = inner

        def features(self, crops, face_embeds):
            return self.inner.features(crops, face_embeds)

        def tokens(self, features):
            return self.inner.tokens(IdentityFeatures(features.face_embeds, torch.zeros_like(features.clip_hidden)))

        def unconditional_features(self, n=1):
            return self.inner.unconditional_features(n)

    class FaceOnlyAdapter(IdentityAdapter):
        family = "face-only"

        def build_identity_encoder(self):
            return FaceOnlyEncoder(super().build_identity_encoder())

    pipe = make_pipe("sd15", adapter=False)
    state = {k: v.clone() for k, v in ours.projection.state_dict().items()}
    projection = type(ours.projection)(ours.projection.config)
    projection.load_state_dict(state)
    from infinite_id.attention_processors import processor_module_list

    cross = {k: v.clone() for k, v in processor_module_list(base.unet).state_dict().items()}
    pipe.set_adapter(FaceOnlyAdapter(projection, ours.metadata, cross, pipe.image_encoder, pipe.feature_extractor))
    assert isinstance(pipe.identity_encoder, FaceOnlyEncoder)
    assert np.abs(_run(pipe, reference) - _run(base, reference)).max() > 1e-5  # its own encoding is used
    pipe.unload_adapter()
    assert pipe.adapter is None and pipe.image_proj is None
