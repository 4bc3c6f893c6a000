#!/usr/bin/env bash
# 80/20 baseline (Wang et al. 2025: policy gradient on the top-20% entropy tokens only) on
# Qwen3-14B-Base, on-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block, row
# "80/20 (on-policy)" (average 57.51). Our `high_entropy` loss (verl_lpreg/high_entropy.py):
# the top 20% of the batch's tokens by pi_old entropy, clip 0.2 / 0.28 as in the authors'
# run_only_top20_high_entropy_tokens_dapo_qwen3_14b.sh.
# Shared settings and variables: ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-80_20_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.high_entropy.top_fraction=0.2 \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    "$@"
