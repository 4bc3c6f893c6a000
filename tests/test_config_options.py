"""The ablation keys of ``lp_reg`` (docs/method.md §9-§10): composed by hydra over verl's config,
built by verl's own conversion, and refused with the key and the allowed values when wrong."""

import os

import pytest
import verl
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.utils.config import omega_conf_to_dataclass

from verl_lpreg.config import LpRegConfig, policy_loss_group
from verl_lpreg.testing.trainer_config import compose_trainer_config

LP = "actor_rollout_ref.actor.policy_loss.lp_reg"


def lp_reg_of(cfg) -> LpRegConfig:
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).lp_reg


def test_defaults_are_the_reference():
    lp = lp_reg_of(compose_trainer_config())
    assert (lp.divergence, lp.rank_by, lp.proxy_source) == ("low_var_kl", "log_prob", "old")
    assert (lp.pos_target_temperature, lp.neg_target_temperature) == (None, None)
    assert lp == LpRegConfig()
    assert lp.target_temperatures(0.7) == (0.7, 0.7)


@pytest.mark.parametrize(
    "overrides",
    [
        [f"{LP}.min_p=0"],
        [f"{LP}.min_p=0", f"{LP}.proxy_mode=fixed"],
        [f"{LP}.proxy_mode=fixed", f"{LP}.min_p=0.02"],
        *[[f"{LP}.divergence={name}"] for name in ("low_var_kl", "k3", "kl", "k1", "abs", "mse", "k2")],
        [f"{LP}.rank_by=entropy"],
        [f"{LP}.rank_by=entropy", f"{LP}.selection=batch"],
        [f"{LP}.proxy_source=current"],
        [f"{LP}.proxy_source=current", f"{LP}.pos_target_temperature=1.2", f"{LP}.neg_target_temperature=0.8"],
        [f"{LP}.proxy_source=ref", f"{LP}.min_p=0"],
    ],
)
def test_every_option_reaches_the_dataclass(overrides):
    lp = lp_reg_of(compose_trainer_config(*overrides))
    for override in overrides:
        path, value = override.split("=")
        key = path.rsplit(".", 1)[1]
        got = getattr(lp, key)
        assert str(got) == value or got == float(value)


def test_target_temperatures_default_to_the_rollout_temperature():
    lp = LpRegConfig(proxy_source="current", pos_target_temperature=1.5)
    assert lp.target_temperatures(0.6) == (1.5, 0.6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"divergence": "reverse_kl"}, r"divergence='reverse_kl' is not supported: allowed \('low_var_kl', 'k3'"),
        ({"rank_by": "prob"}, r"lp_reg.rank_by='prob' is not supported: allowed \('log_prob', 'entropy'\)"),
        ({"proxy_source": "new"}, r"lp_reg.proxy_source='new' is not supported: allowed \('old', 'current', 'ref'\)"),
        ({"proxy_mode": "fixed", "soft": True}, r"lp_reg.soft=True is not supported with proxy_mode='fixed'"),
        ({"pos_target_temperature": 1.2}, r"pos_target_temperature=1.2 is read only with proxy_source='current'"),
        (
            {"proxy_source": "ref", "neg_target_temperature": 1.0},
            r"lp_reg.neg_target_temperature=1.0 is read only with proxy_source='current'",
        ),
        ({"proxy_source": "current", "neg_target_temperature": 0.0}, r"neg_target_temperature=0.0 is out of range"),
        ({"proxy_source": "ref"}, r"proxy_source='ref' uses the reference model's log-prob unfiltered.*min_p=0"),
        # issue 14: every float key is finite (inf used to train on an inf loss with NaN grad norms)
        ({"kl_coef": float("inf")}, r"lp_reg.kl_coef=inf must be a finite number"),
        ({"kl_coef": float("nan")}, r"lp_reg.kl_coef=nan must be a finite number"),
        ({"min_p": float("inf")}, r"lp_reg.min_p=inf must be a finite number"),
        ({"min_p": float("nan")}, r"lp_reg.min_p=nan must be a finite number"),
        ({"neg_fraction": float("inf")}, r"lp_reg.neg_fraction=inf must be a finite number"),
        ({"pos_fraction": float("-inf")}, r"lp_reg.pos_fraction=-inf must be a finite number"),
        (
            {"proxy_source": "current", "pos_target_temperature": float("inf")},
            r"lp_reg.pos_target_temperature=inf must be a finite number",
        ),
        (
            {"proxy_source": "current", "neg_target_temperature": float("nan")},
            r"lp_reg.neg_target_temperature=nan must be a finite number",
        ),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LpRegConfig(**kwargs)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (f"{LP}.kl_coef=inf", r"lp_reg.kl_coef=inf must be a finite number"),
        (f"{LP}.kl_coef=nan", r"lp_reg.kl_coef=nan must be a finite number"),
        (f"{LP}.divergence=k4", r"lp_reg.divergence='k4' is not supported"),
        ("actor_rollout_ref.actor.policy_loss.high_entropy.top_fraction=inf", r"top_fraction=inf must be a finite"),
    ],
)
def test_bad_values_fail_through_the_composed_config(override, message):
    from verl_lpreg.integration.checks import check_config

    cfg = compose_trainer_config(override)
    with pytest.raises(Exception, match=message):
        omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss)
    if "high_entropy" not in override:
        with pytest.raises(ValueError, match=message):
            check_config(cfg)


def test_stock_verl_config_takes_the_options_with_our_target():
    """`python -m verl.trainer.main_ppo` with the policy-loss target switched to ours."""
    verl_config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=verl_config_dir, version_base=None):
        cfg = compose(
            "ppo_trainer",
            overrides=[
                "actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg",
                "trainer.v1.trainer_mode=lp_reg",
                "actor_rollout_ref.actor.policy_loss._target_=verl_lpreg.config.ExtendedPolicyLossConfig",
                f"+{LP}.divergence=mse",
                f"+{LP}.rank_by=entropy",
                f"+{LP}.min_p=0",
            ],
        )
    lp = policy_loss_group(cfg.actor_rollout_ref.actor.policy_loss, "lp_reg", LpRegConfig)
    assert (lp.divergence, lp.rank_by, lp.min_p) == ("mse", "entropy", 0.0)
    built = omega_conf_to_dataclass(OmegaConf.create(OmegaConf.to_container(cfg.actor_rollout_ref.actor.policy_loss)))
    assert policy_loss_group(built, "lp_reg", LpRegConfig) == lp  # what the registered loss reads


def test_reference_model_proxy_needs_a_reference_model():
    from verl_lpreg.integration.checks import check_config

    ref = [f"{LP}.proxy_source=ref", f"{LP}.min_p=0"]
    with pytest.raises(ValueError, match=r"proxy_source='ref' needs a reference model.*use_kl_loss=True"):
        check_config(compose_trainer_config(*ref))
    with_kl_loss = ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0"]
    check_config(compose_trainer_config(*ref, *with_kl_loss))
    check_config(compose_trainer_config(*ref, "algorithm.use_kl_in_reward=True"))
