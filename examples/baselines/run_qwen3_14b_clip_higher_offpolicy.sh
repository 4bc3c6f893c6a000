#!/usr/bin/env bash
# Clip-Higher on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "Clip-Higher (off-policy)":
# AIME24 41.67, AIME25 32.71, MATH-500 95.00, Minerva 47.43, Olympiad 64.00, average 56.16.
# Clip-Higher (DAPO): the plain loss with the asymmetric clip 0.2 / 0.28.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-clip_higher_qwen3_14b_offpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    "$@"
