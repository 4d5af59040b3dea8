"""The processors on a real (tiny) UNet: base-model equivalence, row pairing, training mode, block selection."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention
from tiny_models import tiny_sd15_unet, tiny_sdxl_unet

from infinite_id import ops
from infinite_id.attention_processors import (
    InfiniteIDAttentionState,
    InfiniteIDCrossAttnProcessor,
    InfiniteIDSelfAttnProcessor,
    configure_blocks,
    cross_attention_processors,
    install_processors,
    uninstall_processors,
)


def _unet_inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 16, 16, generator=g)
    text = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    added = None
    if unet.config.addition_embed_type == "text_time":
        added = {"text_embeds": torch.randn(batch, 32, generator=g), "time_ids": torch.ones(batch, 6) * 64}
    return x, text, added


@pytest.mark.parametrize("make_unet", [tiny_sd15_unet, tiny_sdxl_unet])
def test_installed_processors_without_state_are_the_base_model(make_unet):
    unet = make_unet()
    x, text, added = _unet_inputs(unet)
    with torch.no_grad():
        before = unet(x, 10, encoder_hidden_states=text, added_cond_kwargs=added).sample
        install_processors(unet)
        after = unet(x, 10, encoder_hidden_states=text, added_cond_kwargs=added).sample
        # A state with ID scale 0 and independent self-attention is still the base model, row for row.
        state = InfiniteIDAttentionState(text_rows=1, id_tokens=torch.randn(1, 5, text.shape[-1]), id_scale=0.0)
        state.self_attention = "independent"
        paired = unet(
            x, 10, encoder_hidden_states=text, added_cond_kwargs=added, cross_attention_kwargs={"infinite_id": state}
        ).sample
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paired, before, atol=1e-5, rtol=1e-5)
    uninstall_processors(unet)
    assert not cross_attention_processors(unet)


def test_ip_projections_start_from_text_projections():
    unet = tiny_sd15_unet()
    install_processors(unet)
    modules = dict(unet.named_modules())
    procs = cross_attention_processors(unet)
    assert procs and len(procs) == sum(
        1 for m in modules.values() if isinstance(m, Attention) and m.is_cross_attention
    )
    for name, proc in procs.items():
        torch.testing.assert_close(proc.to_k_ip.weight, modules[name].to_k.weight)
        torch.testing.assert_close(proc.to_v_ip.weight, modules[name].to_v.weight)


def _attn(dim=16, heads=2, cross=None):
    torch.manual_seed(0)
    return Attention(query_dim=dim, cross_attention_dim=cross, heads=heads, dim_head=dim // heads).eval()


def test_mixed_self_attention_pairs_identity_row_i_with_text_row_i():
    attn = _attn()
    proc = InfiniteIDSelfAttnProcessor()
    g = torch.Generator().manual_seed(1)
    text_rows, id_rows = torch.randn(2, 9, 16, generator=g), torch.randn(2, 9, 16, generator=g)
    state = InfiniteIDAttentionState(text_rows=2, adain="mean")
    with torch.no_grad():
        out = proc(attn, torch.cat([text_rows, id_rows]), infinite_id=state)

        def heads(x):
            return x.view(x.shape[0], -1, 2, 8).transpose(1, 2)

        for i in range(2):
            q = heads(attn.to_q(id_rows[i : i + 1]))
            k_id, v_id = heads(attn.to_k(id_rows[i : i + 1])), heads(attn.to_v(id_rows[i : i + 1]))
            k_t, v_t = heads(attn.to_k(text_rows[i : i + 1])), heads(attn.to_v(text_rows[i : i + 1]))
            o = ops.mixed_attention(q, k_id, v_id, k_t, v_t, adain=True).transpose(1, 2).reshape(1, 9, 16)
            torch.testing.assert_close(out[2 + i : 3 + i], attn.to_out[0](o), atol=1e-5, rtol=1e-5)
        # text rows are plain self-attention of the text rows alone
        plain = proc(attn, text_rows)
    torch.testing.assert_close(out[:2], plain, atol=1e-5, rtol=1e-5)


def test_mutual_attention_uses_only_the_text_streams_keys():
    attn = _attn()
    proc = InfiniteIDSelfAttnProcessor()
    g = torch.Generator().manual_seed(2)
    text_rows, id_rows = torch.randn(1, 6, 16, generator=g), torch.randn(1, 6, 16, generator=g)
    batch = torch.cat([text_rows, id_rows])

    def heads(x):
        return x.view(1, -1, 2, 8).transpose(1, 2)

    with torch.no_grad():
        mutual = proc(attn, batch, infinite_id=InfiniteIDAttentionState(text_rows=1, self_attention="mutual"))
        mixed = proc(attn, batch, infinite_id=InfiniteIDAttentionState(text_rows=1, self_attention="mixed"))
        q, k_t, v_t = heads(attn.to_q(id_rows)), heads(attn.to_k(text_rows)), heads(attn.to_v(text_rows))
        expected = attn.to_out[0](ops.mutual_attention(q, k_t, v_t).transpose(1, 2).reshape(1, 6, 16))
    torch.testing.assert_close(mutual[1:], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[1:], mutual[1:], atol=1e-4)


def test_training_mode_identity_output_does_not_depend_on_text():
    attn = _attn(dim=16, cross=12)
    proc = InfiniteIDCrossAttnProcessor(12, 16)
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 10, 16, generator=g)
    tokens = torch.randn(2, 5, 12, generator=g)
    state = InfiniteIDAttentionState(text_rows=0, id_tokens=tokens, text_cross_attention=False)
    with torch.no_grad():
        a = proc(attn, hidden, encoder_hidden_states=torch.randn(2, 7, 12, generator=g), infinite_id=state)
        b = proc(attn, hidden, encoder_hidden_states=torch.randn(2, 7, 12, generator=g) * 10, infinite_id=state)
        # with the text on, the output does depend on it
        state.text_cross_attention = True
        c = proc(attn, hidden, encoder_hidden_states=torch.randn(2, 7, 12, generator=g), infinite_id=state)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_cross_attention_is_text_plus_scaled_identity_term():
    attn = _attn(dim=16, cross=12)
    proc = InfiniteIDCrossAttnProcessor(12, 16)
    g = torch.Generator().manual_seed(4)
    hidden, text = torch.randn(2, 10, 16, generator=g), torch.randn(2, 7, 12, generator=g)
    tokens = torch.randn(1, 5, 12, generator=g)
    with torch.no_grad():
        base = proc(attn, hidden, encoder_hidden_states=text)
        out1 = proc(attn, hidden, encoder_hidden_states=text, infinite_id=InfiniteIDAttentionState(1, tokens, 1.0))
        out2 = proc(attn, hidden, encoder_hidden_states=text, infinite_id=InfiniteIDAttentionState(1, tokens, 2.0))
    torch.testing.assert_close(out1[:1], base[:1])  # text row untouched
    # the ID term is linear in the scale after to_out (a linear layer): out(2) - out(1) == out(1) - out(0)
    torch.testing.assert_close(out2[1:] - out1[1:], out1[1:] - base[1:], atol=1e-5, rtol=1e-4)


def test_configure_blocks_selects_layers():
    unet = tiny_sdxl_unet()
    install_processors(unet)
    configure_blocks(unet, mixed_attention_blocks=["up"], id_blocks=["down_blocks.1"], id_block_scales={"down": 0.5})
    for key, proc in unet.attn_processors.items():
        if isinstance(proc, InfiniteIDSelfAttnProcessor):
            assert proc.mixed_enabled == key.startswith("up_blocks")
        else:
            assert proc.id_enabled == key.startswith("down_blocks.1.")
            assert proc.scale == (0.5 if key.startswith("down_blocks") else 1.0)
    configure_blocks(unet)
    assert all(
        getattr(p, "mixed_enabled", True) and getattr(p, "id_enabled", True) for p in unet.attn_processors.values()
    )


def test_state_validation():
    with pytest.raises(ValueError, match="self_attention"):
        InfiniteIDAttentionState(self_attention="shared")
    with pytest.raises(ValueError, match="as many identity rows"):
        InfiniteIDAttentionState(text_rows=2).split(3)
