#!/usr/bin/env bash
# GSPO on Qwen2.5-32B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B-Base block,
# row "GSPO (off-policy)":
# AIME24 33.33, AIME25 22.29, MATH-500 87.60, Minerva 48.53, Olympiad 55.56, average 49.46.
# GSPO: verl's `gspo` loss with the settings of verl's GSPO recipes
# (recipe/gspo/test_gspo_3b_math.sh, test_gspo_qwen30b_a3b_ep.sh; GSPO paper Sec. 5.1):
# sequence-level ratio clipped to [1 - 3e-4, 1 + 4e-4], seq-mean-token-mean aggregation.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# The paper's 800 steps (TOTAL_STEPS). vLLM at tensor parallel 2: 32B weights leave too little KV
# cache on one 80 GB GPU (ROLLOUT_TP=1 is the reference's setting).
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-gspo_qwen2.5_32b_offpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TOTAL_STEPS=${TOTAL_STEPS:-800}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    actor_rollout_ref.actor.policy_loss.loss_mode=gspo \
    actor_rollout_ref.actor.clip_ratio_low=3e-4 \
    actor_rollout_ref.actor.clip_ratio_high=4e-4 \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
    "$@"
