"""Lp-Reg wired into verl 0.9.1 through its public extension points (SPEC §2-§3, §6).

* Engine registry: :class:`LpRegFSDPEngine` subclasses verl's FSDP/FSDP2 language-model
  engine. When a micro-batch asks for it (non-tensor key ``lp_reg_proxy_min_p``) it reads the
  raw logits of the forward that computes ``old_log_prob`` and returns the proxy log-prob of
  every token (and its threshold margin) next to ``log_probs``: no second forward, and the
  logits are never copied. Otherwise it is verl's engine, unchanged.
* Trainer registry: :class:`LpRegTrainer` (``trainer.v1.trainer_mode=lp_reg``) is verl's
  sync trainer that asks for the proxy, stores it in the batch as ``proxy_log_probs``
  (response-aligned, like ``old_log_probs``), computes the 80/20 token mask (and, with
  ``lp_reg.selection=batch``, the Lp-Reg candidates) over the whole batch, logs the diagnostics, installs :func:`extended_ppo_loss` as the actor's loss and
  refuses, at start-up, the configurations that cannot carry a proxy.
* Policy-loss registry: ``lp_reg`` and ``high_entropy``. verl's ``ppo_loss`` hands a
  registered loss only its fixed tensors, so :func:`extended_ppo_loss` puts the extra
  per-token tensors of the micro-batch in a context variable and calls verl's own
  ``ppo_loss`` (entropy bonus, KL loss, global-batch normalisation unchanged); the
  registered functions read them from there and fail loudly when they are missing.
"""

from __future__ import annotations

import logging
import math
from contextvars import ContextVar
from functools import partial
from typing import Any

import torch

from verl_lpreg.config import HighEntropyConfig, LpRegConfig, policy_loss_group
from verl_lpreg.loss import lp_reg_policy_loss, select_candidates
from verl_lpreg.proxy import min_p_proxy_stats

logger = logging.getLogger(__name__)

TRAINER_MODE = "lp_reg"
PROXY_FIELD = "proxy_log_probs"
MARGIN_FIELD = "proxy_threshold_margin"
HIGH_ENTROPY_MASK_FIELD = "high_entropy_mask"
CANDIDATES_FIELD = "lp_reg_candidates"
# Full-sequence (nested) engine outputs; the trainer turns them into the response fields above.
_ENGINE_PROXY_FIELD = "lp_reg_proxy_log_probs_seq"
_ENGINE_MARGIN_FIELD = "lp_reg_proxy_margin_seq"
# Non-tensor keys of a micro-batch that ask the engine for the proxy.
_REQUEST_MIN_P = "lp_reg_proxy_min_p"
_REQUEST_MODE = "lp_reg_proxy_mode"
_REQUEST_SOFT = "lp_reg_proxy_soft"
# Per-token batch fields that the registered losses read (through extended_ppo_loss), and the
# loss modes that need them.
LOSS_INPUT_FIELDS = (PROXY_FIELD, CANDIDATES_FIELD, HIGH_ENTROPY_MASK_FIELD)
EXTRA_INPUT_LOSS_MODES = ("lp_reg", "high_entropy")

_loss_inputs: ContextVar[dict | None] = ContextVar("verl_lpreg_loss_inputs", default=None)


# --------------------------------------------------------------------------- engine


def proxy_request(lp_reg: LpRegConfig) -> dict[str, Any]:
    """Non-tensor entries that ask :class:`LpRegFSDPEngine` for the proxy of ``lp_reg``'s filter."""
    return {_REQUEST_MIN_P: lp_reg.min_p, _REQUEST_MODE: lp_reg.proxy_mode, _REQUEST_SOFT: lp_reg.soft}


def _proxy_request(micro_batch) -> dict | None:
    from verl.utils import tensordict_utils as tu

    min_p = tu.get_non_tensor_data(data=micro_batch, key=_REQUEST_MIN_P, default=None)
    if min_p is None:
        return None
    return {
        "min_p": float(min_p),
        "mode": tu.get_non_tensor_data(data=micro_batch, key=_REQUEST_MODE, default="minp"),
        "soft": bool(tu.get_non_tensor_data(data=micro_batch, key=_REQUEST_SOFT, default=False)),
    }


