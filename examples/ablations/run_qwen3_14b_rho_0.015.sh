#!/usr/bin/env bash
# Ablation (docs/method.md §9.6) on the Qwen3-14B-Base on-policy Lp-Reg run: rho = 0.015 (the Lp-Reg
# run has 0.01).
# Everything else is ../lp_reg/run_qwen3_14b_lp_reg_onpolicy.sh (same variables: NNODES,
# MODELS_DIR, DATA_DIR, CKPTS_ROOT, RAY_ADDRESS, ...); `--cfg job` prints the config.
set -euo pipefail

EXP_NAME=${EXP_NAME:-lp_reg_qwen3_14b_onpolicy_rho_0.015}
export EXP_NAME

exec bash "$(dirname "${BASH_SOURCE[0]}")/../lp_reg/run_qwen3_14b_lp_reg_onpolicy.sh" \
    actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.015 \
    "$@"
