"""Tests of verl_lpreg.high_entropy (the 80/20 baseline) against slow, obvious versions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg.high_entropy import high_entropy_mask, high_entropy_policy_loss, num_selected_tokens

# ----------------------------------------------------------------------------- slow versions


def slow_k(n: int, fraction: float) -> int:
    """The authors' count: max(1, int(n * rho + 0.9999)); none for n == 0 or rho == 0."""
    if n == 0 or fraction == 0.0:
        return 0
    return min(n, max(1, int(n * fraction + 0.9999)))


def slow_mask(entropy: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    flat_e = entropy.reshape(-1).tolist()
    flat_m = mask.reshape(-1).tolist()
    valid = [i for i, m in enumerate(flat_m) if m]
    ranked = sorted(valid, key=lambda i: (-flat_e[i], i))  # largest entropy, then earliest
    keep = set(ranked[: slow_k(len(valid), fraction)])
    out = [i in keep for i in range(len(flat_e))]
    return torch.tensor(out, dtype=torch.bool).reshape(entropy.shape)


def slow_token_loss(old, new, adv, eps_low, eps_high, c):
    """Dual-clip PPO term for one token, from scalar torch ops (keeps autograd)."""
    ratio = torch.exp(torch.clamp(new - old, -20.0, 20.0))
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    if adv < 0:
        loss = torch.minimum(loss, -adv * c)
    return loss


def slow_loss(old, new, adv, resp, sel, mode, eps_low=0.2, eps_high=0.2, c=3.0, **glob):
    rows, cols = old.shape
    use = [[bool(resp[i, j]) and bool(sel[i, j]) for j in range(cols)] for i in range(rows)]
    terms = [
        [slow_token_loss(old[i, j], new[i, j], adv[i, j], eps_low, eps_high, c) for j in range(cols)]
        for i in range(rows)
    ]
    dp = glob.get("dp_size", 1)
    picked = [terms[i][j] for i in range(rows) for j in range(cols) if use[i][j]]
    if not picked:
        return new.sum() * 0.0
    if mode == "token-mean":
        denom = glob.get("batch_num_tokens") or len(picked)
        return sum(picked) / denom * dp
    if mode == "token-sum":
        return sum(picked) * dp
    seq_sums = [(sum(terms[i][j] for j in range(cols) if use[i][j]), sum(use[i])) for i in range(rows)]
    seq_sums = [(s, n) for s, n in seq_sums if n > 0]
    n_seq = glob.get("global_batch_size") or len(seq_sums)
    if mode == "seq-mean-token-mean":
        return sum(s / n for s, n in seq_sums) / n_seq * dp
    if mode == "seq-mean-token-sum":
        return sum(s for s, _ in seq_sums) / n_seq * dp
    if mode == "seq-mean-token-sum-norm":
        return sum(s for s, _ in seq_sums) / n_seq * dp / (glob.get("loss_scale_factor") or cols)
    raise ValueError(mode)


# ----------------------------------------------------------------------------- strategies

MODES = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


@st.composite
def batches(draw, max_rows=4, max_cols=9):
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    n = rows * cols
    small = st.floats(-3.0, 3.0, allow_nan=False, width=32)
    # entropies drawn from a few values so that ties happen often
    ent = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.5]) | st.floats(0, 8, width=32), min_size=n, max_size=n))
    mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    old = draw(st.lists(small, min_size=n, max_size=n))
    delta = draw(st.lists(st.floats(-1.5, 1.5, allow_nan=False, width=32), min_size=n, max_size=n))
    adv = draw(st.lists(small, min_size=n, max_size=n))

    def t(values, dtype=torch.float32):
        return torch.tensor(values, dtype=dtype).reshape(rows, cols)

    old_t = t(old) - 2.0
    return {
        "entropy": t(ent),
        "mask": t(mask, torch.bool),
        "old": old_t,
        "new": old_t + t(delta),
        "adv": t(adv),
    }


