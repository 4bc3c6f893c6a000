"""The 80/20 baseline: policy gradient on the high-entropy minority tokens only.

Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive Effective
Reinforcement Learning for LLM Reasoning" (arXiv 2506.01939). Table 1's 80/20 rows come from
the Lp-Reg authors' implementation (``compute_policy_loss_8020_split`` in their verl fork;
docs/method.md §10), which, per micro-batch of the update:

1. takes the token entropy of the **current** policy from the update's forward pass;
2. selects, without gradient, among the ``n`` valid response tokens the
   ``k = max(1, int(0.2 * n))`` with the largest entropy;
3. computes the clipped PPO term ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` with
   ``r = exp(log_prob - old_log_prob)`` (no dual clip, no clamp of the log-ratio) and
   aggregates it with ``agg_loss`` over the selected tokens only: with ``token-mean`` the sum over
   the selected tokens divided by their number.

:func:`high_entropy_mask` and :func:`high_entropy_policy_loss` are those rules as pure torch
functions. ``policy_loss.high_entropy.selection`` picks where the ranking happens:

* ``micro_batch`` (default, the authors'): inside the loss, by the current policy's entropy,
  per micro-batch. verl 0.9.1 normalises ``token-mean`` by the token count of the whole
  mini-batch (``batch_num_tokens``, all response tokens here) instead of summing per-micro-batch
  means as the authors' older verl does; the loss keeps the authors' denominator by weighting
  each selected token by ``n / k`` of its micro-batch, so the mini-batch loss is the
  token-count-weighted mean of the micro-batches' selected-token means (the authors weight by
  sequence count: equal under verl's token-balanced dynamic batching).
* ``batch``: the trainer ranks pi_old's entropy over the whole training batch once per step and
  sets ``loss_mask`` to the selection, so verl's ``batch_num_tokens`` is the selected count and
  ``token-mean`` is the mean over the batch's selected tokens. On-policy pi_old is the current
  policy: only the scope of the ranking differs.

Ties are broken deterministically (see :func:`high_entropy_mask`); the authors' ``topk`` leaves
them unspecified.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import agg_loss

__all__ = ["SELECTIONS", "high_entropy_mask", "high_entropy_policy_loss", "num_selected_tokens"]

#: ``policy_loss.high_entropy.selection`` values.
SELECTIONS = ("micro_batch", "batch")


def num_selected_tokens(num_valid: int, top_fraction: float) -> int:
    """How many tokens :func:`high_entropy_mask` keeps out of ``num_valid`` valid ones.

    The authors' count ``max(1, int(num_valid * top_fraction))``; ``0`` when ``num_valid == 0``.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if num_valid <= 0:
        return 0
    return max(1, int(num_valid * top_fraction))


@torch.no_grad()
def high_entropy_mask(entropy: torch.Tensor, response_mask: torch.Tensor, top_fraction: float = 0.2) -> torch.Tensor:
    """Boolean mask of the top ``top_fraction`` of valid tokens by entropy, over the whole tensor.

    With ``V = {t : response_mask_t}`` (``n = |V|``) and ``k = num_selected_tokens(n,
    top_fraction)``, the result is true on exactly ``k`` positions: the ``k`` members of ``V``
    with the largest ``entropy``. The ranking is global over every position of the tensors
    given (all rows together), so call it once on the full training batch for a per-batch
    selection.

    Edge cases:

    * all positions masked (``n == 0``): an all-false mask;
    * ``top_fraction == 1``: exactly ``response_mask``;
    * ties: tokens are ranked by descending entropy with a stable sort over the row-major
      flattened positions, so among equal entropies at the cut the earlier position (lower
      row, then earlier token) is kept. Exactly ``k`` tokens are selected even with ties.
    * masked positions are never selected, whatever their entropy (NaN or inf included).

    Args:
        entropy: per-token entropy, any shape (typically ``(batch, response_length)``).
        response_mask: same shape; nonzero/true marks a valid response token.
        top_fraction: fraction of valid tokens to keep, in ``(0, 1]``.

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


def high_entropy_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    token_mask: torch.Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    loss_agg_mode: str = "token-mean",
    selection: str = "micro_batch",
    **agg_kwargs: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The authors' 80/20 policy loss on the selected (high-entropy) tokens.

    Per token, with ``r_t = exp(log_prob_t - old_log_prob_t)`` and advantage ``A_t``::

        L_t = max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high))

    (no dual clip). With ``M = response_mask & token_mask`` (``k = |M|`` of ``n`` valid tokens):

    * ``selection="micro_batch"`` and ``token-mean``: ``agg_loss(L * M * n / k, response_mask)``.
      Without global batch info that is ``sum_{t in M} L_t / k``, the mean over the selected
      tokens; with verl's (``agg_kwargs``: ``dp_size``, ``batch_num_tokens``, ...) it is
      ``sum_{t in M} L_t * (n / k) / batch_num_tokens * dp_size``, each micro-batch's selected mean
      weighted by its share of the mini-batch's tokens (module docstring).
    * otherwise: ``agg_loss(L, M, loss_agg_mode, **agg_kwargs)``. With ``selection="batch"`` the
      trainer has made ``loss_mask`` the selection, so verl's counts are the selected ones.

    A call with no selected token gives a zero loss that still backpropagates (zero gradients).

    Args:
        old_log_prob, log_prob, advantages, response_mask: ``(batch, response_length)``.
        token_mask: same shape, the selection (:func:`high_entropy_mask` of this micro-batch's
            current entropy, or the trainer's batch-wide mask sliced to it).
        clip_ratio_low, clip_ratio_high: ``eps_low``, ``eps_high``.
        loss_agg_mode: any mode of verl's ``agg_loss``.
        selection: ``micro_batch`` or ``batch`` (see above).
        **agg_kwargs: verl's global batch info for ``agg_loss``.

    Returns:
        ``(loss, metrics)``; metrics: ``actor/pg_clipfrac`` (share of the selected tokens whose
        clipped term is the larger), ``actor/ppo_kl`` (mean ``old_log_prob - log_prob`` over the
        valid tokens, as the authors log it), ``actor/high_entropy_token_frac`` (k / n).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    valid = response_mask.bool()
    selected = valid & token_mask.bool()
    n_valid, n_selected = int(valid.sum()), int(selected.sum())
    log_ratio = (log_prob - old_log_prob).masked_fill(~valid, 0.0)  # padding garbage must not leak
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    per_token = torch.maximum(unclipped, clipped).masked_fill(~selected, 0.0)
    if n_selected == 0:
        loss = per_token.sum()  # zero, with a graph and zero gradients
    elif selection == "micro_batch" and loss_agg_mode == "token-mean":
        loss = agg_loss(per_token * (n_valid / n_selected), valid, loss_agg_mode, **agg_kwargs)
    else:
        loss = agg_loss(per_token, selected, loss_agg_mode, **agg_kwargs)
    with torch.no_grad():
        clipfrac = (clipped > unclipped)[selected].float().mean().item() if n_selected else 0.0
        ppo_kl = (-log_ratio)[valid].mean().item() if n_valid else 0.0
    metrics = {
        "actor/pg_clipfrac": clipfrac,
        "actor/ppo_kl": ppo_kl,
        "actor/high_entropy_token_frac": n_selected / n_valid if n_valid else 0.0,
    }
    return loss, metrics
