"""scripts/gpu_check.sh up to the point where it needs CUDA: its dry run on CPU, and its refusal."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_gpu_check(tmp_path, *args):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--output", str(tmp_path / "gpu_check.json"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_dry_run_builds_and_runs_everything_on_cpu(tmp_path):
    proc = run_gpu_check(tmp_path, "--dry-run", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    engine = report["engine"]
    for key in ("old_log_prob", "old_log_prob_lp_reg", "update_vanilla", "update_lp_reg"):
        assert engine[key]["seconds"] > 0 and engine[key]["nan"] is False, key
    # remove-padding and dynamic batch size: the batch does not fit in one micro-batch
    assert engine["tokens"] > report["size"]["tokens_per_micro_batch"]
    assert engine["update_lp_reg"]["regularised_tokens"] > 0
    assert engine["proxy_slice"]["max_abs_diff_vs_reference"] < 1e-5
    assert engine["proxy_slice"]["kept_decision_agreement_with_engine"] > 0.9
    assert report["proxy_bandwidth"]["ms"] > 0
    # the summary table names every number the issue asks for
    for line in ("proxy", "old log-prob time Lp-Reg / vanilla", "update time Lp-Reg / vanilla", "any NaN"):
        assert line in proc.stdout, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_stops(tmp_path):
    proc = run_gpu_check(tmp_path)
    assert proc.returncode == 2
    assert "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
