#!/usr/bin/env bash
# GRPO on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "GRPO (off-policy)":
# AIME24 34.38, AIME25 27.08, MATH-500 89.20, Minerva 49.26, Olympiad 55.70, average 51.13.
# GRPO: PPO clip 0.2 / 0.2, the plain loss (`vanilla`).
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-grpo_qwen3_14b_offpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    "$@"