def _build_engine_class():
    from torch.distributed.tensor import DTensor
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    class LpRegFSDPEngine(FSDPEngineWithLMHead):
        """verl's FSDP engine that also returns the min-p proxy when a micro-batch asks for it."""

        def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
            request = _proxy_request(micro_batch)
            if request is None:
                return super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
            if tu.get_non_tensor_data(data=micro_batch, key="use_fused_kernels", default=False):
                raise RuntimeError(
                    "Lp-Reg needs the logits of the old-log-prob forward, and fused kernels never materialise "
                    "them: set actor_rollout_ref.model.use_fused_kernels=False"
                )
            proxy_outputs = self._proxy_outputs(output, output_args, micro_batch, request)
            model_output = super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
            model_output.update(proxy_outputs)
            return model_output

        def _proxy_outputs(self, output, output_args, micro_batch, request) -> dict[str, torch.Tensor]:
            """Proxy stats of every token, packed like verl's ``log_probs`` (nested, full sequence)."""
            logits = output.logits
            if isinstance(logits, DTensor):
                logits = logits.full_tensor()
            cu_seqlens = micro_batch["input_ids"].offsets()
            if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):
                stats = min_p_proxy_stats(
                    logits.squeeze(0),
                    output_args["input_ids_rmpad_rolled"],
                    request["min_p"],
                    mode=request["mode"],
                    soft=request["soft"],
                    temperature=output_args["temperature_rmpad"],
                )
                packed = [self._gather_and_unpad_packed(t, output_args["pad_size"]) for t in stats]
            else:
                # Padded (bsz, seqlen, V) logits: compute on the padded grid, keep the valid positions
                # in row-major order, which is the order of verl's packed log_probs.
                seq_lengths = cu_seqlens.diff()
                valid = torch.arange(logits.shape[1], device=logits.device) < seq_lengths.unsqueeze(1)
                labels = torch.zeros(valid.shape, dtype=torch.long, device=logits.device)
                labels[valid] = output_args["input_ids_rmpad_rolled"]
                temperature = output_args["temperature"].unsqueeze(1).expand(valid.shape)
                stats = min_p_proxy_stats(
                    logits,
                    labels,
                    request["min_p"],
                    mode=request["mode"],
                    soft=request["soft"],
                    temperature=temperature,
                )
                packed = [t[valid] for t in stats]
            return {
                _ENGINE_PROXY_FIELD: torch.nested.nested_tensor_from_jagged(packed[0], cu_seqlens),
                _ENGINE_MARGIN_FIELD: torch.nested.nested_tensor_from_jagged(packed[1], cu_seqlens),
            }

    LpRegFSDPEngine.__qualname__ = LpRegFSDPEngine.__name__
    LpRegFSDPEngine.__module__ = __name__
    return LpRegFSDPEngine


# Vendors whose FSDP engine we replace: keys of verl's EngineRegistry are (device, vendor) and a
# vendor-specific entry wins over verl's device-only one. "cpu" is the vendor of our CPU platform
# (verl_lpreg.cpu), used with VERL_ENGINE_DEVICE=cuda. Elsewhere verl's engine runs and the
# trainer stops at the first step with a clear error (no silent fallback to the vanilla loss).
ENGINE_VENDORS = {"cuda": ["nvidia", "cpu"], "npu": ["huawei"]}


def register_engine() -> type:
    """Register :class:`LpRegFSDPEngine` for verl's ``fsdp``/``fsdp2`` backends (idempotent)."""
    from verl.workers.engine.base import EngineRegistry

    registry = EngineRegistry._engines.setdefault("language_model", {})
    existing = registry.get("fsdp2", {}).get(("cuda", "nvidia"))
    if existing is not None and existing.__name__ == "LpRegFSDPEngine":
        return existing
    engine_cls = _build_engine_class()
    for device, vendors in ENGINE_VENDORS.items():
        EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"], device=device, vendor=vendors)(
            engine_cls
        )
    return engine_cls


