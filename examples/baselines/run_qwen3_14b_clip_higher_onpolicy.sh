#!/usr/bin/env bash
# Clip-Higher on Qwen3-14B-Base, on-policy: not in Table 1 of arXiv 2510.03222 (the paper has no
# row "Clip-Higher (on-policy)"); listed for completeness.
# Clip-Higher (DAPO): the plain loss with the asymmetric clip 0.2 / 0.28.
# On-policy: the mini-batch is the whole 256-prompt batch, one update per rollout step.
# On-policy the ratio is 1 at every update: the clip (or penalty) barely acts.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-clip_higher_qwen3_14b_onpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla \
    actor_rollout_ref.actor.clip_ratio_low=0.2 \
    actor_rollout_ref.actor.clip_ratio_high=0.28 \
    "$@"
