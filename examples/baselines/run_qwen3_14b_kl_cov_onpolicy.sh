#!/usr/bin/env bash
# KL-Cov on Qwen3-14B-Base, on-policy: not in Table 1 of arXiv 2510.03222 (the paper has no
# row "KL-Cov (on-policy)"); listed for completeness.
# KL-Cov (Cui et al. 2025): verl's `kl_cov` loss, a |log-ratio| penalty (coefficient 1) on
# the kl_cov_ratio = 0.2% of tokens with the largest advantage/log-prob covariance, as in
# verl's recipe/entropy/7b_kl_cov.sh (the low end of the paper's k range 0.002 .. 0.02);
# no ratio clip.
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# On-policy the ratio is 1 at every update: the clip (or penalty) barely acts.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-kl_cov_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov \
    actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002 \
    actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1.0 \
    "$@"
