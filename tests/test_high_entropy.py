"""Tests of verl_lpreg.high_entropy (the 80/20 baseline) against an obvious transcription of the
authors' rules (docs/method.md §10): k = max(1, int(0.2 n)), the plain clipped PPO term without dual
clip or log-ratio clamp, token-mean over the selected tokens."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_lpreg.high_entropy import high_entropy_mask, high_entropy_policy_loss, num_selected_tokens

# ----------------------------------------------------------------------------- slow versions


def slow_k(n: int, fraction: float) -> int:
    """The authors' count: max(1, int(n * rho)); none for n == 0."""
    return 0 if n == 0 else max(1, int(n * fraction))


def slow_mask(entropy: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    flat_e = entropy.reshape(-1).tolist()
    flat_m = mask.reshape(-1).tolist()
    valid = [i for i, m in enumerate(flat_m) if m]
    ranked = sorted(valid, key=lambda i: (-flat_e[i], i))  # largest entropy, then earliest
    keep = set(ranked[: slow_k(len(valid), fraction)])
    out = [i in keep for i in range(len(flat_e))]
    return torch.tensor(out, dtype=torch.bool).reshape(entropy.shape)


def slow_token_loss(old, new, adv, eps_low, eps_high):
    """The authors' PPO term for one token (no dual clip), from scalar torch ops (keeps autograd)."""
    ratio = torch.exp(new - old)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    return torch.maximum(unclipped, clipped)


def slow_loss(old, new, adv, resp, sel, mode, eps_low=0.2, eps_high=0.2, selection="batch", **glob):
    rows, cols = old.shape
    use = [[bool(resp[i, j]) and bool(sel[i, j]) for j in range(cols)] for i in range(rows)]
    terms = [
        [slow_token_loss(old[i, j], new[i, j], adv[i, j], eps_low, eps_high) for j in range(cols)] for i in range(rows)
    ]
    dp = glob.get("dp_size", 1)
    picked = [terms[i][j] for i in range(rows) for j in range(cols) if use[i][j]]
    if not picked:
        return new.sum() * 0.0
    if mode == "token-mean" and selection == "micro_batch":
        # the micro-batch's mean over its selected tokens, weighted by its share of the tokens
        n_valid = int(resp.sum())
        share = n_valid / (glob.get("batch_num_tokens") or n_valid)
        return sum(picked) / len(picked) * share * dp
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


fractions = st.sampled_from([0.01, 0.2, 0.5, 1.0]) | st.floats(0.0, 1.0, exclude_min=True)

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
    assert int(high_entropy_mask(ent, valid, 1e-6).sum()) == min(1, int(valid.sum()))  # at least one
    assert not high_entropy_mask(ent, torch.zeros_like(valid), 0.2).any()


def test_mask_counts_and_ties():
    assert num_selected_tokens(15, 0.2) == 3  # 15 * 0.2 == 3.0000000000000004 in floats
    assert num_selected_tokens(10, 0.2) == 2
    assert num_selected_tokens(14, 0.2) == 2  # int(2.8): the authors truncate
    assert num_selected_tokens(3, 0.01) == 1  # at least one token
    assert num_selected_tokens(0, 0.2) == 0
    assert num_selected_tokens(7, 1.0) == 7
    ent = torch.tensor([[1.0, 2.0, 2.0], [2.0, 0.5, 9.0]])
    valid = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the 9.0 is masked
    # 5 valid tokens, k = int(5 * 0.6) = 3: the three 2.0s
    assert high_entropy_mask(ent, valid, 0.6).tolist() == [[False, True, True], [True, False, False]]
    # k = 2 among three tied 2.0s: the two earliest positions win
    assert high_entropy_mask(ent, valid, 0.4).tolist() == [[False, True, True], [False, False, False]]
    # NaN / inf under the mask are ignored
    ent_bad = torch.tensor([[float("nan"), 1.0], [float("inf"), 0.0]])
    valid_bad = torch.tensor([[0, 1], [0, 1]])
    assert high_entropy_mask(ent_bad, valid_bad, 0.5).tolist() == [[False, True], [False, False]]


@pytest.mark.parametrize("bad", [-0.1, 0.0, 1.5])
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


def _check_against_slow(b, sel, mode, clip=(0.2, 0.28), selection="batch", **glob):
    new = b["new"].clone().requires_grad_(True)
    new_slow = b["new"].clone().requires_grad_(True)
    eps_low, eps_high = clip
    loss, metrics = high_entropy_policy_loss(
        b["old"], new, b["adv"], b["mask"], sel,
        clip_ratio_low=eps_low, clip_ratio_high=eps_high, loss_agg_mode=mode, selection=selection, **glob,
    )  # fmt: skip
    expected = slow_loss(b["old"], new_slow, b["adv"], b["mask"], sel, mode, eps_low, eps_high, selection, **glob)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected.reshape(()).to(loss.dtype), rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(loss, new)
    (grad_slow,) = torch.autograd.grad(expected, new_slow, allow_unused=True)
    if grad_slow is None:
        grad_slow = torch.zeros_like(grad)
    torch.testing.assert_close(grad, grad_slow, rtol=1e-5, atol=1e-6)
    assert (grad[~(b["mask"] & sel)] == 0).all(), "gradient leaked to an unselected token"
    return loss, metrics


SELECTION = st.sampled_from(["micro_batch", "batch"])


@settings(max_examples=150, deadline=None)
@given(batches(), fractions, st.sampled_from(MODES), SELECTION)
def test_loss_matches_slow_version(b, fraction, mode, selection):
    sel = high_entropy_mask(b["entropy"], b["mask"], fraction)
    _, metrics = _check_against_slow(b, sel, mode, selection=selection)
    valid = int(b["mask"].sum())
    expected_frac = int(sel.sum()) / valid if valid else 0.0
    assert metrics["actor/high_entropy_token_frac"] == pytest.approx(expected_frac)
    assert set(metrics) == {"actor/pg_clipfrac", "actor/ppo_kl", "actor/high_entropy_token_frac"}


@settings(max_examples=100, deadline=None)
@given(batches(), st.sampled_from(MODES), SELECTION, st.integers(1, 8), st.integers(1, 200), st.integers(1, 40))
def test_loss_global_batch_normalisation(b, mode, selection, dp_size, n_tokens, n_seqs):
    sel = high_entropy_mask(b["entropy"], b["mask"], 0.2)
    glob = {"dp_size": dp_size, "batch_num_tokens": n_tokens, "global_batch_size": n_seqs, "loss_scale_factor": 7}
    _check_against_slow(b, sel, mode, selection=selection, **glob)


def authors_8020_micro_batch(old, new, entropy, adv, resp, eps_low, eps_high):
    """The authors' compute_policy_loss_8020_split, transcribed: the current micro-batch's entropy,
    k = max(1, int(0.2 n)) by torch.topk, no dual clip, token-mean over the selected tokens."""
    ratio = torch.exp(new - old)
    losses = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1 - eps_low, 1 + eps_high))
    valid_idx = torch.nonzero(resp.reshape(-1), as_tuple=True)[0]
    top = torch.topk(entropy.reshape(-1)[valid_idx], k=max(1, int(len(valid_idx) * 0.2))).indices
    mask = torch.zeros(resp.numel())
    mask[valid_idx[top]] = 1.0
    mask = mask.reshape(resp.shape)
    return (losses * mask).sum() / mask.sum()


