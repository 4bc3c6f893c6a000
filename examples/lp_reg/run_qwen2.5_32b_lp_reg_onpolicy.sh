#!/usr/bin/env bash
# Lp-Reg on Qwen2.5-32B (base), on-policy: Table 1 of arXiv 2510.03222, Qwen2.5-32B block,
# row "Lp-Reg (on-policy)" (average 52.54).
# On-policy: the mini-batch is the whole 256-prompt batch; rho = 0.005 for this model.
# vLLM runs at tensor parallel 2 here (32B weights leave too little KV cache on one 80 GB
# GPU); ROLLOUT_TP=1 gives the reference's setting.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen2.5-32B}
EXP_NAME=${EXP_NAME:-lp_reg_qwen2.5_32b_onpolicy}
ROLLOUT_TP=${ROLLOUT_TP:-2}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.005 \
    actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg \
    actor_rollout_ref.actor.clip_ratio_low=1.0 \
    actor_rollout_ref.actor.clip_ratio_high=9.0 \
    actor_rollout_ref.actor.policy_loss.lp_reg.proxy_mode=minp \
    actor_rollout_ref.actor.policy_loss.lp_reg.min_p=0.02 \
    actor_rollout_ref.actor.policy_loss.lp_reg.kl_coef=1.0 \
    "$@"
