"""min_p_proxy_log_prob against the reference's obvious implementation (docs/method.md §2)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg import min_p_proxy_log_prob
from verl_lpreg.proxy import HARD_FILL_LOGIT, min_p_proxy_stats


def reference_proxy(logits, token_ids, min_p=0.02, mode="minp", soft=False, temperature=1.0):
    """The reference's way: clone, softmax, mask, fill, divide by T, log_softmax, gather."""
    z = logits.float().clone()
    p = torch.softmax(z, dim=-1)
    if mode == "minp":
        keep = p >= min_p * p.max(dim=-1, keepdim=True).values
    else:
        keep = p >= min_p
    if soft:
        fill = z.min(dim=-1, keepdim=True).values.expand_as(z)
    else:
        fill = torch.full_like(z, HARD_FILL_LOGIT)
    z = torch.where(keep, z, fill)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.float().unsqueeze(-1)
    log_p = torch.log_softmax(z / temperature, dim=-1)
    return log_p.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def assert_close_to_reference(got, want):
    # Removed tokens sit near -1e4 / T, where float32's spacing is ~1e-3: compare relatively there.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize(("mode", "soft"), [("minp", False), ("minp", True), ("fixed", False)])
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_matches_reference(mode, soft, temperature):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 33, 257, generator=gen) * 4
    token_ids = torch.randint(0, 257, (4, 33), generator=gen)
    token_ids[:, :8] = logits[:, :8].argmax(-1)  # some sampled tokens are surely kept
    got = min_p_proxy_log_prob(logits, token_ids, 0.05, mode=mode, soft=soft, temperature=temperature)
    assert got.dtype == torch.float32 and got.shape == token_ids.shape
    assert_close_to_reference(got, reference_proxy(logits, token_ids, 0.05, mode, soft, temperature))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_any_float_dtype_computed_in_fp32(dtype):
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(16, 100, generator=gen) * 3).to(dtype)
    token_ids = torch.randint(0, 100, (16,), generator=gen)
    got = min_p_proxy_log_prob(logits, token_ids)
    assert got.dtype == torch.float32
    assert_close_to_reference(got, reference_proxy(logits, token_ids))


def test_per_token_temperature_tensor():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(10, 50, generator=gen) * 3
    token_ids = torch.randint(0, 50, (10,), generator=gen)
    temperature = torch.linspace(0.5, 1.5, 10)
    got = min_p_proxy_log_prob(logits, token_ids, temperature=temperature)
    assert_close_to_reference(got, reference_proxy(logits, token_ids, temperature=temperature))


def test_removed_token_is_noise_at_minus_1e4():
    logits = torch.tensor([[10.0, 9.0, 0.0, -5.0]])
    removed = min_p_proxy_log_prob(logits, torch.tensor([3]), 0.02)
    kept = min_p_proxy_log_prob(logits, torch.tensor([0]), 0.02)
    # Only tokens 0 and 1 survive (e^-1 >= 0.02, e^-10 < 0.02); token 3 gets -1e4 - log(e^10 + e^9).
    expected_norm = math.log(math.exp(10.0) + math.exp(9.0))
    assert removed.item() == pytest.approx(HARD_FILL_LOGIT - expected_norm, rel=1e-6)
    assert kept.item() == pytest.approx(10.0 - expected_norm, abs=1e-5)


def test_soft_fill_uses_row_minimum():
    logits = torch.tensor([[4.0, 3.9, -1.0, -7.0]])
    got = min_p_proxy_log_prob(logits, torch.tensor([2]), 0.5, soft=True)
    filtered = torch.tensor([4.0, 3.9, -7.0, -7.0])
    assert got.item() == pytest.approx(torch.log_softmax(filtered, -1)[2].item(), abs=1e-6)


def test_threshold_margin_marks_removed_tokens():
    logits = torch.tensor([[2.0, 1.0, -3.0]])
    stats = min_p_proxy_stats(logits.expand(3, 3), torch.tensor([0, 1, 2]), 0.1)
    # kept iff z >= 2 + log(0.1) = -0.30
    assert stats.threshold_margin.tolist() == pytest.approx([math.log(0.1), 1.0 + math.log(0.1), 5.0 + math.log(0.1)])
    assert (stats.threshold_margin > 0).tolist() == [False, False, True]


def test_degenerate_rows_are_finite():
    uniform = torch.zeros(3, 8)
    assert torch.allclose(min_p_proxy_log_prob(uniform, torch.tensor([0, 3, 7])), torch.full((3,), -math.log(8)))
    # fixed threshold above every probability removes everything: uniform over -1e4 fills.
    got = min_p_proxy_log_prob(uniform, torch.tensor([1, 2, 3]), 0.5, mode="fixed")
    assert torch.allclose(got, torch.full((3,), -math.log(8)), atol=2e-3)  # fp32 spacing at 1e4
    one_token = min_p_proxy_log_prob(torch.randn(5, 1), torch.zeros(5, dtype=torch.long))
    assert torch.equal(one_token, torch.zeros(5))
    empty = min_p_proxy_log_prob(torch.randn(0, 9), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,)


