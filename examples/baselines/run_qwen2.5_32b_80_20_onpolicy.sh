#!/usr/bin/env bash
# 80/20 on Qwen2.5-32B-Base, on-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B-Base block,
# row "80/20 (on-policy)":
# AIME24 32.50, AIME25 28.54, MATH-500 89.40, Minerva 45.59, Olympiad 57.63, average 50.73.
# 80/20 (Wang et al. 2025): policy gradient on the 20% highest-entropy tokens only, our
# `high_entropy` loss (verl_lpreg/high_entropy.py; selection rules: ../README.md), clip
# 0.2 / 0.28 as in the authors' run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh.
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# The paper's 800 steps (TOTAL_STEPS). vLLM at tensor parallel 2: 32B weights leave too little KV
# cache on one 80 GB GPU (ROLLOUT_TP=1 is the reference's setting).
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-80_20_qwen2.5_32b_onpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TOTAL_STEPS=${TOTAL_STEPS:-800}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.policy_loss.high_entropy.top_fraction=0.2 \
    "$@"