# --------------------------------------------------------------------------- losses


def extended_ppo_loss(config, model_output, data, dp_group=None):
    """verl's ``ppo_loss`` with the micro-batch's extra per-token inputs made visible to the
    registered ``lp_reg``/``high_entropy`` losses (same signature as ``ppo_loss``)."""
    from verl.workers.utils.losses import ppo_loss

    extras = {}
    for field in LOSS_INPUT_FIELDS:
        if field in data.keys():
            extras[field] = data.select(field).to_padded_tensor()[field]
    token = _loss_inputs.set(extras)
    try:
        return ppo_loss(config, model_output, data, dp_group)
    finally:
        _loss_inputs.reset(token)


def _extra_input(field: str, like: torch.Tensor, loss_mode: str) -> torch.Tensor:
    extras = _loss_inputs.get()
    if extras is None or field not in extras:
        raise RuntimeError(
            f"loss_mode={loss_mode} needs the per-token tensor {field!r} in the batch, and it is missing. "
            f"Run with `python -m verl_lpreg.main_ppo`, or set trainer.v1.trainer_mode={TRAINER_MODE} "
            "with verl's main_ppo: that trainer computes it and installs the loss that passes it on."
        )
    value = extras[field]
    if value.shape != like.shape:
        raise RuntimeError(f"batch field {field!r} has shape {tuple(value.shape)}, expected {tuple(like.shape)}")
    return value.to(like.device)


def _clip_ratios(config) -> tuple[float, float]:
    low = config.clip_ratio_low if config.clip_ratio_low is not None else config.clip_ratio
    high = config.clip_ratio_high if config.clip_ratio_high is not None else config.clip_ratio
    return low, high