fractions = st.sampled_from([0.0, 0.2, 0.5, 1.0]) | st.floats(0.0, 1.0)

# ----------------------------------------------------------------------------- mask


@settings(max_examples=200, deadline=None)
@given(batches(), fractions)
def test_mask_matches_slow_version(b, fraction):
    got = high_entropy_mask(b["entropy"], b["mask"], fraction)
    assert got.dtype == torch.bool and got.shape == b["entropy"].shape
    assert torch.equal(got, slow_mask(b["entropy"], b["mask"], fraction))


@settings(max_examples=200, deadline=None)
@given(batches(), fractions)
def test_mask_properties(b, fraction):
    ent, valid = b["entropy"], b["mask"]
    got = high_entropy_mask(ent, valid, fraction)
    n = int(valid.sum())
    assert not (got & ~valid).any(), "a masked position was selected"
    assert int(got.sum()) == num_selected_tokens(n, fraction)
    if got.any() and (valid & ~got).any():
        assert ent[got].min() >= ent[valid & ~got].max()
    # what sits under the mask never matters
    scrambled = torch.where(valid, ent, torch.full_like(ent, 1e9))
    assert torch.equal(high_entropy_mask(scrambled, valid, fraction), got)


@settings(max_examples=100, deadline=None)
@given(batches())
def test_mask_edge_fractions(b):
    ent, valid = b["entropy"], b["mask"]
    assert torch.equal(high_entropy_mask(ent, valid, 1.0), valid)
    assert not high_entropy_mask(ent, valid, 0.0).any()
    assert not high_entropy_mask(ent, torch.zeros_like(valid), 0.2).any()


def test_mask_counts_and_ties():
    assert num_selected_tokens(15, 0.2) == 3  # 15 * 0.2 == 3.0000000000000004 in floats
    assert num_selected_tokens(10, 0.2) == 2
    assert num_selected_tokens(11, 0.2) == 3  # ceil(2.2)
    assert num_selected_tokens(3, 0.01) == 1  # at least one token
    assert num_selected_tokens(0, 0.2) == 0
    assert num_selected_tokens(7, 1.0) == 7
    ent = torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.5, 9.0]])
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the 9.0 is masked
    # 5 valid tokens, k = int(5 * 0.5 + 0.9999) = 3: the three 2.0s
    assert high_entropy_mask(ent, valid, 0.5).tolist() == [[False, True, True], [True, False, False]]
    # k = 2 among three tied 2.0s: the two earliest positions win
    assert high_entropy_mask(ent, valid, 0.4).tolist() == [[False, True, True], [False, False, False]]
    # NaN / inf under the mask are ignored
    ent_bad = torch.tensor([[float("nan"), 1.0], [float("inf"), 0.0]])
    valid_bad = torch.tensor([[0, 1], [0, 1]])
    assert high_entropy_mask(ent_bad, valid_bad, 0.5).tolist() == [[False, True], [False, False]]


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_mask_rejects_bad_fraction(bad):
    with pytest.raises(ValueError):
        high_entropy_mask(torch.ones(2, 2), torch.ones(2, 2), bad)


def test_mask_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        high_entropy_mask(torch.ones(2, 3), torch.ones(3, 2), 0.2)


