"""Config dataclasses for the Lp-Reg and 80/20 policy losses (docs/method.md §2-§4).

They hang under ``actor_rollout_ref.actor.policy_loss`` in verl's hydra config:
``verl_lpreg/config/lp_reg_trainer.yaml`` points ``policy_loss._target_`` at
:class:`ExtendedPolicyLossConfig`, so verl's own ``omega_conf_to_dataclass`` builds them, and
hydra rejects unknown keys at compose time. Every field is validated in ``__post_init__``
with a message that names the full key and the allowed range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

from verl_lpreg.names import DIVERGENCES, RANK_BY
from verl_lpreg.proxy import PROXY_MODES

__all__ = [
    "LP_REG_KEY",
    "ExtendedPolicyLossConfig",
    "HighEntropyConfig",
    "LpRegConfig",
    "policy_loss_group",
]

LP_REG_KEY = "actor_rollout_ref.actor.policy_loss.lp_reg"
SELECTION_SCOPES = ("micro_batch", "batch")
PROXY_SOURCES = ("old", "current", "ref")
HIGH_ENTROPY_KEY = "actor_rollout_ref.actor.policy_loss.high_entropy"
HIGH_ENTROPY_SELECTIONS = ("micro_batch", "batch")


def _check_fraction(key: str, value: float, *, allow_zero: bool) -> None:
    _check_finite(key, value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{key}={value!r} is out of range: allowed {interval}")


def _check_finite(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r} must be a finite number")


def _check_choice(key: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is not supported: allowed {allowed}")


@dataclass
class LpRegConfig(BaseConfig):
    """Lp-Reg hyperparameters (docs/method.md §2-§3, §9; paper symbols in brackets).

    proxy_mode: ``minp`` keeps ``p >= min_p * p_max``; ``fixed`` keeps ``p >= min_p`` (no
        ``soft`` there: the reference ignores it, so the combination is refused).
    min_p [kappa]: the proxy threshold, in [0, 1]; 0.02 in every paper run; 0 = no filter (the
        proxy is the source policy's own distribution at the temperature), in either mode.
    soft: fill removed logits with the row minimum instead of -1e4 (``minp`` mode only).
    neg_fraction [rho]: share of the negative-advantage tokens (per micro-batch) ranked first by
        ``rank_by`` that are candidates for regularisation; 0.01 (14B), 0.005 (32B).
    pos_fraction: the same for positive advantages; 0 in every paper run.
    kl_coef [beta]: weight of the divergence term; 1.
    divergence: the regulariser towards the proxy, in verl's ``kl_penalty`` names, each clamped
        to [-10, 10] as the reference does: ``low_var_kl`` (``k3``, the reference's default),
        ``kl`` (``k1``), ``abs``, ``mse`` (``k2``).
    rank_by: which tokens are the rho-share: the lowest ``log_prob`` (Lp-Reg) or the highest
        ``entropy`` (the paper's ablation).
    selection: where the rho-quantile is taken. ``micro_batch`` (the reference): over the
        tokens of each micro-batch, by the current policy. ``batch`` (the paper's reading): over
        the whole training batch, once per step, by pi_old (the current policy's at the update
        when training on-policy).
    proxy_source: whose distribution is filtered into the proxy: ``old`` (pi_old, from the
        old-log-prob forward: the paper), ``current`` (the current policy inside the update, no
        gradient through it: the reference's ``minp_old_log_prob=False``) or ``ref`` (the
        reference model's log-prob, unfiltered: the reference's ``minp_ref_dist``; needs
        ``min_p=0`` and a reference model).
    pos_target_temperature, neg_target_temperature: with ``proxy_source=current``, the
        temperature of the proxy for positive- / negative-advantage tokens (the reference's
        ``minp_pos_tgt_temperature`` / ``minp_neg_tgt_temperature``); null = the rollout
        temperature. Only ``proxy_source=current`` reads them.
    """

    proxy_mode: str = "minp"
    min_p: float = 0.02
    soft: bool = False
    neg_fraction: float = 0.01
    pos_fraction: float = 0.0
    kl_coef: float = 1.0
    divergence: str = "low_var_kl"
    rank_by: str = "log_prob"
    selection: str = "micro_batch"
    proxy_source: str = "old"
    pos_target_temperature: float | None = None
    neg_target_temperature: float | None = None

    def __post_init__(self):
        _check_choice(f"{LP_REG_KEY}.proxy_mode", self.proxy_mode, PROXY_MODES)
        _check_fraction(f"{LP_REG_KEY}.min_p", self.min_p, allow_zero=True)
        _check_fraction(f"{LP_REG_KEY}.neg_fraction", self.neg_fraction, allow_zero=True)
        _check_fraction(f"{LP_REG_KEY}.pos_fraction", self.pos_fraction, allow_zero=True)
        _check_finite(f"{LP_REG_KEY}.kl_coef", self.kl_coef)
        if not self.kl_coef >= 0.0:
            raise ValueError(f"{LP_REG_KEY}.kl_coef={self.kl_coef!r} is out of range: allowed >= 0")
        _check_choice(f"{LP_REG_KEY}.divergence", self.divergence, tuple(DIVERGENCES))
        _check_choice(f"{LP_REG_KEY}.rank_by", self.rank_by, RANK_BY)
        _check_choice(f"{LP_REG_KEY}.selection", self.selection, SELECTION_SCOPES)
        _check_choice(f"{LP_REG_KEY}.proxy_source", self.proxy_source, PROXY_SOURCES)
        if not isinstance(self.soft, bool):
            raise ValueError(f"{LP_REG_KEY}.soft={self.soft!r} must be true or false")
        if self.soft and self.proxy_mode == "fixed":
            raise ValueError(
                f"{LP_REG_KEY}.soft=True is not supported with proxy_mode='fixed' (the reference ignores soft in "
                "fixed mode and always fills -1e4): set soft=false, or proxy_mode=minp"
            )
        for name in ("pos_target_temperature", "neg_target_temperature"):
            value = getattr(self, name)
            if value is None:
                continue
            _check_finite(f"{LP_REG_KEY}.{name}", value)
            if not value > 0:
                raise ValueError(f"{LP_REG_KEY}.{name}={value!r} is out of range: allowed > 0, or null")
            if self.proxy_source != "current":
                raise ValueError(
                    f"{LP_REG_KEY}.{name}={value!r} is read only with proxy_source='current' "
                    f"(got proxy_source={self.proxy_source!r}): set it to null, or proxy_source=current"
                )
        if self.proxy_source == "ref" and self.min_p != 0:
            raise ValueError(
                f"{LP_REG_KEY}.proxy_source='ref' uses the reference model's log-prob unfiltered (the reference's "
                f"minp_ref_dist), so min_p={self.min_p!r} would be ignored: set {LP_REG_KEY}.min_p=0"
            )

    def target_temperatures(self, rollout_temperature: float) -> tuple[float, float]:
        """``(positive, negative)`` proxy temperatures of ``proxy_source=current``."""
        pos, neg = self.pos_target_temperature, self.neg_target_temperature
        return (rollout_temperature if pos is None else pos, rollout_temperature if neg is None else neg)


@dataclass
class HighEntropyConfig(BaseConfig):
    """80/20 baseline: train only on the ``top_fraction`` highest-entropy tokens.

    top_fraction: share of the valid tokens kept, ``max(1, int(top_fraction * n))`` of ``n``.
    selection: ``micro_batch`` (the authors'): ranked by the current policy's entropy within each
        micro-batch of the update; ``batch``: ranked by pi_old's entropy over the whole training
        batch, once per step (verl_lpreg/high_entropy.py).
    """

    top_fraction: float = 0.2
    selection: str = "micro_batch"

    def __post_init__(self):
        _check_fraction(f"{HIGH_ENTROPY_KEY}.top_fraction", self.top_fraction, allow_zero=False)
        if self.selection not in HIGH_ENTROPY_SELECTIONS:
            raise ValueError(
                f"{HIGH_ENTROPY_KEY}.selection={self.selection!r} is not supported: allowed {HIGH_ENTROPY_SELECTIONS}"
            )


@dataclass
class ExtendedPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the ``lp_reg`` and ``high_entropy`` groups."""

    lp_reg: LpRegConfig = field(default_factory=LpRegConfig)
    high_entropy: HighEntropyConfig = field(default_factory=HighEntropyConfig)


def policy_loss_group(policy_loss, name: str, group_cls: type):
    """The validated ``name`` group (``lp_reg`` or ``high_entropy``) of a policy-loss config.

    ``policy_loss`` is a dataclass or a DictConfig. A stock ``PolicyLossConfig`` (a run that
    did not switch ``_target_``) has no such group: the paper's defaults apply.
    """
    group = policy_loss.get(name, None) if policy_loss is not None else None
    if group is None:
        return group_cls()
    if isinstance(group, group_cls):
        return group
    from verl.utils.config import omega_conf_to_dataclass

    # verl's structured conversion (typed like the dataclass, unknown keys rejected by name);
    # without _target_, which would send it through hydra's instantiate and wrap our errors.
    fields = {k: v for k, v in dict(group).items() if k != "_target_"}
    return omega_conf_to_dataclass(fields, dataclass_type=group_cls)
