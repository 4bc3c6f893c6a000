#!/usr/bin/env bash
# Clip-Higher baseline (DAPO's asymmetric clip 0.2 / 0.28) on Qwen3-14B-Base, on-policy:
# Table 1 of arXiv 2510.03222, Qwen3-14B-Base block, row "Clip-Higher (on-policy)".
# Note: on-policy the ratio is 1 at every update, so no clip ever acts and this run is GRPO
# on-policy up to numerics; it is listed for completeness.
# Shared settings and variables: ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-clip_higher_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    "$@"
