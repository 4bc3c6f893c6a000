"""End to end: examples/quickstart/run_cpu.sh with STEPS=3, then resumed to step 4; two steps
of the 80/20 baseline (loss_mode=high_entropy) and two of the batch-wide Lp-Reg selection
through the same trainer.

Runs verl 0.9.1's real main_ppo (Ray, TransferQueue, agent loop, reward loop, FSDP2 engine) on
CPU through ``verl_lpreg.main_ppo``. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from verl_lpreg.plot import RESUME_MARKER, read_history

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "quickstart" / "run_cpu.sh"


def _run(
    out_dir: Path, steps: int, timeout: int = 900, overrides: tuple[str, ...] = (), **extra_env: str
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(STEPS=str(steps), OUT_DIR=str(out_dir), PYTHON=sys.executable, **extra_env)
    # The test checks the plumbing, not learning: keep the warm-up short but long enough that
    # sampled answers are right only part of the time (rewards vary within a group).
    env.setdefault("WARMUP_STEPS", "300")
    env.setdefault("BATCH", "8")  # 64 samples a step: fastest setting with Lp-Reg active (k > 1)
    env.setdefault("RMPAD", "true")  # verl's remove-padding path, the one GPU runs take
    proc = subprocess.run(
        ["bash", str(SCRIPT), *overrides], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        log = out_dir / "train.log"
        tail = log.read_text()[-6000:] if log.exists() else ""
        pytest.fail(
            f"run_cpu.sh failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\n"
            f"stderr:\n{proc.stderr[-4000:]}\ntrain.log tail:\n{tail}"
        )
    return proc


def _records(path: Path) -> list[dict]:
    """One record per step of the run's metrics history (a resumed run reads as one run)."""
    return [{"step": s, "data": d} for s, d in read_history(path)]


def _train_steps(recs: list[dict]) -> dict[int, dict]:
    return {r["step"]: r["data"] for r in recs if "critic/score/mean" in r["data"]}


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    pytest.importorskip("verl")
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("quickstart")
    first = _run(out, steps=3)
    first_metrics = _records(out / "metrics.jsonl")
    second = _run(out, steps=4)
    return out, first, first_metrics, second


def test_three_lp_reg_steps_with_signal(quickstart_run):
    out, proc, recs, _ = quickstart_run
    steps = _train_steps(recs)
    assert sorted(steps) == [1, 2, 3], recs
    # validation before training (step 0) and at the last step
    assert any(r["step"] == 0 and any(k.startswith("val-core/") for k in r["data"]) for r in recs)
    assert any(k.startswith("val-core/") for k in steps[3])
    # a learning signal: some step has a non-zero gradient and rewards that differ
    assert any(d["actor/grad_norm"] > 0 for d in steps.values())
    assert any(d["critic/score/max"] > d["critic/score/min"] for d in steps.values())
    # the Lp-Reg loss ran (its metrics come from the loss, verl prefixes them with actor/) and the
    # diagnostics were logged
    for d in steps.values():
        assert "actor/lp_reg/reg_fraction" in d
        assert 0.0 <= d["actor/lp_reg/reg_fraction"] <= 1.0
        assert any(k.startswith("lp_reg/") for k in d)
        # the proxy reached the trainer: kappa * p_max <= kappa, and some tokens lie outside its support
        assert 0.0 < d["lp_reg/minp_threshold_mean"] <= 0.02
        assert 0.0 <= d["lp_reg/proxy_filtered_fraction"] < 1.0
        assert d["timing_s/lp_reg_diagnostics"] < d["timing_s/step"]
    # progress lines and the summary were printed
    assert proc.stdout.count("[train] step") >= 4
    assert "[summary] reward" in proc.stdout
    # checkpoint written at the last step
    ckpt = out / "checkpoints"
    assert (ckpt / "global_step_3" / "actor").is_dir()


def test_resume_continues_at_step_4(quickstart_run):
    out, _, _, proc = quickstart_run
    assert "resuming from" in proc.stdout
    # one history for the whole run: steps 1-3 of the first part, 4 of the resumed one
    assert sorted(p.name for p in out.glob("metrics*")) == ["metrics.jsonl"]
    assert f'{{"{RESUME_MARKER}": 3}}' in (out / "metrics.jsonl").read_text()
    steps = _train_steps(_records(out / "metrics.jsonl"))
    assert sorted(steps) == [1, 2, 3, 4]
    assert "[summary] 4 training steps logged" in proc.stdout
    assert steps[4]["actor/grad_norm"] >= 0
    assert (out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"


def test_high_entropy_baseline_trains_on_a_fifth_of_the_tokens(quickstart_run, tmp_path):
    _run(tmp_path, steps=2, LOSS_MODE="high_entropy", FROM_RUN=str(quickstart_run[0]))
    steps = _train_steps(_records(tmp_path / "metrics.jsonl"))
    assert sorted(steps) == [1, 2]
    for d in steps.values():
        # by default each micro-batch keeps max(1, int(0.2 n)) of its tokens, by the update's entropy
        assert 0.19 <= d["actor/high_entropy_token_frac"] <= 0.2
        assert "high_entropy/selected_fraction" not in d  # no batch-wide mask by default
        assert "actor/lp_reg/reg_fraction" not in d
    assert any(d["actor/grad_norm"] > 0 for d in steps.values())


def test_batch_wide_selection_through_the_trainer(quickstart_run, tmp_path):
    """lp_reg.selection=batch: the trainer picks the rho-quantile over the whole batch each step."""
    _run(
        tmp_path,
        steps=2,
        overrides=("actor_rollout_ref.actor.policy_loss.lp_reg.selection=batch",),
        FROM_RUN=str(quickstart_run[0]),
    )
    steps = _train_steps(_records(tmp_path / "metrics.jsonl"))
    assert sorted(steps) == [1, 2]
    for d in steps.values():
        # rho = 0.02 of the negative tokens: at most 2% of all tokens, and some
        assert 0.0 < d["lp_reg/candidate_fraction"] <= 0.02
        assert 0.0 <= d["actor/lp_reg/reg_fraction"] <= 1.0


def test_current_policy_proxy_and_entropy_ranking_through_the_trainer(quickstart_run, tmp_path):
    """lp_reg.proxy_source=current with rank_by=entropy: the trainer asks the update's forward for the
    current policy's proxy and entropy (no proxy in the old-log-prob forward), and the loss acts."""
    _run(
        tmp_path,
        steps=2,
        overrides=(
            "actor_rollout_ref.actor.policy_loss.lp_reg.proxy_source=current",
            "actor_rollout_ref.actor.policy_loss.lp_reg.rank_by=entropy",
        ),
        FROM_RUN=str(quickstart_run[0]),
    )
    steps = _train_steps(_records(tmp_path / "metrics.jsonl"))
    assert sorted(steps) == [1, 2]
    for d in steps.values():
        assert 0.0 <= d["actor/lp_reg/reg_fraction"] <= 1.0
        assert "lp_reg/proxy_filtered_fraction" not in d  # no pi_old proxy was computed
    assert any(d["actor/grad_norm"] > 0 for d in steps.values())
