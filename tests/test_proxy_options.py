"""min_p = 0 (no filter) in every proxy mode, and the refused fixed + soft (docs/method.md §9.2-§9.3, §10)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg import min_p_proxy_log_prob
from verl_lpreg.proxy import min_p_proxy_stats


def unfiltered(logits, token_ids, temperature):
    """The reference with min_p = 0: no filter at all, log_softmax(logits / T) at the token."""
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.float().unsqueeze(-1)
    return torch.log_softmax(logits.float() / temperature, -1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize(("mode", "soft"), [("minp", False), ("minp", True), ("fixed", False)])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_min_p_zero_is_no_filter_in_every_mode(mode, soft, temperature):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 17, 301, generator=gen) * 6
    token_ids = torch.randint(0, 301, (3, 17), generator=gen)
    stats = min_p_proxy_stats(logits, token_ids, 0.0, mode=mode, soft=soft, temperature=temperature)
    torch.testing.assert_close(stats.proxy_log_prob, unfiltered(logits, token_ids, temperature))
    assert stats.proxy_log_prob.dtype == torch.float32
    assert (stats.threshold_margin == -math.inf).all()  # nothing is outside the support
    # the filter at a tiny kappa removes the rarest tokens: min_p = 0 is not that
    filtered = min_p_proxy_log_prob(logits, token_ids, 0.2, mode=mode, soft=soft, temperature=temperature)
    assert not torch.allclose(filtered, stats.proxy_log_prob)


def test_min_p_zero_per_token_temperature_and_bf16():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(12, 50, generator=gen) * 3).to(torch.bfloat16)
    token_ids = torch.randint(0, 50, (12,), generator=gen)
    temperature = torch.rand(12, generator=gen) + 0.3
    got = min_p_proxy_log_prob(logits, token_ids, 0.0, temperature=temperature)
    torch.testing.assert_close(got, unfiltered(logits, token_ids, temperature))


def test_fixed_mode_with_soft_is_refused():
    with pytest.raises(ValueError, match="soft=True is not supported with mode='fixed'"):
        min_p_proxy_log_prob(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), 0.02, mode="fixed", soft=True)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    vocab=st.integers(1, 80),
    scale=st.floats(0.01, 1e3),
    mode=st.sampled_from(["minp", "fixed"]),
    temperature=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**16),
)
def test_property_min_p_zero_is_log_softmax(batch, vocab, scale, mode, temperature, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, vocab, generator=gen) * scale
    token_ids = torch.randint(0, vocab, tuple(batch), generator=gen)
    got = min_p_proxy_log_prob(logits, token_ids, 0.0, mode=mode, temperature=temperature)
    assert got.shape == token_ids.shape and torch.isfinite(got).all() and (got <= 0).all()
    # float32 resolves z / T only to about eps32 * max|z| / T: at scale 367 and T=3 that is ~1e-5 itself
    resolution = 4 * torch.finfo(torch.float32).eps * float(logits.abs().max()) / temperature if logits.numel() else 0.0
    torch.testing.assert_close(got, unfiltered(logits, token_ids, temperature), rtol=1e-5, atol=1e-5 + resolution)
