#!/usr/bin/env bash
# Lp-Reg on Qwen2.5-32B-Base, on-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B-Base block,
# row "Lp-Reg (on-policy)":
# AIME24 38.12, AIME25 27.08, MATH-500 90.00, Minerva 46.32, Olympiad 61.19, average 52.54.
# Lp-Reg: min-p proxy (kappa 0.02) of pi_old, rho = 0.005 of the negative-advantage tokens,
# beta 1, clip 1.0 / 9.0 (docs/method.md §3-§4).
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# The paper's 800 steps (TOTAL_STEPS). vLLM at tensor parallel 2: 32B weights leave too little KV
# cache on one 80 GB GPU (ROLLOUT_TP=1 is the reference's setting).
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-lp_reg_qwen2.5_32b_onpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TOTAL_STEPS=${TOTAL_STEPS:-800}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg \
    actor_rollout_ref.actor.clip_ratio_low=1.0 \
    actor_rollout_ref.actor.clip_ratio_high=9.0 \
    actor_rollout_ref.actor.policy_loss.lp_reg.proxy_mode=minp \
    actor_rollout_ref.actor.policy_loss.lp_reg.min_p=0.02 \
    actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.005 \
    actor_rollout_ref.actor.policy_loss.lp_reg.kl_coef=1.0 \
    "$@"
