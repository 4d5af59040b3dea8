from __future__ import annotations

import pytest
import torch

from infinite_id.identity import combine_tokens, interpolate_identities
from infinite_id.models.projectors import IdentityProjection, IdentityProjectionConfig


@pytest.mark.parametrize("kind,expected_clip_tokens", [("linear", 257), ("mlp", 257), ("resampler", 16)])
def test_projection_shapes(kind, expected_clip_tokens):
    config = IdentityProjectionConfig(
        cross_attention_dim=64, face_dim=512, clip_dim=48, clip_mapper=kind, resampler_depth=1
    )
    proj = IdentityProjection(config)
    tokens = proj(torch.randn(2, 257, 48), torch.randn(2, 512))
    assert tokens.shape == (2, expected_clip_tokens + 4, 64) == (2, config.num_id_tokens, 64)
    assert IdentityProjectionConfig.from_dict(config.to_dict()) == config


def test_projection_rejects_other_encoders_clearly():
    proj = IdentityProjection(IdentityProjectionConfig(cross_attention_dim=32, face_dim=512, clip_dim=48))
    with pytest.raises(ValueError, match="face embedding has 128.*expects 512"):
        proj(torch.randn(1, 5, 48), torch.randn(1, 128))
    with pytest.raises(ValueError, match="width 64.*expects 48"):
        proj(torch.randn(1, 5, 64), torch.randn(1, 512))


def test_face_tokens_depend_on_the_face_and_clip_tokens_on_the_image():
    proj = IdentityProjection(
        IdentityProjectionConfig(cross_attention_dim=32, face_dim=8, clip_dim=16, clip_num_tokens=5)
    )
    clip, face = torch.randn(1, 5, 16), torch.randn(1, 8)
    a, b = proj(clip, face), proj(clip, face + 1)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_combine_and_interpolate_validation():
    t = torch.randn(3, 7, 4)
    assert combine_tokens(t, "concat").shape == (1, 21, 4)
    torch.testing.assert_close(combine_tokens(t, "mean")[0], t.mean(0))
    with pytest.raises(ValueError, match="concat"):
        combine_tokens(t, "sum")
    with pytest.raises(ValueError, match="same number of photos"):
        interpolate_identities(t[:1], t, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        interpolate_identities(t, t, 1.5)
