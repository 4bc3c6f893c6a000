"""verl's FSDP/FSDP2 language-model engine that also returns the min-p proxy of every token.

When a micro-batch asks for it (non-tensor key :data:`~verl_lpreg.names.REQUEST_MIN_P`, set by
the trainer for the old-log-prob forward), :class:`LpRegFSDPEngine` reads the raw logits of that
forward and returns the proxy log-prob of every token (and, when asked, its threshold margin) in
the layout of verl's ``log_probs``: no second forward, and the logits are never copied. With
``lp_reg.proxy_source=current`` the update's micro-batches carry
:data:`~verl_lpreg.names.REQUEST_CURRENT_PROXY` instead: the engine computes the current
policy's proxy from the logits of the update's own forward, without gradient, at each requested
target temperature (the reference spends two extra forwards on it). Otherwise it is verl's
engine, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.tensor import DTensor
from verl.utils import tensordict_utils as tu
from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

from verl_lpreg.names import (
    CURRENT_PROXY_NEG_FIELD,
    CURRENT_PROXY_POS_FIELD,
    MARGIN_FIELD,
    PROXY_FIELD,
    REQUEST_CURRENT_PROXY,
    REQUEST_MARGIN,
    REQUEST_MIN_P,
    REQUEST_MODE,
    REQUEST_SOFT,
)
from verl_lpreg.proxy import min_p_proxy_stats


def proxy_request(lp_reg, *, margin: bool = False) -> dict[str, Any]:
    """Non-tensor entries that ask :class:`LpRegFSDPEngine` for the proxy of ``lp_reg``'s filter
    (an ``LpRegConfig``); ``margin`` also asks for the threshold margin."""
    return {
        REQUEST_MIN_P: lp_reg.min_p,
        REQUEST_MODE: lp_reg.proxy_mode,
        REQUEST_SOFT: lp_reg.soft,
        REQUEST_MARGIN: margin,
    }


def current_proxy_request(lp_reg, rollout_temperature: float) -> dict[str, Any]:
    """The update-time request of ``proxy_source=current``: the current policy's proxy at the
    negative-advantage target temperature, and at the positive one when positive tokens are
    regularised (``pos_fraction > 0``)."""
    pos_temperature, neg_temperature = lp_reg.target_temperatures(rollout_temperature)
    temperatures = {CURRENT_PROXY_NEG_FIELD: float(neg_temperature)}
    if lp_reg.pos_fraction > 0:
        temperatures[CURRENT_PROXY_POS_FIELD] = float(pos_temperature)
    return {
        REQUEST_CURRENT_PROXY: {
            "min_p": float(lp_reg.min_p),
            "mode": lp_reg.proxy_mode,
            "soft": bool(lp_reg.soft),
            "temperatures": temperatures,
        }
    }


def _read_request(micro_batch) -> dict | None:
    min_p = tu.get_non_tensor_data(data=micro_batch, key=REQUEST_MIN_P, default=None)
    if min_p is None:
        return None
    return {
        "min_p": float(min_p),
        "mode": tu.get_non_tensor_data(data=micro_batch, key=REQUEST_MODE, default="minp"),
        "soft": bool(tu.get_non_tensor_data(data=micro_batch, key=REQUEST_SOFT, default=False)),
        "margin": bool(tu.get_non_tensor_data(data=micro_batch, key=REQUEST_MARGIN, default=False)),
    }


class LpRegFSDPEngine(FSDPEngineWithLMHead):
    """verl's FSDP engine that also returns the min-p proxy when a micro-batch asks for it."""

    def prepare_model_outputs(self, output, output_args, micro_batch, logits_processor_func):
        request = _read_request(micro_batch)
        current = tu.get_non_tensor_data(data=micro_batch, key=REQUEST_CURRENT_PROXY, default=None)
        model_output = super().prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)
        if request is None and current is None:
            return model_output
        if tu.get_non_tensor_data(data=micro_batch, key="use_fused_kernels", default=False):
            raise RuntimeError(
                "Lp-Reg needs the logits of the forward, and fused kernels never materialise "
                "them: set actor_rollout_ref.model.use_fused_kernels=False"
            )
        if request is not None:
            model_output.update(self._proxy_outputs(output, output_args, micro_batch, request))
        if current is not None:
            for field, temperature in current["temperatures"].items():
                target = {**current, "margin": False}
                outputs = self._proxy_outputs(output, output_args, micro_batch, target, temperature=temperature)
                model_output[field] = outputs[PROXY_FIELD]
        return model_output

    def _proxy_outputs(self, output, output_args, micro_batch, request, temperature=None) -> dict[str, torch.Tensor]:
        """Proxy stats of every token, packed like verl's ``log_probs`` (nested, full sequence), at
        the forward's own temperature or at ``temperature``."""
        logits = output.logits
        if isinstance(logits, DTensor):
            logits = logits.full_tensor()
        cu_seqlens = micro_batch["input_ids"].offsets()
        filter_args = {"mode": request["mode"], "soft": request["soft"]}
        if tu.get_non_tensor_data(data=micro_batch, key="use_remove_padding", default=True):
            stats = min_p_proxy_stats(
                logits.squeeze(0),
                output_args["input_ids_rmpad_rolled"],
                request["min_p"],
                temperature=output_args["temperature_rmpad"] if temperature is None else temperature,
                **filter_args,
            )
            packed = [
                self._gather_and_unpad_packed(t, output_args["pad_size"])
                for t in stats[: 2 if request["margin"] else 1]
            ]
        else:
            # Padded (bsz, seqlen, V) logits: compute on the rows that predict a response token only
            # (the loss and the trainer read nothing else; prompt and padding rows stay 0).
            seq_lengths = cu_seqlens.diff()
            response_lengths = micro_batch["responses"].offsets().diff().to(seq_lengths.device)
            positions = torch.arange(logits.shape[1], device=logits.device)
            valid = positions < seq_lengths.unsqueeze(1)
            first = (seq_lengths - response_lengths - 1).unsqueeze(1)
            needed = (positions >= first) & (positions < (seq_lengths - 1).unsqueeze(1))
            # verl's packed tensors (labels, log_probs) hold the valid positions in row-major order.
            # Integer indices: index_select is several times faster than boolean-mask indexing.
            needed_packed = needed[valid]
            packed_index = needed_packed.nonzero().squeeze(1)
            row_index = needed.flatten().nonzero().squeeze(1)
            if temperature is None:
                temperature = output_args["temperature"].index_select(0, row_index // logits.shape[1])
            rows = min_p_proxy_stats(
                logits.flatten(0, 1).index_select(0, row_index),
                output_args["input_ids_rmpad_rolled"].index_select(0, packed_index),
                request["min_p"],
                temperature=temperature,
                **filter_args,
            )
            packed = []
            for values in rows[: 2 if request["margin"] else 1]:
                full = torch.zeros(needed_packed.shape, dtype=values.dtype, device=values.device)
                packed.append(full.index_copy_(0, packed_index, values))
        outputs = {PROXY_FIELD: torch.nested.nested_tensor_from_jagged(packed[0], cu_seqlens)}
        if request["margin"]:
            outputs[MARGIN_FIELD] = torch.nested.nested_tensor_from_jagged(packed[1], cu_seqlens)
        return outputs
