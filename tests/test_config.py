"""Our hydra config composes over verl 0.9.1's ppo_trainer and rejects bad Lp-Reg settings."""

import os

import pytest
import verl
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from verl.utils.config import omega_conf_to_dataclass

from verl_lpreg.config import ExtendedPolicyLossConfig, LpRegConfig
from verl_lpreg.integration.checks import check_config
from verl_lpreg.names import PASSTHROUGH_CHAT_TEMPLATE
from verl_lpreg.testing.trainer_config import compose_trainer_config


def test_defaults_are_the_paper_settings_on_top_of_verl():
    cfg = compose_trainer_config()
    assert cfg.trainer.v1.trainer_mode == "lp_reg"
    assert cfg.algorithm.adv_estimator  # verl's own keys are all there
    policy_loss = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    assert isinstance(policy_loss, ExtendedPolicyLossConfig)
    assert policy_loss.loss_mode == "lp_reg"
    assert isinstance(policy_loss.lp_reg, LpRegConfig)
    assert (policy_loss.lp_reg.min_p, policy_loss.lp_reg.neg_fraction) == (0.02, 0.01)
    assert cfg.reward.custom_reward_function.path.endswith(os.path.join("verl_lpreg", "reward.py"))
    assert cfg.actor_rollout_ref.model.custom_chat_template == PASSTHROUGH_CHAT_TEMPLATE
    check_config(cfg)


def test_overrides_reach_the_dataclass():
    cfg = compose_trainer_config(
        "actor_rollout_ref.actor.policy_loss.lp_reg.min_p=0.1",
        "actor_rollout_ref.actor.policy_loss.lp_reg.proxy_mode=fixed",
        "actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.005",
        "actor_rollout_ref.actor.policy_loss.lp_reg.selection=batch",
    )
    lp = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).lp_reg
    assert (lp.min_p, lp.proxy_mode, lp.neg_fraction, lp.selection) == (0.1, "fixed", 0.005, "batch")


def test_typo_in_a_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException, match="min_pp"):
        compose_trainer_config("actor_rollout_ref.actor.policy_loss.lp_reg.min_pp=0.1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lp_reg.min_p=1.5", r"lp_reg.min_p=1.5 is out of range: allowed \[0, 1\]"),
        ("lp_reg.min_p=-0.1", r"lp_reg.min_p=-0.1 is out of range: allowed \[0, 1\]"),
        ("lp_reg.neg_fraction=-0.1", r"lp_reg.neg_fraction=-0.1 is out of range: allowed \[0, 1\]"),
        ("lp_reg.kl_coef=-1", r"lp_reg.kl_coef=-1(\.0)? is out of range"),
        ("lp_reg.proxy_mode=topk", r"lp_reg.proxy_mode='topk' is not supported"),
        ("high_entropy.top_fraction=0", r"high_entropy.top_fraction=0(\.0)? is out of range"),
        ("lp_reg.selection=global", r"lp_reg.selection='global' is not supported"),
    ],
)
def test_bad_values_are_rejected_with_the_key_name(override, message):
    group = override.split(".")[0]
    cfg = compose_trainer_config(
        f"actor_rollout_ref.actor.policy_loss.{override}",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={'high_entropy' if group == 'high_entropy' else 'lp_reg'}",
    )
    with pytest.raises(ValueError, match=message):
        check_config(cfg)
    with pytest.raises(Exception, match=message):  # hydra wraps it when verl builds the dataclass
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)


def test_unknown_loss_mode_lists_the_registered_ones():
    cfg = compose_trainer_config("actor_rollout_ref.actor.policy_loss.loss_mode=lp_regg")
    with pytest.raises(ValueError, match=r"loss_mode='lp_regg' is not a registered policy loss.*lp_reg"):
        check_config(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode"),
        (["actor_rollout_ref.model.use_fused_kernels=true"], "use_fused_kernels"),
        (["actor_rollout_ref.actor.strategy=megatron"], "strategy"),
    ],
)
def test_configurations_without_a_proxy_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(compose_trainer_config(*overrides))


def test_stock_verl_config_with_lp_reg_uses_the_paper_defaults():
    """`python -m verl.trainer.main_ppo ... loss_mode=lp_reg trainer.v1.trainer_mode=lp_reg` works too."""
    verl_config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=verl_config_dir, version_base=None):
        cfg = compose(
            "ppo_trainer",
            overrides=["actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg", "trainer.v1.trainer_mode=lp_reg"],
        )
    check_config(cfg)
    from verl_lpreg.config import policy_loss_group

    assert policy_loss_group(cfg.actor_rollout_ref.actor.policy_loss, "lp_reg", LpRegConfig) == LpRegConfig()