def test_large_logits_do_not_overflow():
    logits = torch.tensor([[3e4, 2.99995e4, -3e4]])
    got = min_p_proxy_log_prob(logits, torch.tensor([1]))
    assert torch.isfinite(got).all()
    assert_close_to_reference(got, reference_proxy(logits, torch.tensor([1])))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "topk"}, "allowed: minp, fixed"),
        ({"min_p": -0.1}, "min_p"),
        ({"mode": "fixed", "soft": True}, "soft=True is not supported with mode='fixed'"),
        ({"min_p": 1.5}, "min_p"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        min_p_proxy_log_prob(torch.randn(2, 5), torch.zeros(2, dtype=torch.long), **kwargs)


def test_shape_mismatch_is_explained():
    with pytest.raises(ValueError, match="token_ids"):
        min_p_proxy_log_prob(torch.randn(2, 3, 5), torch.zeros(3, dtype=torch.long))


@settings(max_examples=60, deadline=None)
@given(
    batch=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    vocab=st.integers(1, 64),
    scale=st.floats(0.01, 30.0),
    min_p=st.floats(1e-4, 1.0),
    mode=st.sampled_from(["minp", "fixed"]),
    soft=st.booleans(),
    temperature=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(batch, vocab, scale, min_p, mode, soft, temperature, seed):
    soft = soft and mode == "minp"  # fixed mode has no soft fill (refused)
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*batch, vocab, generator=gen) * scale
    token_ids = torch.randint(0, vocab, tuple(batch), generator=gen)
    got = min_p_proxy_log_prob(logits, token_ids, min_p, mode=mode, soft=soft, temperature=temperature)
    want = reference_proxy(logits, token_ids, min_p, mode, soft, temperature)
    assert got.shape == token_ids.shape
    assert torch.isfinite(got).all()
    # A token exactly at the threshold can flip between the probability- and logit-space tests.
    p = torch.softmax(logits.float(), -1)
    ref_keep = p >= (min_p * p.max(-1, keepdim=True).values if mode == "minp" else min_p)
    if ref_keep.any(-1).all():
        boundary = (p / (p.max(-1, keepdim=True).values if mode == "minp" else 1.0) - min_p).abs() < 1e-5
        if not boundary.any():
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# Random [rows, vocab] cases of the path-equality properties below (vocab given by each test).
ROW_CASES = {
    "rows": st.integers(1, 12),
    "scale": st.floats(0.01, 30.0),
    "min_p": st.floats(1e-4, 1.0),
    "mode": st.sampled_from(["minp", "fixed"]),
    "soft": st.booleans(),
    "temperature": st.floats(0.2, 3.0),
    "seed": st.integers(0, 2**16),
}


def random_rows(rows, vocab, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen) * scale
    return logits, torch.randint(0, vocab, (rows,), generator=gen)


@settings(max_examples=60, deadline=None)
@given(vocab=st.integers(64, 300), **ROW_CASES)
def test_property_dense_route_equals_the_candidate_blocks(rows, vocab, scale, min_p, mode, soft, temperature, seed):
    """The CPU pass's two routes (candidate blocks; one masked pass when the rows are flat) keep
    the same tokens and agree to float32 rounding, whichever the data would pick."""
    from verl_lpreg import proxy

    soft = soft and mode == "minp"
    logits, token_ids = random_rows(rows, vocab, scale, seed)
    token_ids[: rows // 2] = logits[: rows // 2].argmax(-1)
    temperature = torch.full((rows,), temperature)
    routes = {}
    for route, fraction in (("blocks", 0), ("dense", 10**9)):
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(proxy, "_DENSE_FRACTION", fraction)
            monkeypatch.setattr(proxy, "_DENSE_ELEMENTS", 3 * vocab)  # several row groups
            routes[route] = min_p_proxy_stats(logits, token_ids, min_p, mode=mode, soft=soft, temperature=temperature)
    assert torch.equal(routes["dense"].threshold_margin, routes["blocks"].threshold_margin)
    torch.testing.assert_close(routes["dense"].proxy_log_prob, routes["blocks"].proxy_log_prob, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [0.05, 4.0])
def test_default_route_matches_reference(scale):
    """Flat rows (scale 0.05: every block a candidate) take the dense route, peaked ones the
    candidate blocks; both against the reference."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(40, 1000, generator=gen) * scale
    token_ids = torch.randint(0, 1000, (40,), generator=gen)
    got = min_p_proxy_log_prob(logits, token_ids, 0.02, temperature=0.7)
    assert_close_to_reference(got, reference_proxy(logits, token_ids, 0.02, temperature=0.7))


# --------------------------------------------------------------------------- accelerator path


def _force_fixed_shape_path(monkeypatch, rows_per_chunk=7):
    """Run the accelerator's sync-free formulation on CPU (eager; small chunks: several per call)."""
    from verl_lpreg import proxy

    monkeypatch.setattr(proxy, "_rows_impl", lambda device, vocab: (proxy._proxy_rows_fixed_shape, rows_per_chunk))


@pytest.mark.parametrize(("mode", "soft"), [("minp", False), ("minp", True), ("fixed", False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fixed_shape_path_equals_the_cpu_path(monkeypatch, mode, soft, dtype):
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(5, 9, 1000, generator=gen) * 4).to(dtype)  # 1000 = 15 blocks of 64 + a tail
    token_ids = torch.randint(0, 1000, (5, 9), generator=gen)
    token_ids[:, :3] = logits[:, :3].argmax(-1)
    temperature = torch.linspace(0.5, 1.5, 9).expand(5, 9)
    cpu = min_p_proxy_stats(logits, token_ids, 0.05, mode=mode, soft=soft, temperature=temperature)
    _force_fixed_shape_path(monkeypatch)
    got = min_p_proxy_stats(logits, token_ids, 0.05, mode=mode, soft=soft, temperature=temperature)
    # same thresholds and kept sets; the sums run in another order
    assert torch.equal(got.threshold_margin, cpu.threshold_margin)
    torch.testing.assert_close(got.proxy_log_prob, cpu.proxy_log_prob, rtol=1e-6, atol=1e-6)
    assert_close_to_reference(got.proxy_log_prob, reference_proxy(logits, token_ids, 0.05, mode, soft, temperature))


def test_fixed_shape_path_degenerate_rows(monkeypatch):
    _force_fixed_shape_path(monkeypatch, rows_per_chunk=2)
    uniform = torch.zeros(3, 8)
    assert torch.allclose(min_p_proxy_log_prob(uniform, torch.tensor([0, 3, 7])), torch.full((3,), -math.log(8)))
    got = min_p_proxy_log_prob(uniform, torch.tensor([1, 2, 3]), 0.5, mode="fixed")
    assert torch.allclose(got, torch.full((3,), -math.log(8)), atol=2e-3)
    assert torch.equal(min_p_proxy_log_prob(torch.randn(5, 1), torch.zeros(5, dtype=torch.long)), torch.zeros(5))
    assert min_p_proxy_log_prob(torch.randn(0, 9), torch.zeros(0, dtype=torch.long)).shape == (0,)
    big = torch.tensor([[3e4, 2.99995e4, -3e4]])
    assert_close_to_reference(min_p_proxy_log_prob(big, torch.tensor([1])), reference_proxy(big, torch.tensor([1])))


@settings(max_examples=40, deadline=None)
@given(vocab=st.integers(1, 300), **ROW_CASES)
def test_property_fixed_shape_path_equals_the_cpu_path(rows, vocab, scale, min_p, mode, soft, temperature, seed):
    from verl_lpreg import proxy

    soft = soft and mode == "minp"  # the fixed threshold always fills -1e4

    logits, token_ids = random_rows(rows, vocab, scale, seed)
    cpu = min_p_proxy_stats(logits, token_ids, min_p, mode=mode, soft=soft, temperature=temperature)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(proxy, "_rows_impl", lambda device, vocab: (proxy._proxy_rows_fixed_shape, 5))
        got = min_p_proxy_stats(logits, token_ids, min_p, mode=mode, soft=soft, temperature=temperature)
    assert torch.equal(got.threshold_margin, cpu.threshold_margin)
    torch.testing.assert_close(got.proxy_log_prob, cpu.proxy_log_prob, rtol=1e-5, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["minp", "fixed"])
def test_cuda_path_has_no_host_sync_and_equals_the_cpu_path(mode):
    gen = torch.Generator().manual_seed(4)
    logits = (torch.randn(3000, 151_936, generator=gen) * 4).to(torch.bfloat16)  # two device chunks
    token_ids = torch.randint(0, 151_936, (3000,), generator=gen)
    temperature = torch.full((3000,), 0.9)
    want = min_p_proxy_stats(logits, token_ids, 0.02, mode=mode, temperature=temperature)
    dev = logits.cuda(), token_ids.cuda(), temperature.cuda()
    min_p_proxy_stats(*dev[:2], 0.02, mode=mode, temperature=dev[2])  # compile outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call inside raises
    try:
        got = min_p_proxy_stats(*dev[:2], 0.02, mode=mode, temperature=dev[2])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(got.threshold_margin.cpu(), want.threshold_margin, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got.proxy_log_prob.cpu(), want.proxy_log_prob, rtol=1e-5, atol=1e-5)
