#!/usr/bin/env bash
# The paper's ablations (docs/method.md §9) and the reference's proxy variants (§10), each on the
# Qwen3-14B-Base on-policy Lp-Reg run: one entry per run.
#
#   bash examples/ablations.sh list                          # name, recipe, what it changes
#   bash examples/ablations.sh run no_filter rho_0.005       # these runs, one after the other
#   bash examples/ablations.sh run all                       # every ablation (not the Lp-Reg run itself)
#   bash examples/ablations.sh run kl -- trainer.total_epochs=1   # overrides for each run
#
# The runs the ablations are compared with are Table 1's: `bash examples/table1.sh run
# lp_reg_14b_on grpo_14b_on` (min-p kappa 0.02, rho 0.01, low_var_kl, lowest log-prob, pi_old).
# Each run keeps its recipe's experiment name (checkpoints in $CKPTS_ROOT/<experiment name>);
# EXP_NAME, CKPTS_DIR and MODEL_PATH are cleared for every run (set MODELS_DIR, CKPTS_ROOT,
# DATA_DIR, NNODES, RAY_ADDRESS, ... as for a single recipe; see common.sh). With RAY_ADDRESS set
# each run is a `ray job submit` that waits for the job to end. The sweep stops at the first
# failed run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=sweep.sh
source "$HERE/sweep.sh"
L=lp_reg

# name | recipe (relative to examples/) | docs/method.md section: what it changes
SWEEP=(
    "entropy_ranked|ablations/run_qwen3_14b_entropy_ranked.sh|§9.1: $L.rank_by=entropy (highest-entropy tokens)"
    "no_filter|ablations/run_qwen3_14b_no_filter.sh|§9.2: $L.min_p=0 (proxy = pi_old, no filter)"
    "fixed_threshold|ablations/run_qwen3_14b_fixed_threshold.sh|§9.3: $L.proxy_mode=fixed (p >= 0.02)"
    "both_signs|ablations/run_qwen3_14b_both_signs.sh|§9.4: $L.pos_fraction=0.01 (= rho)"
    "kl|ablations/run_qwen3_14b_divergence_kl.sh|§9.5: $L.divergence=kl (k1)"
    "abs|ablations/run_qwen3_14b_divergence_abs.sh|§9.5: $L.divergence=abs"
    "mse|ablations/run_qwen3_14b_divergence_mse.sh|§9.5: $L.divergence=mse (k2)"
    "rho_0.005|ablations/run_qwen3_14b_rho_0.005.sh|§9.6: $L.neg_fraction=0.005"
    "rho_0.015|ablations/run_qwen3_14b_rho_0.015.sh|§9.6: $L.neg_fraction=0.015"
    "kappa_0.01|ablations/run_qwen3_14b_kappa_0.01.sh|§9.6: $L.min_p=0.01"
    "kappa_0.03|ablations/run_qwen3_14b_kappa_0.03.sh|§9.6: $L.min_p=0.03"
    "proxy_current|ablations/run_qwen3_14b_proxy_current.sh|§10: $L.proxy_source=current (current policy's proxy)"
    "proxy_ref|ablations/run_qwen3_14b_proxy_ref.sh|§10: $L.proxy_source=ref (reference model, unfiltered)"
)
SWEEP_TITLE="WHAT IT CHANGES"
SWEEP_USAGE=5,8

lpreg_sweep "$@"