def test_mask_is_batch_global_not_per_row():
    ent = torch.tensor([[5.0, 4.0, 3.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    valid = torch.ones_like(ent, dtype=torch.bool)
    got = high_entropy_mask(ent, valid, 0.25)  # k = 2 of 8, both from row 0
    assert got.tolist() == [[True, True, False, False], [False] * 4]


# ----------------------------------------------------------------------------- loss


def _check_against_slow(b, sel, mode, clip=(0.2, 0.28, 3.0), **glob):
    new = b["new"].clone().requires_grad_(True)
    new_slow = b["new"].clone().requires_grad_(True)
    eps_low, eps_high, c = clip
    loss, metrics = high_entropy_policy_loss(
        b["old"], new, b["adv"], b["mask"], sel,
        clip_ratio_low=eps_low, clip_ratio_high=eps_high, clip_ratio_c=c, loss_agg_mode=mode, **glob,
    )  # fmt: skip
    expected = slow_loss(b["old"], new_slow, b["adv"], b["mask"], sel, mode, eps_low, eps_high, c, **glob)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected.reshape(()).to(loss.dtype), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, new)
    (grad_slow,) = torch.autograd.grad(expected, new_slow, allow_unused=True)
    if grad_slow is None:
        grad_slow = torch.zeros_like(grad)
    torch.testing.assert_close(grad, grad_slow, rtol=1e-5, atol=1e-6)
    assert (grad[~(b["mask"] & sel)] == 0).all(), "gradient leaked to an unselected token"
    return loss, metrics


@settings(max_examples=150, deadline=None)
@given(batches(), fractions, st.sampled_from(MODES))
def test_loss_matches_slow_version(b, fraction, mode):
    sel = high_entropy_mask(b["entropy"], b["mask"], fraction)
    _, metrics = _check_against_slow(b, sel, mode)
    valid = int(b["mask"].sum())
    expected_frac = int(sel.sum()) / valid if valid else 0.0
    assert metrics["actor/high_entropy_token_frac"] == pytest.approx(expected_frac)
    assert set(metrics) >= {"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"}


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from(MODES), st.integers(1, 8), st.integers(1, 200), st.integers(1, 40))
def test_loss_global_batch_normalisation(b, mode, dp_size, n_tokens, n_seqs):
    sel = high_entropy_mask(b["entropy"], b["mask"], 0.2)
    glob = {"dp_size": dp_size, "batch_num_tokens": n_tokens, "global_batch_size": n_seqs, "loss_scale_factor": 7}
    _check_against_slow(b, sel, mode, **glob)


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from(MODES))
def test_no_selected_token_gives_zero_loss_and_zero_grad(b, mode):
    new = b["new"].clone().requires_grad_(True)
    new_with_nan = new.masked_fill(~b["mask"], float("nan"))  # padding garbage must not leak
    loss, _ = high_entropy_policy_loss(
        b["old"], new_with_nan, b["adv"], b["mask"], torch.zeros_like(b["mask"]), loss_agg_mode=mode
    )
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, new)
    assert (grad == 0).all()


def test_full_mask_is_vanilla_grpo():
    """top_fraction = 1 reduces to verl's vanilla loss on the same inputs."""
    from verl.trainer.ppo.core_algos import agg_loss

    torch.manual_seed(0)
    old = torch.randn(3, 5) - 2
    new = old + 0.3 * torch.randn(3, 5)
    adv = torch.randn(3, 1).expand(3, 5).contiguous()
    resp = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    sel = high_entropy_mask(torch.rand(3, 5), resp, 1.0)
    loss, _ = high_entropy_policy_loss(old, new, adv, resp, sel, clip_ratio_low=0.2, clip_ratio_high=0.28)
    ratio = torch.exp(new - old)
    per_token = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28))
    per_token = torch.where(adv < 0, torch.minimum(per_token, -adv * 3.0), per_token)
    torch.testing.assert_close(loss, agg_loss(per_token, resp, "token-mean"))


def test_selected_token_mean_uses_selected_count():
    """The authors' normalisation: mean over the selected tokens, not over all valid ones."""
    old = torch.zeros(1, 4)
    new = torch.zeros(1, 4)  # ratio 1: per-token loss = -A
    adv = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    resp = torch.ones(1, 4, dtype=torch.bool)
    sel = torch.tensor([[False, True, False, True]])
    loss, _ = high_entropy_policy_loss(old, new, adv, resp, sel)
    assert loss.item() == pytest.approx(-(2.0 + 4.0) / 2)
    loss_global, _ = high_entropy_policy_loss(old, new, adv, resp, sel, dp_size=2, batch_num_tokens=3)
    assert loss_global.item() == pytest.approx(-(2.0 + 4.0) / 3 * 2)
    assert math.isfinite(loss_global.item())
