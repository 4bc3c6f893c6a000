"""The 80/20 baseline: policy gradient on the high-entropy minority tokens only.

Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective
Reinforcement Learning for LLM Reasoning" (arXiv 2506.01939). Their public code (a verl fork,
``verl/trainer/ppo/core_algos.py::get_global_entropy_top_mask`` and
``verl/workers/actor/dp_actor.py::update_policy``) does, per micro-batch:

1. token entropy ``H_t = -sum_v p_v log p_v`` of the current policy (same forward as the
   log-probs, logits divided by the rollout temperature);
2. selection, without gradient: among the valid response tokens (``n`` of them) the
   ``k = max(1, int(n * rho + 0.9999))`` tokens with the largest entropy (``rho = 0.2``);
3. the usual PPO/GRPO clipped loss, aggregated with ``agg_loss`` over the mask
   ``response_mask * entropy_top_mask``: with ``token-mean`` the sum of the per-token losses
   of the selected tokens divided by the **number of selected tokens** (not by all tokens).

This module keeps the two pieces as pure torch functions. Differences to the authors' code,
chosen by this package's design (the trainer owns the wiring):

* the entropy is pi_old's (computed with ``old_log_prob``, same temperature), and the mask
  is built once per training batch over the whole batch, not per micro-batch from the
  current policy. On-policy (one mini-batch, one epoch) pi_old is the current policy, so
  only the selection scope differs (batch instead of micro-batch).
* ``top_fraction == 0`` selects nothing (the authors' ``max(1, ...)`` would keep one token).
* ties are broken deterministically (see :func:`high_entropy_mask`).
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

__all__ = ["high_entropy_mask", "high_entropy_policy_loss", "num_selected_tokens"]


def num_selected_tokens(num_valid: int, top_fraction: float) -> int:
    """How many tokens :func:`high_entropy_mask` keeps out of ``num_valid`` valid ones.

    ``0`` when ``num_valid == 0`` or ``top_fraction == 0``; otherwise the authors' rounding
    ``max(1, int(num_valid * top_fraction + 0.9999))`` (a ceiling that forgives float noise
    such as ``15 * 0.2 == 3.0000000000000004``), capped at ``num_valid``.
    """
    if not 0.0 <= top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
    if num_valid <= 0 or top_fraction == 0.0:
        return 0
    return min(num_valid, max(1, int(num_valid * top_fraction + 0.9999)))


@torch.no_grad()
def high_entropy_mask(entropy: torch.Tensor, response_mask: torch.Tensor, top_fraction: float = 0.2) -> torch.Tensor:
    """Boolean mask of the top ``top_fraction`` of valid tokens by entropy, over the whole tensor.

    With ``V = {t : response_mask_t}`` (``n = |V|``) and ``k = num_selected_tokens(n,
    top_fraction)``, the result is true on exactly ``k`` positions: the ``k`` members of ``V``
    with the largest ``entropy``. The ranking is global over every position of the tensors
    given (all rows together), so call it once on the full training batch for a per-batch
    selection.

    Edge cases:

    * all positions masked (``n == 0``) or ``top_fraction == 0``: an all-false mask;
    * ``top_fraction == 1``: exactly ``response_mask``;
    * ties: tokens are ranked by descending entropy with a stable sort over the row-major
      flattened positions, so among equal entropies at the cut the earlier position (lower
      row, then earlier token) is kept. Exactly ``k`` tokens are selected even with ties.
    * masked positions are never selected, whatever their entropy (NaN or inf included).

    Args:
        entropy: per-token entropy, any shape (typically ``(batch, response_length)``).
        response_mask: same shape; nonzero/true marks a valid response token.
        top_fraction: fraction of valid tokens to keep, in ``[0, 1]``.

    Returns:
        ``torch.bool`` tensor of ``entropy``'s shape and device.
    """
    if entropy.shape != response_mask.shape:
        raise ValueError(f"entropy {tuple(entropy.shape)} and response_mask {tuple(response_mask.shape)} differ")
    valid = response_mask.reshape(-1).bool()
    valid_idx = valid.nonzero(as_tuple=True)[0]
    k = num_selected_tokens(valid_idx.numel(), top_fraction)
    selected = torch.zeros(valid.numel(), dtype=torch.bool, device=entropy.device)
    if k > 0:
        values = entropy.detach().reshape(-1)[valid_idx].float()
        order = torch.sort(values, descending=True, stable=True).indices[:k]
        selected[valid_idx[order]] = True
    return selected.reshape(entropy.shape)


class _ClipConfig:
    """The few fields :func:`verl.trainer.ppo.core_algos.compute_policy_loss_vanilla` reads."""

    def __init__(self, clip_ratio_low: float, clip_ratio_high: float, clip_ratio_c: float, global_batch_info: dict):
        self.clip_ratio = clip_ratio_low
        self.clip_ratio_low = clip_ratio_low
        self.clip_ratio_high = clip_ratio_high
        self.clip_ratio_c = clip_ratio_c
        self.global_batch_info = global_batch_info

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


def high_entropy_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    token_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO dual-clip policy loss on the selected (high-entropy) tokens only.

    Per token, with ``r_t = exp(clamp(log_prob_t - old_log_prob_t, -20, 20))`` and advantage
    ``A_t`` (verl's ``compute_policy_loss_vanilla``, which this function calls)::

        L_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))   if A_t >= 0
        L_t = min(max(...as above...), -A_t * c)                          if A_t <  0

    and the loss is ``agg_loss(L, M, loss_agg_mode, **agg_kwargs)`` with the selection mask
    ``M = response_mask & token_mask``. For ``token-mean`` without global info this is
    ``sum_{t in M} L_t / |M|``: the mean over the **selected** tokens, as in the authors'
    code. Under verl's global-batch normalisation (``agg_kwargs`` = ``dp_size``,
    ``batch_num_tokens``, ``global_batch_size``, ``loss_scale_factor``, passed through
    unchanged) it is ``sum_{t in M} L_t / batch_num_tokens * dp_size``: to keep the authors'
    normalisation the caller must count the selected tokens of the global mini-batch in
    ``batch_num_tokens`` (and the sequences with a selected token in ``global_batch_size``
    for the ``seq-mean-*`` modes); counting all response tokens instead scales the loss by
    about ``top_fraction``.

    A micro-batch with no selected token gives a zero loss that still backpropagates (zero
    gradients) instead of ``0/0``.

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(batch, response_length)``.
        token_mask: same shape, the selection (e.g. :func:`high_entropy_mask` of pi_old's
            entropy over the full batch, sliced to this micro-batch).
        clip_ratio_low, clip_ratio_high: ``eps_low``, ``eps_high``.
        clip_ratio_c: dual-clip bound ``c`` for negative advantages (``> 1``).
        loss_agg_mode: any mode of verl's ``agg_loss``.
        **agg_kwargs: verl's global batch info for ``agg_loss``.

    Returns:
        ``(loss, metrics)``; metrics: ``actor/pg_clipfrac``, ``actor/ppo_kl``,
        ``actor/pg_clipfrac_lower`` (over the selected tokens, from verl), and
        ``actor/high_entropy_token_frac`` (selected / valid tokens in this call).
    """
    selected = response_mask.bool() & token_mask.bool()
    config = _ClipConfig(clip_ratio_low, clip_ratio_high, clip_ratio_c, dict(agg_kwargs))
    loss, metrics = compute_policy_loss_vanilla(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=selected,
        loss_agg_mode=loss_agg_mode,
        config=config,  # type: ignore[arg-type]
    )
    n_selected = int(selected.sum().item())
    if n_selected == 0:
        # agg_loss would divide 0 by 0 without global info; keep the graph, zero gradients.
        loss = log_prob.masked_fill(~selected, 0.0).sum()
    n_valid = int(response_mask.bool().sum().item())
    metrics["actor/high_entropy_token_frac"] = n_selected / n_valid if n_valid else 0.0
    return loss, metrics
