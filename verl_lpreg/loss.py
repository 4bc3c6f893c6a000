"""The Lp-Reg policy loss (docs/method.md §3), as a pure function of per-token tensors.

Per token t with ratio ``r = exp(log_prob - old_log_prob)``, advantage ``A`` and mask ``m``:

1. vanilla clipped term ``L_t = max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``;
2. selection, without gradient: among the valid tokens with ``A < 0`` take the
   ``k = max(1, int(n_neg * rho))`` with the lowest current ``log_prob`` (or, with
   ``rank_by="entropy"``, the highest entropy: the paper's ablation), applied only when
   ``k > 1``, and keep those with ``log_prob < proxy_log_prob``; the same for ``A > 0`` with
   ``rho_pos`` (0 in every paper run);
3. on the selected tokens ``L_t = -A r + beta * D(log_prob, proxy_log_prob)`` with the
   unclipped ratio and ``D`` one of verl's ``kl_penalty`` estimators clamped to [-10, 10]
   (:func:`divergence_penalty`), by default ``k3(x, y) = clamp(exp(y - x) - (y - x) - 1, -10, 10)``;
4. aggregate with verl's ``agg_loss`` (token-mean in every paper run).

The selection runs over the tokens passed in one call: one micro-batch when verl calls it,
as the reference does (``lp_reg.selection=micro_batch``). With ``selection=batch`` (the paper's
reading, over the whole batch) the trainer selects once per step and passes ``candidates``.
"""

from __future__ import annotations

from typing import Any

import torch

from verl_lpreg.names import DIVERGENCES, RANK_BY

# verl's estimators and aggregation are imported where they are used: importing verl runs the
# verl-lpreg plugin, whose registration imports this module, which must not be half imported then.

__all__ = [
    "DIVERGENCES",
    "DIVERGENCE_CLAMP",
    "K3_CLAMP",
    "RANK_BY",
    "divergence_penalty",
    "k3_divergence",
    "lp_reg_policy_loss",
    "select_candidates",
    "select_low_prob_tokens",
    "select_tokens",
]

DIVERGENCE_CLAMP = 10.0
K3_CLAMP = DIVERGENCE_CLAMP


def divergence_penalty(log_prob: torch.Tensor, target_log_prob: torch.Tensor, name: str = "low_var_kl") -> torch.Tensor:
    """Per-token regulariser ``D(x, y)`` towards the target, clamped to [-10, 10] as the reference does.

    ``x = log_prob`` (the policy), ``y = target_log_prob`` (the proxy); verl 0.9.1's
    ``kl_penalty_forward`` estimators: ``kl``/``k1`` ``x - y``; ``abs`` ``|x - y|``; ``mse``/``k2``
    ``(x - y)^2 / 2``; ``low_var_kl``/``k3`` ``exp(y - x) - (y - x) - 1`` with ``y - x`` clamped to
    [-20, 20] before the exponential. The reference clamps only the result, which has the same
    value and gradient wherever it is finite; verl's log-ratio clamp keeps a token whose target
    lies more than ~88.7 nats above its log-prob from overflowing ``exp`` (NaN gradient).
    """
    from verl.trainer.ppo.core_algos import kl_penalty_forward

    if name not in DIVERGENCES:
        raise ValueError(f"divergence {name!r} is not supported; allowed: {', '.join(DIVERGENCES)}")
    value = kl_penalty_forward(log_prob, target_log_prob, DIVERGENCES[name])
    return torch.clamp(value, min=-DIVERGENCE_CLAMP, max=DIVERGENCE_CLAMP)


def k3_divergence(log_prob: torch.Tensor, target_log_prob: torch.Tensor) -> torch.Tensor:
    """The default divergence, ``low_var_kl``: ``clamp(exp(y - x) - (y - x) - 1, -10, 10)`` (docs/method.md §3)."""
    return divergence_penalty(log_prob, target_log_prob, "low_var_kl")


@torch.no_grad()
def select_tokens(scores: torch.Tensor, candidates: torch.Tensor, fraction: float, *, largest: bool) -> torch.Tensor:
    """Boolean mask of the ``k = max(1, int(n * fraction))`` candidates with the lowest (or, with
    ``largest=True``, the highest) ``scores``.

    ``candidates`` is a boolean mask of the eligible tokens (``n`` of them). Empty when
    ``n == 0`` or ``k <= 1`` (the reference applies the step only for ``k > 1``). Ties are
    broken by ``torch.topk`` over the row-major flattened candidates, as in the reference.
    """
    flat_candidates = candidates.reshape(-1).nonzero(as_tuple=True)[0]
    selected = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    n = flat_candidates.numel()
    k = max(1, int(n * fraction)) if n > 0 else 0
    if k > 1:
        values = scores.detach().reshape(-1)[flat_candidates]
        chosen = values.topk(k=k, largest=largest).indices
        selected[flat_candidates[chosen]] = True
    return selected.reshape(candidates.shape)


def select_low_prob_tokens(log_prob: torch.Tensor, candidates: torch.Tensor, fraction: float) -> torch.Tensor:
    """:func:`select_tokens` by the lowest ``log_prob`` (Lp-Reg's ranking)."""
    return select_tokens(log_prob, candidates, fraction, largest=False)


