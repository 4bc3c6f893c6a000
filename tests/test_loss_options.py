"""The loss options of the paper's ablations (docs/method.md §9) against the reference's rule.

The reference (``compute_policy_loss_lp_reg`` with ``kl_penalty`` of its verl fork) is
transcribed here token by token: the divergence is computed on the selected tokens only and
clamped to [-10, 10] with no clamp before ``exp``; separate targets for the positive and
negative tokens; the selection ranks by the lowest log-prob or (ablation 1) the highest entropy.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg import lp_reg_policy_loss
from verl_lpreg.loss import DIVERGENCES, divergence_penalty, select_candidates


def reference_penalty(x, y, kind):
    """The reference fork's ``kl_penalty(logprob=x, ref_logprob=y, kl_type)``, on one token."""
    if kind in ("kl", "k1"):
        value = x - y
    elif kind == "abs":
        value = (x - y).abs()
    elif kind in ("mse", "k2"):
        value = 0.5 * (x - y) ** 2
    else:
        d = y - x
        value = torch.exp(d) - d - 1
    return torch.clamp(value, -10, 10)


def reference_loss(old_lp, lp, pos_tgt, neg_tgt, adv, mask, *, rho, rho_pos, kind, ranks, largest, beta=1.0):
    """Token-by-token transcription of the reference's rule, token-mean, eps 1.0 / 9.0."""
    n_rows, n_cols = lp.shape
    valid = [(i, j) for i in range(n_rows) for j in range(n_cols) if mask[i, j]]

    def first(cands, fraction):
        k = max(1, int(len(cands) * fraction)) if cands else 0
        if k <= 1:
            return set()
        return set(sorted(cands, key=lambda ij: ranks[ij].item(), reverse=largest)[:k])

    neg = first([ij for ij in valid if adv[ij] < 0], rho)
    pos = first([ij for ij in valid if adv[ij] > 0], rho_pos) if rho_pos > 0 else set()
    total = 0.0
    for ij in valid:
        ratio = torch.exp(lp[ij] - old_lp[ij])
        target = pos_tgt[ij] if ij in pos else neg_tgt[ij]
        if (ij in pos or ij in neg) and lp[ij].item() < target.item():
            term = -adv[ij] * ratio + beta * reference_penalty(lp[ij], target, kind)
        else:
            term = torch.maximum(-adv[ij] * ratio, -adv[ij] * torch.clamp(ratio, 0.0, 10.0))
        total = total + term
    return total / max(len(valid), 1)


def make_batch(seed, rows=4, cols=40, masked_share=0.2, gap=1.0):
    gen = torch.Generator().manual_seed(seed)
    old_lp = -torch.rand(rows, cols, generator=gen) * 6
    lp = (old_lp + 0.3 * torch.randn(rows, cols, generator=gen)).clamp(max=0.0)
    neg_tgt = lp + gap * torch.randn(rows, cols, generator=gen)
    pos_tgt = lp + gap * torch.randn(rows, cols, generator=gen)
    entropy = torch.rand(rows, cols, generator=gen) * 3
    sign = torch.tensor([(-1.0) ** (i + 1) for i in range(rows)]).unsqueeze(1)  # both signs from 2 rows on
    adv = (sign * (0.1 + torch.rand(rows, 1, generator=gen))).expand(rows, cols).clone()
    mask = torch.rand(rows, cols, generator=gen) > masked_share
    return old_lp, lp, pos_tgt, neg_tgt, entropy, adv, mask


def ours_and_reference(batch, *, rho, rho_pos, kind, rank_by):
    old_lp, lp, pos_tgt, neg_tgt, entropy, adv, mask = batch
    lp_ours = lp.clone().requires_grad_(True)
    lp_ref = lp.clone().requires_grad_(True)
    loss, metrics = lp_reg_policy_loss(
        old_lp,
        lp_ours,
        torch.where(adv > 0, pos_tgt, neg_tgt),
        adv,
        mask,
        neg_fraction=rho,
        pos_fraction=rho_pos,
        divergence=kind,
        rank_by=rank_by,
        entropy=entropy,
        clip_ratio_low=1.0,
        clip_ratio_high=9.0,
    )
    ranks = entropy if rank_by == "entropy" else lp
    want = reference_loss(
        old_lp, lp_ref, pos_tgt, neg_tgt, adv, mask, rho=rho, rho_pos=rho_pos, kind=kind, ranks=ranks,
        largest=rank_by == "entropy",
    )  # fmt: skip
    loss.backward()
    if torch.is_tensor(want) and want.requires_grad:
        want.backward()
    grad_ref = lp_ref.grad if lp_ref.grad is not None else torch.zeros_like(lp)
    return loss, want, lp_ours.grad, grad_ref, metrics


