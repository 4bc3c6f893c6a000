#!/usr/bin/env bash
# GRPO on Qwen2.5-32B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B-Base block,
# row "GRPO (off-policy)":
# AIME24 30.63, AIME25 22.29, MATH-500 88.00, Minerva 41.18, Olympiad 54.37, average 47.29.
# GRPO: PPO clip 0.2 / 0.2, the plain loss (`vanilla`).
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# The paper's 800 steps (TOTAL_STEPS). vLLM at tensor parallel 2: 32B weights leave too little KV
# cache on one 80 GB GPU (ROLLOUT_TP=1 is the reference's setting).
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-grpo_qwen2.5_32b_offpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TOTAL_STEPS=${TOTAL_STEPS:-800}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    "$@"
