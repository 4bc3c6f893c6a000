#!/usr/bin/env bash
# GSPO on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "GSPO (off-policy)":
# AIME24 41.46, AIME25 34.58, MATH-500 88.60, Minerva 50.74, Olympiad 59.85, average 55.05.
# GSPO: verl's `gspo` loss with the settings of verl's GSPO recipes
# (recipe/gspo/test_gspo_3b_math.sh, test_gspo_qwen30b_a3b_ep.sh; GSPO paper Sec. 5.1):
# sequence-level ratio clipped to [1 - 3e-4, 1 + 4e-4], seq-mean-token-mean aggregation.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-gspo_qwen3_14b_offpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.policy_loss.loss_mode=gspo \
    actor_rollout_ref.actor.clip_ratio_low=3e-4 \
    actor_rollout_ref.actor.clip_ratio_high=4e-4 \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
    "$@"
