#!/usr/bin/env bash
# Lp-Reg on Qwen3-14B-Base, off-policy: Table 1 of arXiv 2510.03222, Qwen3-14B-Base block,
# row "Lp-Reg (off-policy)":
# AIME24 46.25, AIME25 34.17, MATH-500 92.40, Minerva 48.16, Olympiad 64.44, average 57.08.
# Lp-Reg: min-p proxy (kappa 0.02) of pi_old, rho = 0.01 of the negative-advantage tokens,
# beta 1, clip 1.0 / 9.0 (docs/method.md §3-§4).
# Off-policy: mini-batches of 32 prompts, 8 updates per rollout step.
# 15 epochs (about 1,000 steps), as the paper.
# Shared settings and variables (NNODES, GPUS_PER_NODE, TRAIN_FILE, VAL_FILES, CKPTS_DIR,
# PROJECT_NAME, LOGGER, RAY_ADDRESS, ...): ../common.sh. `--cfg job` prints the config.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:-${MODELS_DIR:-$HOME/models}/Qwen3-14B-Base}
EXP_NAME=${EXP_NAME:-lp_reg_qwen3_14b_offpolicy}

# shellcheck source-path=SCRIPTDIR source=../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
lpreg_submit python3 -m verl_lpreg.main_ppo \
    "${LPREG_COMMON_ARGS[@]}" \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg \
    actor_rollout_ref.actor.clip_ratio_low=1.0 \
    actor_rollout_ref.actor.clip_ratio_high=9.0 \
    actor_rollout_ref.actor.policy_loss.lp_reg.proxy_mode=minp \
    actor_rollout_ref.actor.policy_loss.lp_reg.min_p=0.02 \
    actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.01 \
    actor_rollout_ref.actor.policy_loss.lp_reg.kl_coef=1.0 \
    "$@"