def compute_policy_loss_lp_reg(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """Registered ``lp_reg`` loss: :func:`verl_lpreg.loss.lp_reg_policy_loss` (SPEC §3) with the
    actor config's clip ratios, ``policy_loss.lp_reg`` group and global-batch normalisation."""
    lp = policy_loss_group(config.policy_loss, "lp_reg", LpRegConfig)
    clip_low, clip_high = _clip_ratios(config)
    candidates = _extra_input(CANDIDATES_FIELD, log_prob, "lp_reg").bool() if lp.selection == "batch" else None
    return lp_reg_policy_loss(
        old_log_prob,
        log_prob,
        _extra_input(PROXY_FIELD, log_prob, "lp_reg").float(),
        advantages,
        response_mask,
        neg_fraction=lp.neg_fraction,
        pos_fraction=lp.pos_fraction,
        kl_coef=lp.kl_coef,
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        loss_agg_mode=loss_agg_mode,
        rollout_is_weights=rollout_is_weights,
        candidates=candidates,
        **config.global_batch_info,
    )


def compute_policy_loss_high_entropy(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """Registered ``high_entropy`` loss (80/20 baseline): the clipped PPO loss on the batch's
    top-``top_fraction`` entropy tokens only (mask computed once per batch by the trainer)."""
    from verl_lpreg.high_entropy import high_entropy_policy_loss

    if rollout_is_weights is not None:
        raise ValueError("loss_mode=high_entropy does not support rollout correction weights")
    clip_low, clip_high = _clip_ratios(config)
    return high_entropy_policy_loss(
        old_log_prob,
        log_prob,
        advantages,
        response_mask,
        _extra_input(HIGH_ENTROPY_MASK_FIELD, log_prob, "high_entropy").bool(),
        clip_ratio_low=clip_low,
        clip_ratio_high=clip_high,
        clip_ratio_c=config.get("clip_ratio_c", 3.0),
        loss_agg_mode=loss_agg_mode,
        **config.global_batch_info,
    )


def register_losses() -> None:
    """Add ``lp_reg`` and ``high_entropy`` to verl's policy-loss registry (idempotent)."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    register_policy_loss("lp_reg")(compute_policy_loss_lp_reg)
    register_policy_loss("high_entropy")(compute_policy_loss_high_entropy)


# --------------------------------------------------------------------------- trainer


def check_config(config) -> None:
    """Refuse, before any worker starts, the runs that cannot compute what the loss needs."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    actor = config.actor_rollout_ref.actor
    loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
    if loss_mode not in POLICY_LOSS_REGISTRY:
        from verl_lpreg.plugin import REGISTRATION_ERROR

        why = f" (verl-lpreg failed to register: {REGISTRATION_ERROR})" if REGISTRATION_ERROR else ""
        raise ValueError(
            f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode!r} is not a registered policy loss{why}; "
            f"allowed: {', '.join(sorted(POLICY_LOSS_REGISTRY))}"
        )
    if loss_mode == "lp_reg":
        policy_loss_group(actor.policy_loss, "lp_reg", LpRegConfig)
        rollout_corr = config.algorithm.get("rollout_correction", None)
        if rollout_corr is not None and rollout_corr.get("bypass_mode", False):
            raise ValueError(
                "loss_mode=lp_reg needs pi_old's logits, but algorithm.rollout_correction.bypass_mode=True skips "
                "the old-log-prob forward (old_log_probs = rollout_log_probs): set bypass_mode=False"
            )
        if config.actor_rollout_ref.model.get("use_fused_kernels", False):
            raise ValueError(
                "loss_mode=lp_reg needs pi_old's logits, and actor_rollout_ref.model.use_fused_kernels=True never "
                "materialises them: set it to False"
            )
    if loss_mode == "high_entropy":
        policy_loss_group(actor.policy_loss, "high_entropy", HighEntropyConfig)
    if loss_mode in EXTRA_INPUT_LOSS_MODES and actor.get("strategy") not in ("fsdp", "fsdp2"):
        raise ValueError(
            f"loss_mode={loss_mode} is wired into verl's FSDP engine only; "
            f"actor_rollout_ref.actor.strategy={actor.get('strategy')!r} is not supported (use fsdp or fsdp2)"
        )


def _build_trainer_class():
    import transfer_queue as tq
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    from verl.utils.config import omega_conf_to_dataclass
    from verl.utils.debug import marked_timer

    from verl_lpreg.diagnostics import DiagnosticsConfig, WordTokenMap, compute_step_diagnostics

    class LpRegTrainer(PPOTrainerSync):
        """verl's sync v1 trainer plus the proxy, the 80/20 mask and the diagnostics (SPEC §2, §6)."""

        def _build_replay_buffer(self):
            # verl keys its sync/async behaviour (replay buffer, refill, checkpoint and step logic)
            # on the mode's name, and any name but "sync" means async. This trainer is the sync one.
            self.trainer_mode = "sync"
            return super()._build_replay_buffer()

        def _setup(self):
            check_config(self.config)
            actor = self.config.actor_rollout_ref.actor
            self._loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
            self._lp_reg = policy_loss_group(actor.policy_loss, "lp_reg", LpRegConfig)
            self._high_entropy = policy_loss_group(actor.policy_loss, "high_entropy", HighEntropyConfig)
            self._diagnostics = DiagnosticsConfig.from_config(self.config.get("lp_reg_diagnostics", None))
            super()._setup()
            self.actor_rollout_wg.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(actor)))
            if self._diagnostics.enable:
                self._spark_map = WordTokenMap.from_tokenizer(self.tokenizer, self._diagnostics.spark_words)
                self._noise_map = WordTokenMap.from_tokenizer(self.tokenizer, self._diagnostics.noise_words)

        def _compute_old_log_prob(self, batch, metrics):
            if self._loss_mode != "lp_reg":
                return super()._compute_old_log_prob(batch, metrics)
            batch.extra_info.update(proxy_request(self._lp_reg))
            try:
                batch = super()._compute_old_log_prob(batch, metrics)
            finally:
                for key in proxy_request(self._lp_reg):
                    batch.extra_info.pop(key, None)
            if _ENGINE_PROXY_FIELD not in (batch.fields or []):
                raise RuntimeError(
                    "loss_mode=lp_reg: the actor's engine returned no proxy log-probs. verl picked an engine that is "
                    f"not verl-lpreg's (it replaces the FSDP engine for the vendors {ENGINE_VENDORS}); is the "
                    "verl-lpreg plugin importable in the Ray workers (VERL_USE_EXTERNAL_PLUGINS)?"
                )
            data = tq.kv_batch_get(
                keys=batch.keys,
                partition_id=batch.partition_id,
                select_fields=[_ENGINE_PROXY_FIELD, _ENGINE_MARGIN_FIELD, "response_mask"],
            )
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=proxy_fields(data))

        def _compute_advantage(self, batch, metrics):
            batch = super()._compute_advantage(batch, metrics)
            if self._loss_mode == "high_entropy":
                batch = self._put_high_entropy_mask(batch, metrics)
            if self._loss_mode == "lp_reg" and self._lp_reg.selection == "batch":
                batch = self._put_lp_reg_candidates(batch, metrics)
            if self._diagnostics.enable:
                with marked_timer("lp_reg_diagnostics", self.timing_raw):
                    metrics.update(self._step_diagnostics(batch))
            return batch

        def _padded(self, batch, fields):
            """Padded ``[B, R]`` fields; ``response_mask`` also zero on the samples verl added only
            to balance the data-parallel ranks (tag ``is_padding``), which no statistic counts."""
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
            padded = {k: _to_padded(v) for k, v in data.items()}
            real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags])
            padded["response_mask"] = padded["response_mask"].bool() & real.unsqueeze(1)
            return padded

        def _put_response_fields(self, batch, padded: dict[str, torch.Tensor]):
            """Store padded ``[B, R]`` per-token fields in the batch's jagged response layout."""
            from tensordict import TensorDict
            from verl.workers.utils.padding import response_to_nested

            nested_mask = tq.kv_batch_get(
                keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask"]
            )["response_mask"]
            fields = TensorDict(
                {name: response_to_nested(value, nested_mask) for name, value in padded.items()}, batch_size=len(batch)
            )
            return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)

        def _put_high_entropy_mask(self, batch, metrics):
            """The 80/20 token mask over the whole batch, by pi_old entropy. ``loss_mask`` becomes
            the selected tokens too: verl's engine counts it for the token-mean denominator, and
            the 80/20 loss averages over the selected tokens only, as its authors' code does."""
            from verl_lpreg.high_entropy import high_entropy_mask

            data = self._padded(batch, ["entropy", "response_mask"])
            valid = data["response_mask"]
            selected = high_entropy_mask(data["entropy"], valid, self._high_entropy.top_fraction)
            metrics["high_entropy/selected_fraction"] = float(selected.sum()) / max(int(valid.sum()), 1)
            return self._put_response_fields(
                batch, {HIGH_ENTROPY_MASK_FIELD: selected.float(), "loss_mask": selected.to(torch.int64)}
            )

        def _put_lp_reg_candidates(self, batch, metrics):
            """``lp_reg.selection=batch``: the rho-quantile over the whole batch, by pi_old's log-prob."""
            data = self._padded(batch, ["old_log_probs", "advantages", "response_mask"])
            valid = data["response_mask"]
            candidates = select_candidates(
                data["old_log_probs"], data["advantages"], valid, self._lp_reg.neg_fraction, self._lp_reg.pos_fraction
            )
            metrics["lp_reg/candidate_fraction"] = float(candidates.sum()) / max(int(valid.sum()), 1)
            return self._put_response_fields(batch, {CANDIDATES_FIELD: candidates.float()})

        def _step_diagnostics(self, batch) -> dict[str, Any]:
            fields = ["responses", "response_mask", "old_log_probs", "advantages", "entropy"]
            if self._loss_mode == "lp_reg":
                fields += [PROXY_FIELD, MARGIN_FIELD]
            data = self._padded(batch, fields)
            response_mask = data["response_mask"]
            old_log_probs = data["old_log_probs"].float()
            extra = {}
            if self._loss_mode == "lp_reg":
                margin = data[MARGIN_FIELD].float()
                extra["proxy_log_probs"] = data[PROXY_FIELD].float()
                extra["proxy_removed"] = margin > 0
                if self._lp_reg.proxy_mode == "minp":
                    extra["log_minp_threshold"] = minp_log_threshold(
                        old_log_probs, margin, self._lp_reg.min_p, self.config.actor_rollout_ref.rollout.temperature
                    )
            return compute_step_diagnostics(
                responses=data["responses"],
                response_mask=response_mask,
                old_log_probs=old_log_probs,
                advantages=data["advantages"].float(),
                entropy=data["entropy"].float(),
                spark_map=self._spark_map,
                noise_map=self._noise_map,
                config=self._diagnostics,
                **extra,
            )

    LpRegTrainer.__qualname__ = LpRegTrainer.__name__
    LpRegTrainer.__module__ = __name__
    return LpRegTrainer


