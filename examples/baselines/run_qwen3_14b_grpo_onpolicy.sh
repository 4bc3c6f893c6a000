#!/usr/bin/env bash
# GRPO on Qwen3-14B-Base, on-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "GRPO (on-policy)":
# AIME24 46.04, AIME25 34.38, MATH-500 93.00, Minerva 48.53, Olympiad 65.19, average 57.43.
# GRPO: PPO clip 0.2 / 0.2, the plain loss (`vanilla`).
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-grpo_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    "$@"
