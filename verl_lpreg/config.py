"""Config dataclasses for the Lp-Reg and 80/20 policy losses (docs/method.md §2-§4).

They hang under ``actor_rollout_ref.actor.policy_loss`` in verl's hydra config:
``verl_lpreg/config/lp_reg_trainer.yaml`` points ``policy_loss._target_`` at
:class:`ExtendedPolicyLossConfig`, so verl's own ``omega_conf_to_dataclass`` builds them, and
hydra rejects unknown keys at compose time. Every field is validated in ``__post_init__``
with a message that names the full key and the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

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
HIGH_ENTROPY_KEY = "actor_rollout_ref.actor.policy_loss.high_entropy"


def _check_fraction(key: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{key}={value!r} is out of range: allowed {interval}")


@dataclass
class LpRegConfig(BaseConfig):
    """Lp-Reg hyperparameters (docs/method.md §2-§3; paper symbols in brackets).

    proxy_mode: ``minp`` keeps ``p >= min_p * p_max``; ``fixed`` keeps ``p >= min_p``.
    min_p [kappa]: the proxy threshold, in (0, 1]; 0.02 in every paper run.
    soft: fill removed logits with the row minimum instead of -1e4.
    neg_fraction [rho]: share of the negative-advantage tokens (per micro-batch) with the
        lowest probability that are candidates for regularisation; 0.01 (14B), 0.005 (32B).
    pos_fraction: the same for positive advantages; 0 in every paper run.
    kl_coef [beta]: weight of the k3 term; 1.
    selection: where the rho-quantile is taken. ``micro_batch`` (the reference): over the
        tokens of each micro-batch, by the current log-prob. ``batch`` (the paper's reading): over
        the whole training batch, once per step, by pi_old's log-prob (the current policy's at the
        update when training on-policy).
    """

    proxy_mode: str = "minp"
    min_p: float = 0.02
    soft: bool = False
    neg_fraction: float = 0.01
    pos_fraction: float = 0.0
    kl_coef: float = 1.0
    selection: str = "micro_batch"

    def __post_init__(self):
        if self.proxy_mode not in PROXY_MODES:
            raise ValueError(f"{LP_REG_KEY}.proxy_mode={self.proxy_mode!r} is not supported: allowed {PROXY_MODES}")
        _check_fraction(f"{LP_REG_KEY}.min_p", self.min_p, allow_zero=False)
        _check_fraction(f"{LP_REG_KEY}.neg_fraction", self.neg_fraction, allow_zero=True)
        _check_fraction(f"{LP_REG_KEY}.pos_fraction", self.pos_fraction, allow_zero=True)
        if not self.kl_coef >= 0.0:
            raise ValueError(f"{LP_REG_KEY}.kl_coef={self.kl_coef!r} is out of range: allowed >= 0")
        if self.selection not in SELECTION_SCOPES:
            raise ValueError(f"{LP_REG_KEY}.selection={self.selection!r} is not supported: allowed {SELECTION_SCOPES}")
        if not isinstance(self.soft, bool):
            raise ValueError(f"{LP_REG_KEY}.soft={self.soft!r} must be true or false")


@dataclass
class HighEntropyConfig(BaseConfig):
    """80/20 baseline: train only on the ``top_fraction`` highest-entropy tokens of each batch."""

    top_fraction: float = 0.2

    def __post_init__(self):
        _check_fraction(f"{HIGH_ENTROPY_KEY}.top_fraction", self.top_fraction, allow_zero=False)


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