def _to_padded(tensor: torch.Tensor) -> torch.Tensor:
    """A batch field as a padded ``[B, R]`` tensor (TransferQueue returns jagged ones)."""
    return tensor.to_padded_tensor(0) if tensor.is_nested else tensor


def proxy_fields(model_output):
    """The engine's full-sequence proxy outputs as response-aligned fields, like ``old_log_probs``.

    ``model_output`` holds the engine's nested outputs and the batch's ``response_mask``.
    Returns a TensorDict with ``proxy_log_probs`` and ``proxy_threshold_margin``.
    """
    from tensordict import TensorDict
    from verl.workers.utils.padding import response_from_nested

    response_mask = model_output["response_mask"]
    return TensorDict(
        {
            PROXY_FIELD: response_from_nested(model_output[_ENGINE_PROXY_FIELD], response_mask),
            MARGIN_FIELD: response_from_nested(model_output[_ENGINE_MARGIN_FIELD], response_mask),
        },
        batch_size=len(response_mask),
    )


def minp_log_threshold(old_log_probs: torch.Tensor, margin: torch.Tensor, min_p: float, temperature: float):
    """``log(kappa * p_max)`` per token from the sampled token's log-prob and the proxy margin.

    With ``margin = max(z) + log(kappa) - z_o`` (raw logits) and ``log p_o`` at temperature T:
    ``log p_max = log p_o + (max(z) - z_o) / T``, so the threshold (at the rollout temperature;
    the raw one when T = 1, as in every paper run) costs no pass over the vocabulary.
    """
    log_kappa = math.log(min_p)
    return log_kappa + old_log_probs + (margin - log_kappa) / temperature


def register_trainer() -> type:
    """Register :class:`LpRegTrainer` as ``trainer.v1.trainer_mode=lp_reg`` (idempotent)."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.trainer.ppo.v1.trainer_base import register_trainer as verl_register_trainer

    existing = TRAINER_REGISTRY.get(TRAINER_MODE)
    if existing is not None:
        return existing
    return verl_register_trainer(TRAINER_MODE)(_build_trainer_class())


def register_all() -> None:
    """Everything ``import verl`` needs for ``loss_mode=lp_reg`` (called by the plugin)."""
    from verl_lpreg.config import register_resolvers

    register_resolvers()
    register_losses()
    register_engine()
    register_trainer()


__all__ = [
    "CANDIDATES_FIELD",
    "LOSS_INPUT_FIELDS",
    "MARGIN_FIELD",
    "PROXY_FIELD",
    "TRAINER_MODE",
    "check_config",
    "extended_ppo_loss",
    "minp_log_threshold",
    "proxy_fields",
    "proxy_request",
    "register_all",
    "register_engine",
    "register_losses",
    "register_trainer",
]
