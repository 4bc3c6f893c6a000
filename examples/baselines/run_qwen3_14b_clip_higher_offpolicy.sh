#!/usr/bin/env bash
# Clip-Higher baseline (DAPO's asymmetric clip 0.2 / 0.28) on Qwen3-14B-Base, off-policy:
# Table 1 of arXiv 2510.03222, Qwen3-14B-Base block, row "Clip-Higher (off-policy)".
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# Shared settings and variables: ../common.sh. `--cfg job` prints the config.
set -euo pipefail

EXP_NAME=${EXP_NAME:-clip_higher_qwen3_14b_offpolicy}
MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    "$@"
