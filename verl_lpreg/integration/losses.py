"""The ``lp_reg`` and ``high_entropy`` policy losses, and the actor loss that feeds them.

verl's ``ppo_loss`` hands a registered policy loss only its fixed tensors (old and current
log-probs, advantages, response mask). :func:`extended_ppo_loss` puts the micro-batch's extra
per-token inputs (the proxy, the trainer's masks, verl's reference log-prob) and the forward's
extra outputs (the current policy's entropy and proxy) in a context variable, as padded response
tensors, and calls verl's own ``ppo_loss`` (entropy bonus, KL loss, global-batch normalisation
unchanged); the registered functions read them from there and fail loudly when they are missing.

Our verl-dependent modules are imported where they are used (see :mod:`verl_lpreg.integration.registry`).
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING

import torch
from verl.utils import tensordict_utils as tu
from verl.workers.utils.losses import ppo_loss

from verl_lpreg.names import (
    CANDIDATES_FIELD,
    CURRENT_PROXY_NEG_FIELD,
    CURRENT_PROXY_POS_FIELD,
    HIGH_ENTROPY_MASK_FIELD,
    PROXY_FIELD,
    REF_LOG_PROB_FIELD,
    TRAINER_MODE,
)

if TYPE_CHECKING:
    from verl_lpreg.config import LpRegConfig

#: Extra per-token inputs the registered losses read: fields in the layout of verl's ``log_probs``
#: (packed full sequences, sliced here as ``ppo_loss`` slices ``log_probs``) and response-aligned ones.
FULL_SEQUENCE_INPUTS = (PROXY_FIELD,)
RESPONSE_INPUTS = (CANDIDATES_FIELD, HIGH_ENTROPY_MASK_FIELD, REF_LOG_PROB_FIELD)
#: Outputs of the micro-batch's own forward (verl's layout of ``log_probs``) the losses read.
MODEL_OUTPUTS = ("entropy", CURRENT_PROXY_NEG_FIELD, CURRENT_PROXY_POS_FIELD)

_loss_inputs: ContextVar[_LazyInputs | None] = ContextVar("verl_lpreg_loss_inputs", default=None)


def extended_ppo_loss(config, model_output, data, dp_group=None):
    """verl's ``ppo_loss`` with the micro-batch's extra per-token inputs made visible to the
    registered ``lp_reg``/``high_entropy`` losses (same signature as ``ppo_loss``). Each one is
    converted to a padded response tensor when a loss first reads it, not before."""
    sources = {}
    for field in FULL_SEQUENCE_INPUTS:
        if field in data.keys():
            sources[field] = partial(_response_part, data[field], data)
    for field in RESPONSE_INPUTS:
        if field in data.keys():
            sources[field] = partial(_padded_response, data, field)
    for field in MODEL_OUTPUTS:
        if model_output.get(field, None) is not None:
            sources[field] = partial(_response_part, model_output[field].detach(), data)
    token = _loss_inputs.set(_LazyInputs(sources))
    try:
        return ppo_loss(config, model_output, data, dp_group)
    finally:
        _loss_inputs.reset(token)


class _LazyInputs:
    """Field name -> padded tensor, each computed on first read and kept for the micro-batch."""

    def __init__(self, sources: dict):
        self._sources = sources
        self._values: dict[str, torch.Tensor] = {}

    def __contains__(self, field: str) -> bool:
        return field in self._sources

    def __getitem__(self, field: str) -> torch.Tensor:
        if field not in self._values:
            self._values[field] = self._sources[field]()
        return self._values[field]


def _response_part(tensor: torch.Tensor, data) -> torch.Tensor:
    """The response part of a full-sequence nested tensor (a value per token, in the layout of
    verl's ``log_probs``): ``[bsz, max_response_len]``, zero-padded, each response token's value
    taken from the position that predicts it. Same result as verl's ``no_padding_2_padding``,
    in a few batched ops instead of a loop over the sequences."""
    values = tensor.values()
    response_lens = data["responses"].offsets().diff().to(values.device)
    ends = tensor.offsets()[1:].to(values.device) - 1
    width = tu.get_non_tensor_data(data=data, key="max_response_len", default=-1)
    if width < 0:
        width = int(response_lens.max())
    columns = torch.arange(width, device=values.device)
    inside = columns < response_lens[:, None]
    index = torch.where(inside, (ends - response_lens)[:, None] + columns, 0)
    return torch.where(inside, values[index], torch.zeros((), dtype=values.dtype, device=values.device))


def _padded_response(data, field: str) -> torch.Tensor:
    return data.select(field).to_padded_tensor()[field]


def _extra_input(field: str, like: torch.Tensor, loss_mode: str, why: str = "") -> torch.Tensor:
    extras = _loss_inputs.get()
    if extras is None or field not in extras:
        raise RuntimeError(
            f"loss_mode={loss_mode} needs the per-token tensor {field!r}{why}, and it is missing. "
            f"Run with `python -m verl_lpreg.main_ppo`, or set trainer.v1.trainer_mode={TRAINER_MODE} "
            "with verl's main_ppo: that trainer computes it and installs the loss that passes it on."
        )
    value = extras[field]
    if value.shape != like.shape:
        raise RuntimeError(f"batch field {field!r} has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
    return value.to(like.device)


def _clip_ratios(config) -> tuple[float, float]:
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return low, high


def compute_policy_loss_lp_reg(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """Registered ``lp_reg`` loss: :func:`verl_lpreg.loss.lp_reg_policy_loss` (docs/method.md §3) with the
    actor config's clip ratios, ``policy_loss.lp_reg`` group and global-batch normalisation."""
    from verl_lpreg.config import LpRegConfig, policy_loss_group
    from verl_lpreg.loss import lp_reg_policy_loss

    lp = policy_loss_group(config.policy_loss, "lp_reg", LpRegConfig)
    clip_low, clip_high = _clip_ratios(config)
    candidates = _extra_input(CANDIDATES_FIELD, log_prob, "lp_reg").bool() if lp.selection == "batch" else None
    entropy = None
    if lp.rank_by == "entropy" and candidates is None:
        why = " (the current policy's entropy, for lp_reg.rank_by=entropy: verl computes it with calculate_entropy)"
        entropy = _extra_input("entropy", log_prob, "lp_reg", why)
    return lp_reg_policy_loss(
        old_log_prob,
        log_prob,
        _target_log_prob(lp, log_prob, advantages),
        advantages,
        response_mask,
        neg_fraction=lp.neg_fraction,
        pos_fraction=lp.pos_fraction,
        kl_coef=lp.kl_coef,
        divergence=lp.divergence,
        rank_by=lp.rank_by,
        entropy=entropy,
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        loss_agg_mode=loss_agg_mode,
        rollout_is_weights=rollout_is_weights,
        candidates=candidates,
        **config.global_batch_info,
    )


def _target_log_prob(lp: LpRegConfig, log_prob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The per-token target of ``lp.proxy_source`` (docs/method.md §10): pi_old's proxy from the
    old-log-prob forward, the current policy's from this forward (its negative target, and the
    positive one on positive-advantage tokens), or verl's reference-model log-prob."""
    if lp.proxy_source == "old":
        return _extra_input(PROXY_FIELD, log_prob, "lp_reg").float()
    if lp.proxy_source == "ref":
        why = " (verl's reference log-prob, for lp_reg.proxy_source=ref: it needs a reference model)"
        return _extra_input(REF_LOG_PROB_FIELD, log_prob, "lp_reg", why).float()
    why = " (the current policy's proxy from the update's forward, for lp_reg.proxy_source=current)"
    target = _extra_input(CURRENT_PROXY_NEG_FIELD, log_prob, "lp_reg", why).float()
    if lp.pos_fraction > 0:
        positive = _extra_input(CURRENT_PROXY_POS_FIELD, log_prob, "lp_reg", why).float()
        target = torch.where(advantages > 0, positive, target)
    return target


def compute_policy_loss_high_entropy(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """Registered ``high_entropy`` loss (80/20 baseline, :mod:`verl_lpreg.high_entropy`): the
    authors' clipped PPO loss on the ``top_fraction`` highest-entropy tokens, ranked in this
    micro-batch by the update forward's entropy (``selection=micro_batch``), or by the trainer's
    batch-wide mask (``selection=batch``)."""
    from verl_lpreg.config import HighEntropyConfig, policy_loss_group
    from verl_lpreg.high_entropy import high_entropy_mask, high_entropy_policy_loss

    if rollout_is_weights is not None:
        raise ValueError("loss_mode=high_entropy does not support rollout correction weights")
    he = policy_loss_group(config.policy_loss, "high_entropy", HighEntropyConfig)
    if he.selection == "micro_batch":
        entropy = _extra_input("entropy", log_prob, "high_entropy")
        token_mask = high_entropy_mask(entropy, response_mask, he.top_fraction)
    else:
        token_mask = _extra_input(HIGH_ENTROPY_MASK_FIELD, log_prob, "high_entropy").bool()
    clip_low, clip_high = _clip_ratios(config)
    return high_entropy_policy_loss(
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        token_mask,
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        loss_agg_mode=loss_agg_mode,
        selection=he.selection,
        **config.global_batch_info,
    )
