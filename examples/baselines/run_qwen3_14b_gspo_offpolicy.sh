#!/usr/bin/env bash
# GSPO baseline on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base
# block, row "GSPO (off-policy)". verl's `gspo` loss with verl's GSPO recipe settings:
# sequence-level ratio clipped to [1 - 3e-4, 1 + 4e-4], seq-mean-token-mean aggregation.
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# Shared settings and variables: ../common.sh. `--cfg job` prints the config.
set -euo pipefail

EXP_NAME=${EXP_NAME:-gspo_qwen3_14b_offpolicy}
MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.policy_loss.loss_mode=gspo \
    actor_rollout_ref.actor.clip_ratio_low=3e-4 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.clip_ratio_high=4e-4 \
    actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean \
    "$@"
