"""Names shared across verl-lpreg: batch fields, request keys, metric names, data conventions.

Plain constants only, so that any module (the trainer wiring, the reward, the data preparation,
the plotting and progress scripts) can import them without importing verl, Ray or torch.
"""

#: ``trainer.v1.trainer_mode`` of the Lp-Reg trainer (verl's sync trainer plus the proxy).
TRAINER_MODE = "lp_reg"

# --- per-token batch fields ---------------------------------------------------------------
#: Proxy log-prob of each token under pi_old's min-p proxy. Emitted by the engine in the
#: old-log-prob forward in the layout of verl's ``log_probs`` (packed full sequences); the loss
#: slices the response part as verl's ``ppo_loss`` does for ``log_probs``.
PROXY_FIELD = "proxy_log_probs"
#: ``max(z) + log(kappa) - z_o`` on the raw logits (> 0: the token is outside the proxy's support).
#: Same layout as :data:`PROXY_FIELD`; emitted only when the diagnostics (its one reader) are on.
MARGIN_FIELD = "proxy_threshold_margin"
#: ``lp_reg.proxy_source=current``: the current policy's proxy of each token for the negative- and
#: positive-advantage tokens, computed by the engine in the update's own forward (no gradient),
#: returned next to verl's ``log_probs`` in its layout, never stored in the batch.
CURRENT_PROXY_NEG_FIELD = "lp_reg_current_proxy_neg"
CURRENT_PROXY_POS_FIELD = "lp_reg_current_proxy_pos"
#: verl's response-aligned reference-model log-prob (present when a reference model exists).
REF_LOG_PROB_FIELD = "ref_log_prob"
#: Response-aligned masks written by the trainer once per step.
HIGH_ENTROPY_MASK_FIELD = "high_entropy_mask"
CANDIDATES_FIELD = "lp_reg_candidates"

# --- non-tensor keys of a micro-batch that ask the engine for the proxy ----------------------
REQUEST_MIN_P = "lp_reg_proxy_min_p"
REQUEST_MODE = "lp_reg_proxy_mode"
REQUEST_SOFT = "lp_reg_proxy_soft"
REQUEST_MARGIN = "lp_reg_proxy_margin"
#: Update-time request (``proxy_source=current``): ``{"min_p", "mode", "soft", "temperatures"}``
#: with ``temperatures`` a dict from :data:`CURRENT_PROXY_NEG_FIELD` / ``..._POS_FIELD`` to the
#: proxy's temperature.
REQUEST_CURRENT_PROXY = "lp_reg_current_proxy"

# --- lp_reg option values (docs/method.md §9) --------------------------------------------------
#: ``lp_reg.divergence``: verl 0.9.1's ``kl_penalty`` names and their aliases -> the estimator.
DIVERGENCES = {
    "low_var_kl": "low_var_kl",
    "k3": "low_var_kl",
    "kl": "kl",
    "k1": "kl",
    "abs": "abs",
    "mse": "mse",
    "k2": "mse",
}
#: ``lp_reg.rank_by``: lowest log-prob (Lp-Reg) or highest entropy.
RANK_BY = ("log_prob", "entropy")

# --- metric names (verl's and ours) ---------------------------------------------------------
METRIC_PREFIX = "lp_reg/"
REWARD_METRIC = "critic/score/mean"
ENTROPY_METRIC = "actor/entropy"
GRAD_NORM_METRIC = "actor/grad_norm"
STEP_TIME_METRIC = "timing_s/step"
#: The loss's metrics; verl prefixes the actor's metrics with ``actor/``.
REG_FRACTION_METRIC = "actor/lp_reg/reg_fraction"
VALIDATION_PREFIX = "val-core/"

# --- data conventions -----------------------------------------------------------------------
#: Separator of several acceptable answers in one ground-truth string (OlympiadBench).
MULTI_ANSWER_SEP = "|||"
#: Chat template that renders the data's prompt text verbatim: the data (``data_prep --template
#: r1``) already holds the reference's full R1-Zero style prompt.
PASSTHROUGH_CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
