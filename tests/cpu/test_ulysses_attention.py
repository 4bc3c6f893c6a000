"""verl_lpreg.cpu.ulysses_attention without processes: the packed-sequence split, and that with no
Ulysses group the attention is the model's eager attention (the SP path: tests/test_layouts.py)."""

import pytest
import torch

pytest.importorskip("verl")

from verl_lpreg.cpu.ulysses_attention import (  # noqa: E402
    ATTENTION_NAME,
    _varlen_attention,
    packed_segments,
    ulysses_eager_attention,
)


def test_segments_split_where_the_positions_restart():
    # two packed sequences, then verl's SP padding (ulysses_pad: positions 0, 1, ...)
    positions = torch.tensor([0, 1, 2, 0, 1, 2, 3, 0, 1])
    assert packed_segments(positions) == [(0, 3), (3, 7), (7, 9)]
    assert packed_segments(torch.tensor([0, 0, 1])) == [(0, 1), (1, 3)]


def test_registered_and_eager_without_a_group(tmp_path):
    from transformers import AttentionInterface, AutoModelForCausalLM

    import verl_lpreg.cpu  # noqa: F401  (registers the attention)
    from verl_lpreg.testing.tiny_model import build_tiny_model

    assert AttentionInterface._global_mapping[ATTENTION_NAME] is ulysses_eager_attention
    path = build_tiny_model(tmp_path / "m", architecture="qwen3", hidden_size=32, num_layers=1, head_dim=16, seed=0)
    ids = torch.randint(3, 100, (1, 12))
    outs = []
    for impl in ("eager", ATTENTION_NAME):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=impl)
        with torch.no_grad():
            outs.append(model(ids).logits)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=0)


def test_varlen_attention_is_each_sequence_on_its_own():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 4, generator=gen) for _ in range(3))
    positions = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 1])
    got = _varlen_attention(q, k, v, positions, 0.5, 0.0, False)
    for a, b in packed_segments(positions):
        want = torch.nn.functional.scaled_dot_product_attention(
            q[:, a:b], k[:, a:b], v[:, a:b], is_causal=True, scale=0.5
        )
        torch.testing.assert_close(got[:, a:b], want)
