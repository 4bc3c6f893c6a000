"""The run recipes under examples/ compose against verl 0.9.1's real hydra schema and give docs/method.md §4.

Each recipe runs as ``bash <recipe> --cfg job`` (hydra prints the resolved config and exits) in a
subprocess with no GPU, no model and no data files; the recipes run in parallel, once per
session. The expected values come from the table ``EXPECTED`` below, written from docs/method.md §4 and the
baselines' sources, not read from the scripts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DATA, MODELS, CKPTS = "/nonexistent/data", "/nonexistent/models", "/nonexistent/ckpts"

# Variables a developer's shell may hold that would change what the recipes print.
RECIPE_ENV_VARS = (
    "RAY_ADDRESS", "RUNTIME_ENV", "RUNTIME_ENV_JSON", "RAY_SUBMIT_ARGS", "MODEL_PATH", "EXP_NAME",
    "TRAIN_FILE", "VAL_FILES", "CKPTS_DIR", "NNODES", "GPUS_PER_NODE", "PROJECT_NAME", "LOGGER",
    "ROLLOUT_TP", "ROLLOUT_GPU_MEM", "SP_SIZE",
)  # fmt: skip

# ------------------------------------------------------------------ the one table of expectations

# docs/method.md §4: what every paper run shares.
_SPEC4 = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.norm_adv_by_std_in_grpo": True,
    "data.train_files": [f"{DATA}/dapo_math_17k.parquet"],
    "data.val_files": [f"{DATA}/{n}.parquet" for n in ("aime24", "aime25", "math500", "minerva", "olympiadbench")],
    "data.train_batch_size": 256,
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.optim.lr_scheduler_type": "constant",
    "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio": 0.0,
    "actor_rollout_ref.actor.optim.weight_decay": 0.0,
    "actor_rollout_ref.actor.optim.clip_grad": 1.0,
    "actor_rollout_ref.actor.grad_clip": 1.0,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.ppo_epochs": 1,
    "data.max_prompt_length": 2048,
    "data.max_response_length": 8192,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "actor_rollout_ref.rollout.top_p": 1.0,
    "actor_rollout_ref.actor.use_dynamic_bsz": True,
    "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 30720,
    "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz": True,
    "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": 30720,
    "actor_rollout_ref.model.use_remove_padding": True,
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "trainer.nnodes": 8,
    "trainer.n_gpus_per_node": 8,
    "trainer.total_epochs": 15,
    "trainer.test_freq": 8,
    "trainer.save_freq": 64,
    "actor_rollout_ref.rollout.val_kwargs.temperature": 0,
    "actor_rollout_ref.rollout.val_kwargs.n": 1,
    "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
    "actor_rollout_ref.rollout.name": "vllm",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
    "trainer.v1.trainer_mode": "lp_reg",
    "reward.custom_reward_function.name": "compute_score",
}
_ON, _OFF = {"actor_rollout_ref.actor.ppo_mini_batch_size": 256}, {"actor_rollout_ref.actor.ppo_mini_batch_size": 32}
_LOSS = "actor_rollout_ref.actor.policy_loss."
_LP_REG = {
    _LOSS + "loss_mode": "lp_reg",
    "actor_rollout_ref.actor.clip_ratio_low": 1.0,
    "actor_rollout_ref.actor.clip_ratio_high": 9.0,
    _LOSS + "lp_reg.proxy_mode": "minp",
    _LOSS + "lp_reg.min_p": 0.02,
    _LOSS + "lp_reg.kl_coef": 1.0,
    _LOSS + "lp_reg.pos_fraction": 0.0,
    _LOSS + "lp_reg.soft": False,
}
_RHO_14B, _RHO_32B = {_LOSS + "lp_reg.neg_fraction": 0.01}, {_LOSS + "lp_reg.neg_fraction": 0.005}
_TP2 = {"actor_rollout_ref.rollout.tensor_model_parallel_size": 2}
_CLIP = {"actor_rollout_ref.actor.clip_ratio_low": 0.2, "actor_rollout_ref.actor.clip_ratio_high": 0.2}
_CLIP_HIGHER = {"actor_rollout_ref.actor.clip_ratio_low": 0.2, "actor_rollout_ref.actor.clip_ratio_high": 0.28}
_METHOD = {
    "grpo": {_LOSS + "loss_mode": "vanilla", **_CLIP},
    "clip_higher": {_LOSS + "loss_mode": "vanilla", **_CLIP_HIGHER},
    "gspo": {
        _LOSS + "loss_mode": "gspo",
        "actor_rollout_ref.actor.clip_ratio_low": 3e-4,
        "actor_rollout_ref.actor.clip_ratio_high": 4e-4,
        "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-mean",
    },
    "kl_cov": {_LOSS + "loss_mode": "kl_cov", _LOSS + "kl_cov_ratio": 0.002, _LOSS + "ppo_kl_coef": 1.0},
    "entropy_bonus": {_LOSS + "loss_mode": "vanilla", **_CLIP, "actor_rollout_ref.actor.entropy_coeff": 0.002},
    "80_20": {_LOSS + "loss_mode": "high_entropy", _LOSS + "high_entropy.top_fraction": 0.2, **_CLIP_HIGHER},
}


def _row(recipe: str, model: str, exp: str, *parts: dict) -> tuple[str, dict]:
    expected = {
        **_SPEC4,
        "actor_rollout_ref.model.path": f"{MODELS}/{model}",
        "trainer.experiment_name": exp,
        "trainer.default_local_dir": f"{CKPTS}/{exp}",
    }
    for part in parts:
        expected.update(part)
    return recipe, expected


EXPECTED = dict(
    [
        _row("lp_reg/run_qwen3_14b_lp_reg_onpolicy.sh", "Qwen3-14B-Base", "lp_reg_qwen3_14b_onpolicy", _LP_REG, _RHO_14B, _ON),
        _row("lp_reg/run_qwen3_14b_lp_reg_offpolicy.sh", "Qwen3-14B-Base", "lp_reg_qwen3_14b_offpolicy", _LP_REG, _RHO_14B, _OFF),
        _row("lp_reg/run_qwen2.5_32b_lp_reg_onpolicy.sh", "Qwen2.5-32B", "lp_reg_qwen2.5_32b_onpolicy", _LP_REG, _RHO_32B, _ON, _TP2),
        _row("lp_reg/run_qwen2.5_32b_lp_reg_offpolicy.sh", "Qwen2.5-32B", "lp_reg_qwen2.5_32b_offpolicy", _LP_REG, _RHO_32B, _OFF, _TP2),
    ]
    + [
        _row(f"baselines/run_qwen3_14b_{method}_{mode}policy.sh", "Qwen3-14B-Base", f"{method}_qwen3_14b_{mode}policy",
             _METHOD[method], _ON if mode == "on" else _OFF)
        for method in _METHOD
        for mode in ("on", "off")
    ]
)  # fmt: skip

# ------------------------------------------------------------------ running the recipes


def _recipe_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_ENV_VARS}
    env.update(
        DATA_DIR=DATA,
        MODELS_DIR=MODELS,
        CKPTS_ROOT=CKPTS,
        CUDA_VISIBLE_DEVICES="",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HYDRA_FULL_ERROR="1",
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def composed(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """``bash <recipe> --cfg job`` for every recipe of the table, in parallel."""
    cwd = tmp_path_factory.mktemp("recipes")
    env = _recipe_env(cwd)
    workers = max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {r: pool.submit(_run, ["bash", str(EXAMPLES / r), "--cfg", "job"], env, cwd) for r in EXPECTED}
        return {r: f.result() for r, f in futures.items()}


def _select(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_composes_to_spec(recipe, composed):
    proc = composed[recipe]
    assert proc.returncode == 0, f"{recipe} --cfg job failed:\n{proc.stderr[-4000:]}"
    cfg = yaml.safe_load(proc.stdout)
    assert isinstance(cfg, dict) and "actor_rollout_ref" in cfg, proc.stdout[:2000]
    mismatches = {}
    for key, want in EXPECTED[recipe].items():
        got = _select(cfg, key)
        same = got == pytest.approx(want) if isinstance(want, float) and not isinstance(want, bool) else got == want
        if not same or type(got) is bool and type(want) is not bool:
            mismatches[key] = (got, want)
    assert not mismatches, f"{recipe}: key -> (got, expected): {mismatches}"
    assert _select(cfg, "reward.custom_reward_function.path").endswith("verl_lpreg/reward.py")
    assert "${" not in proc.stdout, "the printed config is not fully resolved"


def test_every_recipe_is_in_the_table_and_in_table1():
    on_disk = {str(p.relative_to(EXAMPLES)) for d in ("lp_reg", "baselines") for p in (EXAMPLES / d).glob("*.sh")}
    assert on_disk == set(EXPECTED)
    listed = _run(["bash", str(EXAMPLES / "table1.sh"), "list"], dict(os.environ), REPO, timeout=60)
    assert listed.returncode == 0, listed.stderr
    in_table1 = {w.removeprefix("examples/") for line in listed.stdout.splitlines() for w in line.split()}
    assert set(EXPECTED) <= in_table1


def test_ray_address_submits_a_ray_job(tmp_path):
    """With RAY_ADDRESS set the recipe runs `ray job submit ... -- python3 -m verl_lpreg.main_ppo ...`."""
    fake_ray = tmp_path / "bin" / "ray"
    fake_ray.parent.mkdir()
    fake_ray.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake_ray.chmod(0o755)
    env = _recipe_env(tmp_path)
    env.update(RAY_ADDRESS="http://head:8265", PATH=f"{fake_ray.parent}{os.pathsep}{env['PATH']}")
    recipe = EXAMPLES / "lp_reg" / "run_qwen3_14b_lp_reg_onpolicy.sh"
    proc = _run(["bash", str(recipe), "trainer.total_epochs=1"], env, tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[:2] == ["job", "submit"]
    assert "--address=http://head:8265" in argv
    assert any(a.startswith("--runtime-env-json=") for a in argv)
    sep = argv.index("--")
    assert argv[sep + 1 : sep + 4] == ["python3", "-m", "verl_lpreg.main_ppo"]
    assert argv[-1] == "trainer.total_epochs=1", "the user's overrides must come last"
    assert "trainer.nnodes=8" in argv and "trainer.n_gpus_per_node=8" in argv


def test_cfg_request_runs_locally_and_resolved(tmp_path):
    """`--cfg job` never goes to Ray (it only prints) and gets hydra's --resolve."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, tag in (("ray", "RAY"), ("python3", "PYTHON")):
        (bin_dir / name).write_text(f'#!/usr/bin/env bash\necho {tag}; printf "%s\\n" "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = _recipe_env(tmp_path)
    env.update(RAY_ADDRESS="http://head:8265", PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    recipe = EXAMPLES / "baselines" / "run_qwen3_14b_grpo_onpolicy.sh"
    proc = _run(["bash", str(recipe), "--cfg", "job", "trainer.total_epochs=1", "~trainer.logger"], env, tmp_path, 60)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[0] == "PYTHON" and argv[1:3] == ["-m", "verl_lpreg.main_ppo"]
    # hydra wants its overrides first: the user's come last among them, then the flags
    assert argv[-5:] == ["trainer.total_epochs=1", "~trainer.logger", "--cfg", "job", "--resolve"]


def test_hydra_list_helper(tmp_path):
    script = (
        f'EXP_NAME=x MODEL_PATH=m source "{EXAMPLES / "common.sh"}"; '
        'lpreg_hydra_list "/a/b.parquet  /c d.parquet"; echo; lpreg_hydra_list "x,y"; echo; lpreg_hydra_list "[z]"'
    )
    proc = _run(["bash", "-c", script], _recipe_env(tmp_path), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['/a/b.parquet','/c','d.parquet']", "['x','y']", "[z]"]


def _shell_scripts() -> list[Path]:
    return sorted([*EXAMPLES.rglob("*.sh"), *(REPO / "scripts").glob("*.sh"), REPO / ".ci" / "run"])


def test_shellcheck():
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck); the CI installs it")
    proc = _run([exe, "-x", *map(str, _shell_scripts())], dict(os.environ), REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
