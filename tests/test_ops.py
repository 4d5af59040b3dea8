"""The public attention math against float64 references written here, on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from infinite_id import ops


def _rand(*shape, dtype=torch.float32, gen=None):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)


def _ref_attention(q, k, v):
    q, k, v = q.double(), k.double(), v.double()
    w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return w @ v


def _ref_adain_mean(x, y):
    x, y = x.double(), y.double()
    return x - x.mean(dim=-2, keepdim=True) + y.mean(dim=-2, keepdim=True)


@pytest.fixture(params=range(4))
def gen(request):
    g = torch.Generator()
    g.seed()  # fresh inputs every run; the failing seed is printed by the assertion message
    return g


def _shapes(gen):
    b, h, n_id, n_t, d = (
        int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in [(1, 4), (1, 5), (3, 40), (3, 40), (2, 33)]
    )
    return b, h, n_id, n_t, d


def test_adain_mean_matches_reference(gen):
    b, h, n_id, n_t, d = _shapes(gen)
    x, y = _rand(b, h, n_id, d, gen=gen), _rand(b, h, n_t, d, gen=gen) * 3 + 1
    out = ops.adain_mean(x, y)
    assert out.dtype == x.dtype and out.shape == x.shape
    torch.testing.assert_close(
        out.double(), _ref_adain_mean(x, y), atol=1e-5, rtol=1e-5, msg=f"seed {gen.initial_seed()}"
    )


def test_mixed_attention_matches_reference(gen):
    b, h, n_id, n_t, d = _shapes(gen)
    q, k_id, v_id = (_rand(b, h, n_id, d, gen=gen) for _ in range(3))
    k_t, v_t = _rand(b, h, n_t, d, gen=gen), _rand(b, h, n_t, d, gen=gen)
    expected = _ref_attention(q, torch.cat([k_id, k_t], -2), torch.cat([v_id, v_t], -2))
    torch.testing.assert_close(ops.mixed_attention(q, k_id, v_id, k_t, v_t).double(), expected, atol=1e-5, rtol=1e-5)

    k_shift, v_shift = _ref_adain_mean(k_id, k_t), _ref_adain_mean(v_id, v_t)
    expected = _ref_attention(q, torch.cat([k_shift, k_t.double()], -2), torch.cat([v_shift, v_t.double()], -2))
    out = ops.mixed_attention(q, k_id, v_id, k_t, v_t, adain=True)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5, msg=f"seed {gen.initial_seed()}")


def test_mutual_attention_matches_reference(gen):
    b, h, n_id, n_t, d = _shapes(gen)
    q, k_t, v_t = _rand(b, h, n_id, d, gen=gen), _rand(b, h, n_t, d, gen=gen), _rand(b, h, n_t, d, gen=gen)
    torch.testing.assert_close(
        ops.mutual_attention(q, k_t, v_t).double(), _ref_attention(q, k_t, v_t), atol=1e-5, rtol=1e-5
    )


def test_mixed_attention_with_identical_streams_is_self_attention(gen):
    b, h, n, _, d = _shapes(gen)
    q, k, v = (_rand(b, h, n, d, gen=gen) for _ in range(3))
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ops.mixed_attention(q, k, v, k, v), plain, atol=1e-5, rtol=1e-5)
    # AdaIN-mean towards itself is the identity, so it is plain self-attention too.
    torch.testing.assert_close(ops.mixed_attention(q, k, v, k, v, adain="mean"), plain, atol=1e-5, rtol=1e-5)


def test_adain_mean_changes_only_the_mean(gen):
    b, h, n_id, n_t, d = _shapes(gen)
    x, y = _rand(b, h, n_id, d, gen=gen), _rand(b, h, n_t, d, gen=gen) * 2 - 5
    out = ops.adain_mean(x, y)
    shift = out - x
    # one constant per (batch, channel): the same for every token
    torch.testing.assert_close(shift, shift[:, :, :1].expand_as(shift), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mean(-2), y.mean(-2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out - out.mean(-2, keepdim=True), x - x.mean(-2, keepdim=True), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.std(-2), x.std(-2), atol=1e-5, rtol=1e-5)


def test_full_adain_matches_std_and_mean(gen):
    b, h, n_id, n_t, d = _shapes(gen)
    x, y = _rand(b, h, n_id, d, gen=gen), _rand(b, h, n_t, d, gen=gen) * 4 + 2
    out = ops.adain(x, y)
    torch.testing.assert_close(out.mean(-2), y.mean(-2), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.std(-2, unbiased=False), y.std(-2, unbiased=False), atol=1e-3, rtol=1e-3)


def test_adain_mean_is_computed_in_float32_and_returned_in_input_dtype():
    x = (torch.randn(1, 2, 4096, 8) + 300).to(torch.float16)
    y = torch.randn(1, 2, 64, 8).to(torch.float16)
    out = ops.adain_mean(x, y)
    assert out.dtype == torch.float16
    ref = _ref_adain_mean(x, y)
    assert (out.double() - ref).abs().max() < 0.25  # fp16 resolution at |x|~300; an fp16 mean would drift further


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="batch, heads, tokens, head_dim"):
        ops.adain_mean(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="adain"):
        ops.mixed_attention(q, q, q, q, q, adain="std")
