"""The ablation recipes under examples/ablations/ resolve to the paper's Qwen3-14B-Base on-policy
Lp-Reg run with exactly one change each (docs/method.md §9, §10).

Each runs as ``bash <recipe> --cfg job`` in a subprocess with no GPU, no model and no data. The
expected values are the Lp-Reg run's (tests/test_recipes.py's table, written from docs/method.md
§4) plus the ablation's change, written here from §9, not read from the scripts.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from test_recipes import _LOSS, _LP_REG, _ON, _RHO_14B, CKPTS, EXAMPLES, REPO, _recipe_env, _row, _run, _select

_LP = _LOSS + "lp_reg."
# The Lp-Reg run's values of the keys the ablations change (the reference's defaults).
_LP_REG_DEFAULTS = {
    _LP + "divergence": "low_var_kl",
    _LP + "rank_by": "log_prob",
    _LP + "selection": "micro_batch",
    _LP + "proxy_source": "old",
    _LP + "pos_target_temperature": None,
    _LP + "neg_target_temperature": None,
    "actor_rollout_ref.actor.use_kl_loss": False,
}

# name in ablations.sh -> (experiment name suffix, the change)
ABLATIONS = {
    "entropy_ranked": ("entropy_ranked", {_LP + "rank_by": "entropy"}),
    "no_filter": ("no_filter", {_LP + "min_p": 0.0}),
    "fixed_threshold": ("fixed_0.02", {_LP + "proxy_mode": "fixed", _LP + "min_p": 0.02}),
    "both_signs": ("both_signs", {_LP + "pos_fraction": 0.01}),
    "kl": ("divergence_kl", {_LP + "divergence": "kl"}),
    "abs": ("divergence_abs", {_LP + "divergence": "abs"}),
    "mse": ("divergence_mse", {_LP + "divergence": "mse"}),
    "rho_0.005": ("rho_0.005", {_LP + "neg_fraction": 0.005}),
    "rho_0.015": ("rho_0.015", {_LP + "neg_fraction": 0.015}),
    "kappa_0.01": ("kappa_0.01", {_LP + "min_p": 0.01}),
    "kappa_0.03": ("kappa_0.03", {_LP + "min_p": 0.03}),
    "proxy_current": ("proxy_current", {_LP + "proxy_source": "current"}),
    "proxy_ref": (
        "proxy_ref",
        {
            _LP + "proxy_source": "ref",
            _LP + "min_p": 0.0,
            # a reference model exists only with the KL loss on: on, with coefficient 0
            "actor_rollout_ref.actor.use_kl_loss": True,
            "actor_rollout_ref.actor.kl_loss_coef": 0.0,
        },
    ),
}
RECIPES = {
    "entropy_ranked": "run_qwen3_14b_entropy_ranked.sh",
    "no_filter": "run_qwen3_14b_no_filter.sh",
    "fixed_threshold": "run_qwen3_14b_fixed_threshold.sh",
    "both_signs": "run_qwen3_14b_both_signs.sh",
    "kl": "run_qwen3_14b_divergence_kl.sh",
    "abs": "run_qwen3_14b_divergence_abs.sh",
    "mse": "run_qwen3_14b_divergence_mse.sh",
    "rho_0.005": "run_qwen3_14b_rho_0.005.sh",
    "rho_0.015": "run_qwen3_14b_rho_0.015.sh",
    "kappa_0.01": "run_qwen3_14b_kappa_0.01.sh",
    "kappa_0.03": "run_qwen3_14b_kappa_0.03.sh",
    "proxy_current": "run_qwen3_14b_proxy_current.sh",
    "proxy_ref": "run_qwen3_14b_proxy_ref.sh",
}


def expected(name: str) -> dict:
    suffix, change = ABLATIONS[name]
    exp = f"lp_reg_qwen3_14b_onpolicy_{suffix}"
    _, want = _row(RECIPES[name], "Qwen3-14B-Base", exp, _LP_REG, _RHO_14B, _ON, _LP_REG_DEFAULTS, change)
    return want


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ablations")
    env = _recipe_env(cwd)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {
            name: pool.submit(_run, ["bash", str(EXAMPLES / "ablations" / recipe), "--cfg", "job"], env, cwd)
            for name, recipe in RECIPES.items()
        }
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_resolves_to_the_lp_reg_run_with_its_one_change(name, composed):
    proc = composed[name]
    assert proc.returncode == 0, f"{RECIPES[name]} --cfg job failed:\n{proc.stderr[-4000:]}"
    assert "could not register" not in proc.stderr, proc.stderr[-4000:]
    cfg = yaml.safe_load(proc.stdout)
    mismatches = {}
    for key, want in expected(name).items():
        got = _select(cfg, key)
        same = got == pytest.approx(want) if isinstance(want, float) else got == want
        if not same or isinstance(got, bool) is not isinstance(want, bool):
            mismatches[key] = (got, want)
    assert not mismatches, f"{name}: key -> (got, expected): {mismatches}"
    assert "${" not in proc.stdout


def test_the_resolved_configs_build_our_validated_dataclass(composed):
    """What the recipes print is accepted by the start-up checks (verl's conversion, ours)."""
    from omegaconf import OmegaConf

    from verl_lpreg.config import LpRegConfig, policy_loss_group

    for name in ABLATIONS:
        cfg = OmegaConf.create(yaml.safe_load(composed[name].stdout))
        lp = policy_loss_group(cfg.actor_rollout_ref.actor.policy_loss, "lp_reg", LpRegConfig)
        assert isinstance(lp, LpRegConfig)


def test_ablations_sh_lists_every_recipe_and_only_those():
    on_disk = {p.name for p in (EXAMPLES / "ablations").glob("*.sh")}
    assert on_disk == set(RECIPES.values())
    listed = _run(["bash", str(EXAMPLES / "ablations.sh"), "list"], dict(os.environ), REPO, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {name: f"examples/ablations/{recipe}" for name, recipe in RECIPES.items()}


def test_ablations_sh_refuses_an_unknown_name_before_running_anything(tmp_path):
    proc = _run(["bash", str(EXAMPLES / "ablations.sh"), "run", "no_filter", "nope"], _recipe_env(tmp_path), REPO, 60)
    assert proc.returncode != 0
    assert "unknown run 'nope'" in proc.stderr and "=== ablations.sh" not in proc.stderr


def test_ablations_sh_passes_overrides_to_each_run(tmp_path):
    proc = _run(
        ["bash", str(EXAMPLES / "ablations.sh"), "run", "kl", "--", "trainer.total_epochs=1", "--cfg", "job"],
        _recipe_env(tmp_path),
        REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    cfg = yaml.safe_load(proc.stdout)
    assert _select(cfg, "trainer.total_epochs") == 1
    assert _select(cfg, _LP + "divergence") == "kl"
    assert _select(cfg, "trainer.default_local_dir") == f"{CKPTS}/lp_reg_qwen3_14b_onpolicy_divergence_kl"
