#!/usr/bin/env bash
# KL-Cov on Qwen2.5-32B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B-Base block,
# row "KL-Cov (off-policy)":
# AIME24 35.62, AIME25 27.50, MATH-500 87.40, Minerva 44.49, Olympiad 55.11, average 50.02.
# KL-Cov (Cui et al. 2025): verl's `kl_cov` loss, a |log-ratio| penalty (coefficient 1) on
# the kl_cov_ratio = 0.2% of tokens with the largest advantage/log-prob covariance, as in
# verl's recipe/entropy/7b_kl_cov.sh (the low end of the paper's k range 0.002 .. 0.02);
# no ratio clip.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# The paper's 800 steps (TOTAL_STEPS). vLLM at tensor parallel 2: 32B weights leave too little KV
# cache on one 80 GB GPU (ROLLOUT_TP=1 is the reference's setting).
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-kl_cov_qwen2.5_32b_offpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}
TOTAL_STEPS=${TOTAL_STEPS:-800}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    trainer.total_training_steps="$TOTAL_STEPS" \
    actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov \
    actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002 \
    actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1.0 \
    "$@"