@torch.no_grad()
def select_candidates(
    scores: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    neg_fraction: float,
    pos_fraction: float,
    *,
    rank_by: str = "log_prob",
) -> torch.Tensor:
    """Step 2's candidates: the first ``neg_fraction`` of the valid negative-advantage tokens and
    the first ``pos_fraction`` of the positive ones (docs/method.md §3), ranked by the lowest
    ``scores`` (a log-prob, ``rank_by="log_prob"``) or the highest (an entropy, ``rank_by="entropy"``)."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by {rank_by!r} is not supported; allowed: {', '.join(RANK_BY)}")
    largest = rank_by == "entropy"
    selected = select_tokens(scores, mask & (advantages < 0), neg_fraction, largest=largest)
    if pos_fraction > 0:
        selected |= select_tokens(scores, mask & (advantages > 0), pos_fraction, largest=largest)
    return selected


def lp_reg_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    proxy_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    neg_fraction: float = 0.01,
    pos_fraction: float = 0.0,
    kl_coef: float = 1.0,
    divergence: str = "low_var_kl",
    rank_by: str = "log_prob",
    entropy: torch.Tensor | None = None,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
    loss_scale_factor: int | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Lp-Reg loss of docs/method.md §3 and its metrics; same value and gradient as the reference.

    All tensors are ``[batch, response_length]``. ``neg_fraction`` is rho, ``pos_fraction`` rho_pos,
    ``kl_coef`` beta. ``proxy_log_prob`` is the target of every token (no gradient flows into it);
    for the reference's separate positive/negative targets pass ``torch.where(advantages > 0,
    pos_target, neg_target)``. ``divergence`` names the regulariser (:func:`divergence_penalty`).
    ``rank_by="entropy"`` ranks the candidates by the highest ``entropy`` (required then) instead of
    the lowest ``log_prob``. ``rollout_is_weights`` (verl's rollout correction) multiplies the
    per-token losses as in verl's vanilla loss. ``candidates`` replaces step 2's selection by a
    precomputed mask (the batch-wide selection of ``lp_reg.selection=batch``); the ``log_prob <
    proxy_log_prob`` condition still applies. ``dp_size``, ``batch_num_tokens``,
    ``global_batch_size`` and ``loss_scale_factor`` are verl's global-batch normalisation arguments,
    passed to ``agg_loss`` unchanged. On an all-masked input the loss is 0 (with a gradient path to
    ``log_prob``) instead of verl's NaN.

    Metrics (python floats): ``lp_reg/reg_fraction`` (regularised / valid tokens),
    ``lp_reg/reg_count`` (per call, i.e. per micro-batch), ``lp_reg/gap_mean`` (mean
    ``proxy - log_prob`` on them), ``lp_reg/k3_mean`` (the mean divergence term on them,
    whichever ``divergence``), ``actor/pg_clipfrac`` and ``actor/ppo_kl`` like verl's vanilla loss.
    """
    from verl.trainer.ppo.core_algos import agg_loss

    mask = response_mask.bool()
    log_ratio = log_prob - old_log_prob
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    pg_losses = torch.maximum(unclipped, clipped)

    proxy_log_prob = proxy_log_prob.detach()
    below_proxy = log_prob.detach() < proxy_log_prob
    if candidates is None:
        if rank_by == "entropy" and entropy is None:
            raise ValueError("lp_reg_policy_loss(rank_by='entropy') needs the per-token entropy")
        scores = entropy if rank_by == "entropy" else log_prob
        selected = select_candidates(scores, advantages, mask, neg_fraction, pos_fraction, rank_by=rank_by)
    else:
        selected = candidates.bool() & mask
    regularised = selected & below_proxy
    penalty = divergence_penalty(log_prob, proxy_log_prob, divergence)
    pg_losses = torch.where(regularised, unclipped + kl_coef * penalty, pg_losses)
    if rollout_is_weights is not None:
        pg_losses = pg_losses * rollout_is_weights

    n_valid = mask.sum()
    if n_valid == 0:
        loss = (pg_losses * 0.0).sum()
    else:
        loss = agg_loss(
            loss_mat=pg_losses,
            loss_mask=mask,
            loss_agg_mode=loss_agg_mode,
            dp_size=dp_size,
            batch_num_tokens=batch_num_tokens,
            global_batch_size=global_batch_size,
            loss_scale_factor=loss_scale_factor,
        )

    with torch.no_grad():
        valid = max(int(n_valid), 1)
        n_reg = int(regularised.sum())
        reg_div = max(n_reg, 1)
        metrics = {
            "lp_reg/reg_fraction": n_reg / valid,
            "lp_reg/reg_count": float(n_reg),
            "lp_reg/gap_mean": float((proxy_log_prob - log_prob.detach())[regularised].sum()) / reg_div,
            "lp_reg/k3_mean": float(penalty.detach()[regularised].sum()) / reg_div,
            "actor/pg_clipfrac": float(((clipped > unclipped) & mask).sum()) / valid,
            "actor/ppo_kl": float((-log_ratio.detach())[mask].sum()) / valid,
        }
    return loss, metrics
