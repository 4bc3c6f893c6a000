"""lp_reg_policy_loss against a slow, token-by-token implementation of docs/method.md §3."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg import lp_reg_policy_loss
from verl_lpreg.loss import k3_divergence


def slow_lp_reg_loss(old_lp, lp, proxy, adv, mask, rho=0.01, rho_pos=0.0, beta=1.0, eps_low=0.2, eps_high=0.2):
    """Token-by-token transcription of docs/method.md §3 with token-mean aggregation (values as floats)."""
    n_rows, n_cols = lp.shape
    valid = [(i, j) for i in range(n_rows) for j in range(n_cols) if mask[i, j]]

    def lowest(cands, fraction):
        k = max(1, int(len(cands) * fraction)) if cands else 0
        if k <= 1:
            return set()
        return set(sorted(cands, key=lambda ij: lp[ij].item())[:k])

    selected = lowest([ij for ij in valid if adv[ij] < 0], rho)
    if rho_pos > 0:
        selected |= lowest([ij for ij in valid if adv[ij] > 0], rho_pos)
    total = 0.0
    for ij in valid:
        ratio = torch.exp(lp[ij] - old_lp[ij])
        if ij in selected and lp[ij].item() < proxy[ij].item():
            d = proxy[ij] - lp[ij]
            k3 = torch.clamp(torch.exp(d) - d - 1, -10, 10)
            term = -adv[ij] * ratio + beta * k3
        else:
            term = torch.maximum(-adv[ij] * ratio, -adv[ij] * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
        total = total + term
    return total / len(valid)


def make_batch(seed, rows=4, cols=50, masked_share=0.2):
    gen = torch.Generator().manual_seed(seed)
    old_lp = -torch.rand(rows, cols, generator=gen) * 6
    lp = (old_lp + 0.3 * torch.randn(rows, cols, generator=gen)).clamp(max=0.0)
    proxy = lp + torch.randn(rows, cols, generator=gen)
    adv = torch.randn(rows, 1, generator=gen).expand(rows, cols).clone()
    mask = torch.rand(rows, cols, generator=gen) > masked_share
    return old_lp, lp, proxy, adv, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("rho", "rho_pos"), [(0.01, 0.0), (0.1, 0.0), (0.3, 0.2), (1.0, 1.0)])
def test_value_and_gradient_match_slow_implementation(seed, rho, rho_pos):
    old_lp, lp, proxy, adv, mask = make_batch(seed)
    lp_fast = lp.clone().requires_grad_(True)
    lp_slow = lp.clone().requires_grad_(True)
    loss, _ = lp_reg_policy_loss(
        old_lp,
        lp_fast,
        proxy,
        adv,
        mask,
        neg_fraction=rho,
        pos_fraction=rho_pos,
        clip_ratio_low=1.0,
        clip_ratio_high=9.0,
    )
    want = slow_lp_reg_loss(old_lp, lp_slow, proxy, adv, mask, rho, rho_pos, eps_low=1.0, eps_high=9.0)
    loss.backward()
    want.backward()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lp_fast.grad, lp_slow.grad, rtol=1e-5, atol=1e-7)


def test_regularisation_changes_the_loss_only_on_selected_low_prob_tokens():
    old_lp, lp, proxy, adv, mask = make_batch(7, rows=8, cols=100)
    adv = -adv.abs()  # every token negative
    plain, _ = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, neg_fraction=0.0)
    reg, metrics = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, neg_fraction=0.1)
    n_valid = int(mask.sum())
    k = int(n_valid * 0.1)
    assert 0 < metrics["lp_reg/reg_count"] <= k
    assert metrics["lp_reg/reg_fraction"] == pytest.approx(metrics["lp_reg/reg_count"] / n_valid)
    assert metrics["lp_reg/gap_mean"] > 0  # the proxy sits above the policy on every regularised token
    assert metrics["lp_reg/k3_mean"] > 0
    assert not torch.isclose(plain, reg)


def test_k_of_one_applies_nothing_as_in_the_reference():
    old_lp, lp, proxy, adv, mask = make_batch(3)
    # 10 negative tokens, rho 0.15 -> k = max(1, int(1.5)) = 1: no step.
    mask = torch.zeros_like(mask)
    mask[0, :10] = True
    adv = -adv.abs()
    _, metrics = lp_reg_policy_loss(old_lp, lp, proxy + 50, adv, mask, neg_fraction=0.15)
    assert metrics["lp_reg/reg_count"] == 0


def test_tokens_above_the_proxy_or_removed_by_it_are_never_regularised():
    old_lp, lp, proxy, adv, mask = make_batch(4)
    adv = -adv.abs()
    _, above = lp_reg_policy_loss(old_lp, lp, lp - 0.5, adv, mask, neg_fraction=1.0)
    _, removed = lp_reg_policy_loss(old_lp, lp, torch.full_like(lp, -1e4), adv, mask, neg_fraction=1.0)
    assert above["lp_reg/reg_count"] == 0 and removed["lp_reg/reg_count"] == 0


def test_k3_is_the_clamped_low_var_kl():
    x = torch.tensor([-3.0, -1.0, -5.0, -0.1])
    y = torch.tensor([-1.0, -1.0, -0.01, -20.0])
    d = y - x
    assert torch.allclose(k3_divergence(x, y), torch.clamp(torch.exp(d) - d - 1, -10, 10))
    assert k3_divergence(torch.tensor(-5.0), torch.tensor(-0.01)).item() == 10.0  # clamped: gradient zero


def test_all_masked_micro_batch_is_finite():
    old_lp, lp, proxy, adv, _ = make_batch(5)
    lp = lp.clone().requires_grad_(True)
    loss, metrics = lp_reg_policy_loss(old_lp, lp, proxy, adv, torch.zeros_like(adv, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(lp.grad).all()
    assert all(math.isfinite(v) for v in metrics.values())


def test_global_token_normalisation_is_passed_to_agg_loss():
    old_lp, lp, proxy, adv, mask = make_batch(6)
    local, _ = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask)
    global_, _ = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, dp_size=2, batch_num_tokens=4 * int(mask.sum()))
    assert global_.item() == pytest.approx(local.item() * 2 / 4, rel=1e-5)


def test_rollout_is_weights_scale_each_token():
    old_lp, lp, proxy, adv, mask = make_batch(8)
    base, _ = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask)
    doubled, _ = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, rollout_is_weights=torch.full_like(lp, 2.0))
    assert doubled.item() == pytest.approx(2 * base.item(), rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 40),
    masked_share=st.floats(0.0, 1.0),
    rho=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum"]),
)
def test_property_finite_and_bounded(rows, cols, masked_share, rho, seed, agg):
    old_lp, lp, proxy, adv, mask = make_batch(seed, rows, cols, masked_share)
    lp = lp.clone().requires_grad_(True)
    loss, metrics = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, neg_fraction=rho, loss_agg_mode=agg)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    assert (lp.grad[~mask] == 0).all()
    n_neg = int((mask & (adv < 0)).sum())
    assert metrics["lp_reg/reg_count"] <= max(1, int(n_neg * rho))


def test_precomputed_candidates_replace_the_per_call_selection():
    from verl_lpreg.loss import select_candidates

    old_lp, lp, proxy, adv, mask = make_batch(11, rows=6, cols=60)
    same, m_same = lp_reg_policy_loss(
        old_lp, lp, proxy, adv, mask, neg_fraction=0.2, candidates=select_candidates(lp, adv, mask, 0.2, 0.0)
    )
    per_call, m_call = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, neg_fraction=0.2)
    assert same.item() == pytest.approx(per_call.item()) and m_same == m_call
    # any candidate mask: exactly the candidates below the proxy are regularised, masked tokens never
    candidates = torch.zeros_like(mask)
    candidates[:, ::3] = True
    _, metrics = lp_reg_policy_loss(old_lp, lp, proxy, adv, mask, candidates=candidates)
    assert metrics["lp_reg/reg_count"] == int((candidates & mask & (lp < proxy)).sum())
