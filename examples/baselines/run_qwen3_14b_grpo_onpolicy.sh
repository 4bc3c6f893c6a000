#!/usr/bin/env bash
# GRPO baseline (PPO clip 0.2 / 0.2) on Qwen3-14B-Base, on-policy: Table 1 of arXiv 2510.03222,
# Qwen3-14B-Base block, row "GRPO (on-policy)" (average 57.43).
# On-policy: one update per step, so pi_old is the current policy and the clip never acts.
# Shared settings and variables: ../common.sh. `--cfg job` prints the config.
set -euo pipefail

EXP_NAME=${EXP_NAME:-grpo_qwen3_14b_onpolicy}
MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.2 \
    "$@"
