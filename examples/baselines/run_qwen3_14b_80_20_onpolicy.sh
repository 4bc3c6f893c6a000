#!/usr/bin/env bash
# 80/20 on Qwen3-14B-Base, on-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "80/20 (on-policy)":
# AIME24 47.29, AIME25 32.50, MATH-500 91.60, Minerva 50.37, Olympiad 65.78, average 57.51.
# 80/20 (Wang et al. 2025): policy gradient on the 20% highest-entropy tokens only, our
# `high_entropy` loss (verl_lpreg/high_entropy.py; selection rules: ../README.md), clip
# 0.2 / 0.28 as in the authors' run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh.
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-80_20_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.policy_loss.high_entropy.top_fraction=0.2 \
    "$@"
