#!/usr/bin/env bash
# GRPO vs Lp-Reg on the CPU quick-start: two runs of run_cpu.sh that differ only in the loss
# (LOSS_MODE=vanilla, then lp_reg): the same seed and settings, and the second run starts from the
# first one's warmed-up tiny model and data (run_cpu.sh FROM_RUN). Then
# `python -m verl_lpreg.plot` draws both runs into $OUT_DIR/figures (entropy, reward, validation
# accuracy, regularised fraction, and the diagnostics).
#
#   bash examples/quickstart/compare_cpu.sh                 # STEPS=20, OUT_DIR=./outputs/compare_cpu
#   STEPS=10 SEED=1 bash examples/quickstart/compare_cpu.sh
#
# Two quick-start runs (about 3 minutes each on an idle 2-core machine). Env: OUT_DIR, STEPS (20),
# SEED (0), PYTHON (default: .venv's, set up on first use), and every variable of run_cpu.sh;
# extra arguments go to both runs as hydra overrides.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  # shellcheck source-path=SCRIPTDIR source=../../scripts/setup_env.sh
  source "$REPO/scripts/setup_env.sh"
  PYTHON=python
fi

OUT_DIR="${OUT_DIR:-./outputs/compare_cpu}"
STEPS="${STEPS:-20}"
SEED="${SEED:-0}"
export PYTHON STEPS SEED

GRPO_DIR="$OUT_DIR/grpo"
LP_REG_DIR="$OUT_DIR/lp_reg"
echo "=== GRPO (loss_mode=vanilla), seed $SEED -> $GRPO_DIR"
OUT_DIR="$GRPO_DIR" LOSS_MODE=vanilla bash "$HERE/run_cpu.sh" "$@"
echo "=== Lp-Reg (loss_mode=lp_reg), seed $SEED -> $LP_REG_DIR"
OUT_DIR="$LP_REG_DIR" FROM_RUN="$GRPO_DIR" LOSS_MODE=lp_reg bash "$HERE/run_cpu.sh" "$@"

echo "=== figures -> $OUT_DIR/figures"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m verl_lpreg.plot \
  "$GRPO_DIR/metrics.jsonl" "$LP_REG_DIR/metrics.jsonl" --labels GRPO Lp-Reg --output "$OUT_DIR/figures"
