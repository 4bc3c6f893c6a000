"""``trainer.v1.trainer_mode=lp_reg``: verl's sync v1 trainer plus the proxy, the trainer-side
token selections and the diagnostics (docs/method.md §2, §3, §6).

Data path, per step:

* old-log-prob forward: the micro-batches carry a proxy request; the engine returns
  ``proxy_log_probs`` (and the threshold margin when the diagnostics are on) next to verl's
  ``log_probs``, and verl's worker stores them in TransferQueue. The driver reads nothing extra.
* after the advantages: one read of the fields that this step's trainer-side work needs (the
  80/20 mask, the batch-wide Lp-Reg selection, the diagnostics), one write of the masks.
* update: the actor receives the batch without the fields no loss reads (the margin). With
  ``lp_reg.proxy_source=current`` the old-log-prob forward carries no proxy request; the update's
  micro-batches carry one instead (the engine reads the update forward's logits), and with
  ``rank_by=entropy`` per micro-batch the update computes the current policy's entropy.

Our verl-dependent modules are imported where they are used (see :mod:`verl_lpreg.integration.registry`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from functools import partial
from typing import Any

import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer
from verl.workers.utils.padding import response_from_nested, response_to_nested

from verl_lpreg.integration.engine import current_proxy_request, proxy_request
from verl_lpreg.names import (
    CANDIDATES_FIELD,
    HIGH_ENTROPY_MASK_FIELD,
    MARGIN_FIELD,
    PROXY_FIELD,
    TRAINER_MODE,
)
from verl_lpreg.val_protocol import annotate_val_dataset

#: Engine outputs stored in the layout of verl's ``log_probs`` (packed full sequences).
_FULL_SEQUENCE_FIELDS = (PROXY_FIELD, MARGIN_FIELD)
#: Fields of ours that no loss reads: kept out of the update's transfer.
_NOT_FOR_UPDATE = (MARGIN_FIELD,)

logger = logging.getLogger(__name__)


class LpRegTrainer(PPOTrainerSync):
    """verl's sync v1 trainer plus the proxy, the 80/20 mask and the diagnostics."""

    @property
    def trainer_mode(self) -> str:
        """verl keys its sync/async behaviour (replay buffer, refill, checkpoint and step logic) on
        ``self.trainer_mode``, and any name but ``"sync"`` means async. This trainer is the sync one,
        whatever verl reads when: the attribute is a class property, not an instance value."""
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        # verl's __init__ assigns config.trainer.v1.trainer_mode; ours is the only value it can hold.
        if value not in (TRAINER_MODE, "sync"):
            raise ValueError(f"LpRegTrainer runs as trainer.v1.trainer_mode={TRAINER_MODE}, got {value!r}")

    def _setup(self):
        from verl_lpreg.config import HighEntropyConfig, LpRegConfig, policy_loss_group
        from verl_lpreg.diagnostics import DiagnosticsConfig, WordTokenMap
        from verl_lpreg.integration.checks import check_config
        from verl_lpreg.integration.losses import extended_ppo_loss

        check_config(self.config)
        actor = self.config.actor_rollout_ref.actor
        self._loss_mode = actor.policy_loss.get("loss_mode", "vanilla")
        self._lp_reg = policy_loss_group(actor.policy_loss, "lp_reg", LpRegConfig)
        self._high_entropy = policy_loss_group(actor.policy_loss, "high_entropy", HighEntropyConfig)
        self._diagnostics = DiagnosticsConfig.from_config(self.config.get("lp_reg_diagnostics", None))
        self._step_fields = self._fields_read_per_step()
        if self._ranks_update_entropy() and not actor.calculate_entropy:
            # the per-micro-batch ranking (80/20 as its authors, or lp_reg.rank_by=entropy) reads the
            # update forward's entropy: ask verl's engine for it (verl's _update_actor reads this key;
            # entropy_coeff stays as configured)
            logger.info("actor_rollout_ref.actor.calculate_entropy set to True: the loss ranks by entropy")
            with open_dict(self.config):
                actor.calculate_entropy = True
        super()._setup()
        self.actor_rollout_wg.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(actor)))
        if self._diagnostics.enable:
            self._spark_map = WordTokenMap.from_tokenizer(self.tokenizer, self._diagnostics.spark_words)
            self._noise_map = WordTokenMap.from_tokenizer(self.tokenizer, self._diagnostics.noise_words)

    def _init_dataloader(self):
        """verl's dataloaders; the validation rows then carry the per-benchmark protocol
        (``__rollout_n__`` and ``agent_name``, :mod:`verl_lpreg.val_protocol`)."""
        super()._init_dataloader()
        applied = annotate_val_dataset(self.val_dataset, self.config)
        if applied:
            settings = ", ".join(f"{s}: n={p.n} T={p.temperature:g}" for s, p in applied.items())
            print(f"[verl-lpreg] validation protocol (lp_reg_validation): {settings}")

    def _ranks_update_entropy(self) -> bool:
        """Whether the loss ranks the tokens of each micro-batch by the update forward's entropy."""
        if self._loss_mode == "high_entropy":
            return self._high_entropy.selection == "micro_batch"
        lp = self._lp_reg
        return self._loss_mode == "lp_reg" and lp.rank_by == "entropy" and lp.selection == "micro_batch"

    def _fields_read_per_step(self) -> list[str]:
        """The batch fields that this run's trainer-side work reads after the advantages."""
        fields = []
        if self._loss_mode == "high_entropy" and self._high_entropy.selection == "batch":
            fields += ["entropy"]
        if self._loss_mode == "lp_reg" and self._lp_reg.selection == "batch":
            fields += ["entropy" if self._lp_reg.rank_by == "entropy" else "old_log_probs", "advantages"]
        if self._diagnostics.enable:
            fields += ["responses", "old_log_probs", "advantages", "entropy"]
            if self._old_forward_proxy():
                fields += [PROXY_FIELD, MARGIN_FIELD]
        return list(dict.fromkeys(fields))

    def _old_forward_proxy(self) -> bool:
        """Whether the old-log-prob forward computes the proxy (``proxy_source=old``)."""
        return self._loss_mode == "lp_reg" and self._lp_reg.proxy_source == "old"

    def _compute_old_log_prob(self, batch, metrics):
        if not self._old_forward_proxy():
            return super()._compute_old_log_prob(batch, metrics)
        request = proxy_request(self._lp_reg, margin=self._diagnostics.enable)
        batch.extra_info.update(request)
        try:
            batch = super()._compute_old_log_prob(batch, metrics)
        finally:
            for key in request:
                batch.extra_info.pop(key, None)
        if PROXY_FIELD not in (batch.fields or []):
            raise RuntimeError(
                "loss_mode=lp_reg: the actor's engine returned no proxy log-probs. verl picked an engine that is "
                "not verl-lpreg's (it replaces the FSDP engine for the vendors in "
                "verl_lpreg.integration.registry.ENGINE_VENDORS); is the verl-lpreg plugin importable in the Ray "
                "workers (VERL_USE_EXTERNAL_PLUGINS)?"
            )
        return batch

    def _compute_advantage(self, batch, metrics):
        batch = super()._compute_advantage(batch, metrics)
        if not self._step_fields:
            return batch
        nested_mask, data = self._read_step_fields(batch)
        new_fields: dict[str, torch.Tensor] = {}
        if self._loss_mode == "high_entropy" and self._high_entropy.selection == "batch":
            new_fields.update(self._high_entropy_fields(data, metrics))
        if self._loss_mode == "lp_reg" and self._lp_reg.selection == "batch":
            new_fields.update(self._candidate_fields(data, metrics))
        if self._diagnostics.enable:
            with marked_timer("lp_reg_diagnostics", self.timing_raw):
                metrics.update(self._step_diagnostics(data))
        if new_fields:
            fields = TensorDict(
                {name: response_to_nested(value, nested_mask) for name, value in new_fields.items()},
                batch_size=len(batch),
            )
            batch = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
        return batch

    def _update_actor(self, batch, metrics):
        request = {}
        if self._loss_mode == "lp_reg" and self._lp_reg.proxy_source == "current":
            request = current_proxy_request(self._lp_reg, self.config.actor_rollout_ref.rollout.temperature)
        for_update = batch
        if batch.fields is not None:
            for_update = dataclasses.replace(batch, fields=[f for f in batch.fields if f not in _NOT_FOR_UPDATE])
        for_update.extra_info.update(request)
        try:
            super()._update_actor(for_update, metrics)
        finally:
            for key in request:
                for_update.extra_info.pop(key, None)
        return batch

    def _read_step_fields(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One read of this step's fields: the nested ``response_mask`` and padded ``[B, R]`` response
        tensors, ``response_mask`` also zero on the samples verl added only to balance the
        data-parallel ranks (tag ``is_padding``), which no statistic counts and no selection picks."""
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=["response_mask", *self._step_fields]
        )
        nested_mask = data["response_mask"]
        padded = {}
        for name in data.keys():
            value = data[name]
            if name in _FULL_SEQUENCE_FIELDS:
                value = response_from_nested(value, nested_mask)
            padded[name] = value.to_padded_tensor(0) if value.is_nested else value
        real = torch.tensor([not tag.get("is_padding", False) for tag in batch.tags])
        padded["response_mask"] = padded["response_mask"].bool() & real.unsqueeze(1)
        return nested_mask, padded

    def _high_entropy_fields(self, data, metrics) -> dict[str, torch.Tensor]:
        """``high_entropy.selection=batch``: the 80/20 token mask over the whole batch, by pi_old
        entropy. ``loss_mask`` becomes the
        selected tokens too: verl's engine counts it for the token-mean denominator, and the 80/20
        loss averages over the selected tokens only, as its authors' code does."""
        from verl_lpreg.high_entropy import high_entropy_mask

        valid = data["response_mask"]
        selected = high_entropy_mask(data["entropy"], valid, self._high_entropy.top_fraction)
        metrics["high_entropy/selected_fraction"] = float(selected.sum()) / max(int(valid.sum()), 1)
        return {HIGH_ENTROPY_MASK_FIELD: selected.float(), "loss_mask": selected.to(torch.int64)}

    def _candidate_fields(self, data, metrics) -> dict[str, torch.Tensor]:
        """``lp_reg.selection=batch``: the rho-quantile over the whole batch, by pi_old's log-prob
        (or, with ``rank_by=entropy``, pi_old's entropy)."""
        from verl_lpreg.loss import select_candidates

        valid = data["response_mask"]
        lp = self._lp_reg
        scores = data["entropy"] if lp.rank_by == "entropy" else data["old_log_probs"]
        candidates = select_candidates(
            scores, data["advantages"], valid, lp.neg_fraction, lp.pos_fraction, rank_by=lp.rank_by
        )
        metrics["lp_reg/candidate_fraction"] = float(candidates.sum()) / max(int(valid.sum()), 1)
        return {CANDIDATES_FIELD: candidates.float()}

    def _step_diagnostics(self, data) -> dict[str, Any]:
        from verl_lpreg.diagnostics import compute_step_diagnostics

        old_log_probs = data["old_log_probs"].float()
        extra = {}
        if self._old_forward_proxy():
            margin = data[MARGIN_FIELD].float()
            extra["proxy_log_probs"] = data[PROXY_FIELD].float()
            extra["proxy_removed"] = margin > 0
            if self._lp_reg.proxy_mode == "minp" and self._lp_reg.min_p > 0:
                extra["log_minp_threshold"] = minp_log_threshold(
                    old_log_probs, margin, self._lp_reg.min_p, self.config.actor_rollout_ref.rollout.temperature
                )
        return compute_step_diagnostics(
            responses=data["responses"],
            response_mask=data["response_mask"],
            old_log_probs=old_log_probs,
            advantages=data["advantages"].float(),
            entropy=data["entropy"].float(),
            spark_map=self._spark_map,
            noise_map=self._noise_map,
            config=self._diagnostics,
            **extra,
        )


def minp_log_threshold(old_log_probs: torch.Tensor, margin: torch.Tensor, min_p: float, temperature: float):
    """``log(kappa * p_max)`` per token from the sampled token's log-prob and the proxy margin.

    With ``margin = max(z) + log(kappa) - z_o`` (raw logits) and ``log p_o`` at temperature T:
    ``log p_max = log p_o + (max(z) - z_o) / T``, so the threshold (at the rollout temperature;
    the raw one when T = 1, as in every paper run) costs no pass over the vocabulary.
    """
    log_kappa = math.log(min_p)
    return log_kappa + old_log_probs + (margin - log_kappa) / temperature
