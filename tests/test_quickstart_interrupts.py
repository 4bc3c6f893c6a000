"""The quick-start's plumbing under bad input and interrupts (examples/quickstart/lib.sh, run_cpu.sh).

The config check runs the real run_cpu.sh up to its first step (no Ray). The interrupt and resume
tests source lib.sh with a stand-in trainer (tests/fixtures/quickstart/fake_trainer.py; the real
one is covered by tests/test_quickstart_e2e.py): Ctrl-C, SIGTERM and SIGKILL of the script, and
the metrics history across a resume.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verl_lpreg.plot import read_history

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
FAKE = REPO / "tests" / "fixtures" / "quickstart" / "fake_trainer.py"


@pytest.mark.parametrize(
    "override, message",
    [
        ("actor_rollout_ref.actor.policy_loss.lp_reg.no_such_key=1", "no_such_key"),
        ("actor_rollout_ref.model.use_fused_kernels=true", "use_fused_kernels=True never"),
    ],
)
def test_config_error_is_reported_before_anything_is_prepared(tmp_path, override, message):
    env = {**os.environ, "PYTHON": sys.executable, "OUT_DIR": str(tmp_path), "STEPS": "1"}
    proc = subprocess.run(
        ["bash", str(QUICKSTART / "run_cpu.sh"), override], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "nothing was prepared or started" in proc.stderr
    assert "[1/4]" not in proc.stdout
    assert not (tmp_path / "model").exists() and not (tmp_path / "data").exists()


def _driver(tmp_path: Path, steps: int, **env) -> tuple[list[str], dict]:
    fakepy = tmp_path / "fakepy"
    fakepy.write_text(
        "#!/usr/bin/env bash\n"
        f'if [[ "$1" == -m && "$2" == verl_lpreg.main_ppo ]]; then shift 2; exec {sys.executable} {FAKE} "$@"; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    fakepy.chmod(0o755)
    script = (
        "set -euo pipefail\n"
        f"HERE={QUICKSTART}\n"
        'source "$HERE/lib.sh"\n'
        f"OUT_DIR={tmp_path}; METRICS=$OUT_DIR/metrics.jsonl; LOG=$OUT_DIR/train.log; CKPT_DIR=$OUT_DIR/checkpoints\n"
        "t0=$(date +%s); t_prep=$t0\n"
        "lpreg_quickstart_train trainer.save_freq=2\n"
    )
    full_env = {
        **os.environ,
        "PYTHON": str(fakepy),
        "STEPS": str(steps),
        "PYTHONPATH": str(REPO),
        "FAKE_PID_FILE": str(tmp_path / "trainer.pid"),
        **env,
    }
    return ["bash", "-c", script], full_env


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for_checkpoint(tmp_path: Path, proc: subprocess.Popen, timeout: float = 180.0) -> int:
    latest = tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + timeout
    while not latest.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.2)
    return int((tmp_path / "trainer.pid").read_text())


def test_resume_keeps_one_history_per_run_and_the_summary_covers_it(tmp_path):
    argv, env = _driver(tmp_path, steps=3)
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    # steps 0-3 logged, checkpoint at 2: the resume supersedes step 3 and re-validates step 2
    argv, env = _driver(tmp_path, steps=5, FAKE_SCORE="0.7")
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(p.name for p in tmp_path.glob("metrics*")) == ["metrics.jsonl"]
    history = read_history(tmp_path / "metrics.jsonl")
    assert [s for s, _ in history] == [0, 1, 2, 3, 4, 5]
    scores = {s: d.get("critic/score/mean") for s, d in history}
    assert scores == {0: None, 1: 0.1, 2: 0.1, 3: 0.7, 4: 0.7, 5: 0.7}  # step 3 from the resumed run
    assert "[summary] 5 training steps logged" in second.stdout
    assert "validation accuracy (greedy): step 0: 0.500, step 2: 0.500" in second.stdout


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "sigkill"])
def test_interrupting_the_script_stops_the_training(tmp_path, how):
    argv, env = _driver(tmp_path, steps=1000, FAKE_STEP_S="0.5")
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    trainer = _wait_for_checkpoint(tmp_path, proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole foreground group
    else:
        proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    deadline = time.monotonic() + 60.0  # generous: SIGTERM at once, SIGKILL after a 20 s grace
    while _alive(trainer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(trainer), f"the training outlived the script ({how})"
    if how == "sigkill":
        return  # nothing can be printed; the next start folds the segment
    assert proc.returncode == 130, out + err
    step = (tmp_path / "checkpoints" / "latest_checkpointed_iteration.txt").read_text().strip()
    assert f"[interrupted] last checkpoint: {tmp_path}/checkpoints/global_step_{step}" in err
    assert "run the same command again with OUT_DIR=" in err
    assert "Traceback" not in out + err and "training failed" not in err
    assert not (tmp_path / ".metrics.segment.jsonl").exists()  # folded into the history
    assert read_history(tmp_path / "metrics.jsonl")