@pytest.mark.parametrize("kind", sorted(DIVERGENCES))
@pytest.mark.parametrize("rank_by", ["log_prob", "entropy"])
@pytest.mark.parametrize(("rho", "rho_pos"), [(0.1, 0.0), (0.3, 0.2), (1.0, 1.0)])
@pytest.mark.parametrize("seed", range(3))
def test_every_option_matches_the_reference_value_and_gradient(kind, rank_by, rho, rho_pos, seed):
    loss, want, grad, grad_ref, metrics = ours_and_reference(
        make_batch(seed), rho=rho, rho_pos=rho_pos, kind=kind, rank_by=rank_by
    )
    assert metrics["lp_reg/reg_count"] > 0  # the case exercises the regulariser
    torch.testing.assert_close(loss, want.reshape(()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-7)


def test_divergences_are_verls_estimators_clamped_to_ten():
    x = torch.tensor([-30.0, -5.0, -1.0, -0.1])
    y = torch.tensor([-0.5, -0.5, -2.0, -0.1])
    for kind in DIVERGENCES:
        torch.testing.assert_close(divergence_penalty(x, y, kind), reference_penalty(x, y, kind))
    assert divergence_penalty(x, y, "kl")[0] == -10.0 and divergence_penalty(x, y, "mse")[0] == 10.0
    with pytest.raises(ValueError, match="divergence 'reverse_kl' is not supported; allowed: low_var_kl, k3"):
        divergence_penalty(x, y, "reverse_kl")


@pytest.mark.parametrize("gap", [88.0, 89.0, 200.0, 1e4])
def test_a_target_far_above_the_policy_gives_a_finite_gradient(gap):
    """k3 overflows exp in float32 once proxy - log_prob > ~88.7 (docs/method.md §10). On a token that
    is not regularised (not selected, masked, positive advantage) the reference never computes it,
    and neither may we produce a NaN there. On a regularised one the reference's own gradient is
    NaN (0 * inf through the saturated clamp); the rule's gradient there is the clamp's, 0, plus
    the policy-gradient term's, and that is what we give."""
    old_lp, lp, pos_tgt, neg_tgt, entropy, adv, mask = make_batch(3)
    adv[0], adv[1] = -1.0, 1.0
    lp = lp.clone()
    lp[0, :4] = -gap - 1.0  # the lowest negatives: selected, one of them masked
    neg_tgt[0, :4] = -0.5
    mask[0, 2] = False
    lp[0, 30], neg_tgt[0, 30] = -0.1, gap  # a negative token that is not among the lowest
    lp[1, 0], pos_tgt[1, 0], neg_tgt[1, 0] = -gap - 1.0, -0.5, -0.5  # positive advantage
    batch = (old_lp, lp, pos_tgt, neg_tgt, entropy, adv, mask)
    loss, want, grad, grad_ref, metrics = ours_and_reference(
        batch, rho=0.2, rho_pos=0.0, kind="low_var_kl", rank_by="log_prob"
    )
    assert metrics["lp_reg/reg_count"] > 0
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, want.reshape(()), rtol=1e-5, atol=1e-6)
    finite = torch.isfinite(grad_ref)
    torch.testing.assert_close(grad[finite], grad_ref[finite], rtol=1e-5, atol=1e-7)
    saturated = ~finite
    assert gap < 88.7 or saturated[0, [0, 1, 3]].all()  # only the regularised far tokens
    assert not saturated[0, 2] and not saturated[0, 30] and not saturated[1, 0]
    ratio = torch.exp(lp - old_lp)
    torch.testing.assert_close(grad[saturated], (-adv * ratio / mask.sum())[saturated])


def test_entropy_ranking_selects_the_highest_entropy_negatives():
    old_lp, lp, _, neg_tgt, entropy, adv, mask = make_batch(5, rows=2, cols=50, masked_share=0.0)
    adv[:] = -1.0
    chosen = select_candidates(entropy, adv, mask, 0.1, 0.0, rank_by="entropy")
    assert int(chosen.sum()) == 10
    assert entropy[chosen].min() >= entropy[~chosen].max()
    _, metrics = lp_reg_policy_loss(
        old_lp, lp, lp + 1.0, adv, mask, neg_fraction=0.1, rank_by="entropy", entropy=entropy
    )
    assert metrics["lp_reg/reg_count"] == 10.0
    with pytest.raises(ValueError, match="rank_by='entropy'.*entropy"):
        lp_reg_policy_loss(old_lp, lp, neg_tgt, adv, mask, rank_by="entropy")
    with pytest.raises(ValueError, match="rank_by 'prob' is not supported"):
        select_candidates(lp, adv, mask, 0.1, 0.0, rank_by="prob")


def test_no_gradient_flows_into_the_target():
    old_lp, lp, _, neg_tgt, _, adv, mask = make_batch(7)
    target = neg_tgt.clone().requires_grad_(True)
    loss, _ = lp_reg_policy_loss(old_lp, lp.clone().requires_grad_(True), target, adv, mask, neg_fraction=0.5)
    loss.backward()
    assert target.grad is None


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 5),
    cols=st.integers(1, 30),
    masked_share=st.floats(0.0, 1.0),
    rho=st.floats(0.0, 1.0),
    rho_pos=st.floats(0.0, 1.0),
    gap=st.sampled_from([0.5, 5.0, 100.0, 1e4]),
    kind=st.sampled_from(sorted(DIVERGENCES)),
    rank_by=st.sampled_from(["log_prob", "entropy"]),
    seed=st.integers(0, 2**16),
)
def test_property_any_option_is_finite_and_matches_the_reference(
    rows, cols, masked_share, rho, rho_pos, gap, kind, rank_by, seed
):
    batch = make_batch(seed, rows, cols, masked_share, gap)
    if seed % 3 == 0:  # degenerate: a zero advantage everywhere, or all tokens tied
        batch = (*batch[:5], torch.zeros_like(batch[5]), batch[6])
    elif seed % 3 == 1:
        batch = (batch[0], torch.full_like(batch[1], -1.0), *batch[2:4], torch.ones_like(batch[4]), *batch[5:])
    loss, want, grad, grad_ref, _ = ours_and_reference(batch, rho=rho, rho_pos=rho_pos, kind=kind, rank_by=rank_by)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[~batch[6]] == 0).all()
    if seed % 3 == 1:
        return  # which of the tied tokens are the k lowest is torch.topk's choice, in both
    assert math.isclose(float(loss.detach()), float(torch.as_tensor(want).detach()), rel_tol=1e-4, abs_tol=1e-5)
    finite = torch.isfinite(grad_ref)  # the reference's own k3 overflows on a regularised far token
    assert gap > 88 or finite.all()
    torch.testing.assert_close(grad[finite], grad_ref[finite], rtol=1e-4, atol=1e-6)
