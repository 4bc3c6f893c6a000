"""Start-up checks: refuse, before any worker starts, the runs that cannot compute what the loss needs."""

from __future__ import annotations

from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

from verl_lpreg.config import HighEntropyConfig, LpRegConfig, policy_loss_group
from verl_lpreg.val_protocol import CONFIG_KEY as VALIDATION_KEY
from verl_lpreg.val_protocol import ValidationProtocol

#: Loss modes that read extra per-token inputs, computed by the Lp-Reg trainer and engine.
EXTRA_INPUT_LOSS_MODES = ("lp_reg", "high_entropy")


def check_config(config) -> None:
    """Validate the Lp-Reg keys of a composed trainer config; raise ``ValueError`` naming the key."""
    ValidationProtocol.from_config(config.get(VALIDATION_KEY, None))
    actor = config.actor_rollout_ref.actor
    loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
    if loss_mode not in POLICY_LOSS_REGISTRY:
        from verl_lpreg.plugin import REGISTRATION_ERROR

        why = f" (verl-lpreg failed to register: {REGISTRATION_ERROR})" if REGISTRATION_ERROR else ""
        raise ValueError(
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r} is not a registered policy loss{why}; "
            f"allowed: {', '.join(sorted(POLICY_LOSS_REGISTRY))}"
        )
    if loss_mode == "lp_reg":
        lp_reg = policy_loss_group(actor.policy_loss, "lp_reg", LpRegConfig)
        if lp_reg.proxy_source == "ref":
            from verl.trainer.ppo.utils import need_reference_policy

            if not need_reference_policy(config):
                raise ValueError(
                    "actor_rollout_ref.actor.policy_loss.lp_reg.proxy_source='ref' needs a reference model, and verl "
                    "builds one only with actor_rollout_ref.actor.use_kl_loss=True or algorithm.use_kl_in_reward=True: "
                    "set actor_rollout_ref.actor.use_kl_loss=True (with kl_loss_coef=0 for no KL term)"
                )
        rollout_corr = config.algorithm.get("rollout_correction", None)
        if rollout_corr is not None and rollout_corr.get("bypass_mode", False):
            raise ValueError(
                "loss_mode=lp_reg needs pi_old's logits, but algorithm.rollout_correction.bypass_mode=True skips "
                "the old-log-prob forward (old_log_probs = rollout_log_probs): set bypass_mode=False"
            )
        if config.actor_rollout_ref.model.get("use_fused_kernels", False):
            raise ValueError(
                "loss_mode=lp_reg needs pi_old's logits, and actor_rollout_ref.model.use_fused_kernels=True never "
                "materialises them: set it to False"
            )
    if loss_mode == "high_entropy":
        policy_loss_group(actor.policy_loss, "high_entropy", HighEntropyConfig)
    if loss_mode in EXTRA_INPUT_LOSS_MODES and actor.get("strategy") not in ("fsdp", "fsdp2"):
        raise ValueError(
            f"loss_mode={loss_mode} is wired into verl's FSDP engine only; "
            f"actor_rollout_ref.actor.strategy={actor.get('strategy')!r} is not supported (use fsdp or fsdp2)"
        )
