#!/usr/bin/env bash
# 80/20 on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "80/20 (off-policy)":
# AIME24 43.96, AIME25 34.58, MATH-500 91.80, Minerva 48.16, Olympiad 60.89, average 55.88.
# 80/20 (Wang et al. 2025): policy gradient on the 20% highest-entropy tokens only, our
# `high_entropy` loss (verl_lpreg/high_entropy.py; selection rules: ../README.md), clip
# 0.2 / 0.28 as in the authors' run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-80_20_qwen3_14b_offpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.policy_loss.high_entropy.top_fraction=0.2 \
    "$@"