def test_default_is_the_authors_micro_batch_8020():
    """Default rules (selection=micro_batch, current entropy) = the authors' function: value and gradient,
    alone and summed over two micro-batches under verl's global token normalisation."""
    torch.manual_seed(0)
    rows, cols = 6, 11
    old = torch.randn(rows, cols) - 2.0
    new = (old + 0.8 * torch.randn(rows, cols)).requires_grad_(True)
    entropy = torch.rand(rows, cols) * 3  # distinct values: no ties, so topk's order does not matter
    adv = torch.randn(rows, 1).expand(rows, cols).contiguous()
    resp = torch.ones(rows, cols, dtype=torch.bool)
    for i, length in enumerate((11, 7, 3, 9, 5, 10)):
        resp[i, length:] = False

    new_ref = new.detach().clone().requires_grad_(True)
    want = authors_8020_micro_batch(old, new_ref, entropy, adv, resp, 0.2, 0.28)
    sel = high_entropy_mask(entropy, resp, 0.2)
    got, _ = high_entropy_policy_loss(old, new, adv, resp, sel, clip_ratio_low=0.2, clip_ratio_high=0.28)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, new)[0], torch.autograd.grad(want, new_ref)[0])

    # two micro-batches, verl 0.9.1's normalisation by the mini-batch's tokens: the token-weighted
    # mean of the authors' per-micro-batch losses
    halves = (slice(0, 3), slice(3, 6))
    n_total = int(resp.sum())
    total = sum(
        high_entropy_policy_loss(
            old[h], new[h], adv[h], resp[h], high_entropy_mask(entropy[h], resp[h], 0.2),
            clip_ratio_low=0.2, clip_ratio_high=0.28, dp_size=1, batch_num_tokens=n_total,
        )[0]
        for h in halves
    )  # fmt: skip
    want_total = (
        sum(
            authors_8020_micro_batch(old[h], new_ref[h], entropy[h], adv[h], resp[h], 0.2, 0.28) * int(resp[h].sum())
            for h in halves
        )
        / n_total
    )
    torch.testing.assert_close(total, want_total)
    torch.testing.assert_close(torch.autograd.grad(total, new)[0], torch.autograd.grad(want_total, new_ref)[0])


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


def test_full_mask_is_plain_clipped_ppo():
    """top_fraction = 1 is the clipped PPO loss over all tokens, without verl's dual clip."""
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
    # batch-wide selection: the trainer's loss_mask makes batch_num_tokens the selected count
    loss_global, _ = high_entropy_policy_loss(
        old, new, adv, resp, sel, selection="batch", dp_size=2, batch_num_tokens=3
    )
    assert loss_global.item() == pytest.approx(-(2.0 + 4.0) / 3 * 2)
    # per micro-batch: the micro-batch's selected mean times its share (4 of 8) of the tokens
    loss_micro, _ = high_entropy_policy_loss(old, new, adv, resp, sel, dp_size=1, batch_num_tokens=8)
    assert loss_micro.item() == pytest.approx(-(2.0 + 4.0) / 2 * 4 / 8)
    assert math.isfinite(loss_global.item())
