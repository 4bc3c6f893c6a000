"""Eager attention that is correct under verl's Ulysses sequence parallelism (CPU harness only).

verl 0.9.1 does Ulysses' all-to-all only inside flash attention
(``verl/models/transformers/monkey_patch.py``, ``_ulysses_flash_attention_forward``); with the eager
attention of CPU runs each SP rank would attend only within its own slice of the packed sequence.
:func:`ulysses_eager_attention` is registered in transformers' ``AttentionInterface`` as
:data:`ATTENTION_NAME` (selected by ``verl_lpreg/cpu/overrides.txt``) and:

* with a Ulysses group of size 1 (or no ``position_ids``), calls the model's own
  ``eager_attention_forward`` with transformers' eager mask: the same computation as
  ``attn_implementation="eager"``;
* with a group of size > 1, gathers the sequence and scatters the heads with verl's
  ``gather_seq_scatter_heads``, all-gathers the position ids (each rank then knows the whole packed
  row), attends over the whole packed row with a block-diagonal causal mask (a sequence starts
  where the position ids do not continue: verl's SP padding restarts at 0, so it is its own
  segment), and gives every rank its slice back with ``gather_heads_scatter_seq``.

Not imported by the product: GPU runs use flash attention, where verl's own patch does this.
"""

from __future__ import annotations

import sys

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask
from verl.utils.ulysses import (
    gather_heads_scatter_seq,
    gather_seq_scatter_heads,
    get_ulysses_sequence_parallel_group,
    get_ulysses_sequence_parallel_world_size,
)

#: The ``attn_implementation`` name (no "sdpa"/"flash"/"flex" in it: transformers special-cases those).
ATTENTION_NAME = "verl_lpreg_ulysses_eager"


def packed_segments(position_ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, stop) of each sequence packed in one row of ``position_ids`` (1-D).

    A new sequence starts at the first token and wherever the position ids do not continue the
    previous token's (``p[t] != p[t-1] + 1``): the reset to 0 of remove-padding's packing, and of
    the positions verl gives its SP padding (``ulysses_pad``: 0, 1, ...), which so is a sequence
    of its own."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[1:] = position_ids[1:] != position_ids[:-1] + 1
    bounds = [*torch.nonzero(starts).flatten().tolist(), position_ids.numel()]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _causal_attention(query, key, value, scaling, dropout, training):
    """Eager causal attention of one sequence: (heads, seq, d) each, float32 softmax."""
    seq = query.size(-2)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    causal = torch.ones(seq, seq, dtype=torch.bool, device=query.device).tril()
    scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=training)
    return torch.matmul(weights, value)


def _varlen_attention(query, key, value, position_ids, scaling, dropout, training):
    """Causal attention within each sequence packed in one row: (heads, seq, d) each, positions (seq,)."""
    return torch.cat(
        [
            _causal_attention(query[:, a:b], key[:, a:b], value[:, a:b], scaling, dropout, training)
            for a, b in packed_segments(position_ids)
        ],
        dim=1,
    )


def _model_eager(module: torch.nn.Module):
    """The ``eager_attention_forward`` of the module's modeling file (e.g. modeling_qwen3)."""
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise NotImplementedError(f"{type(module).__name__}: no eager_attention_forward in {type(module).__module__}")
    return fn


def ulysses_eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
):
    """Attention for transformers' ``AttentionInterface``: query (batch, heads, seq/sp, head_dim),
    key and value (batch, kv_heads, seq/sp, head_dim); returns (batch, seq/sp, heads, head_dim) and
    no weights. Eager attention when the Ulysses group has size 1; otherwise see the module doc."""
    sp_size = get_ulysses_sequence_parallel_world_size()
    position_ids = kwargs.get("position_ids")
    if sp_size == 1 or position_ids is None:
        eager = _model_eager(module)
        return eager(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if kwargs.get("sliding_window") is not None:
        raise NotImplementedError("sliding-window attention under Ulysses SP on CPU")
    if position_ids.dim() != 2:
        raise NotImplementedError("Ulysses SP on CPU supports 2-D position_ids (text models) only")
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling

    # GQA: give every query head its own key/value head, so that scattering the heads keeps them paired.
    groups = query.size(1) // key.size(1)
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    # (batch, heads, seq/sp, d) -> (batch, heads/sp, seq, d)
    query, key, value = (gather_seq_scatter_heads(t, seq_dim=2, head_dim=1) for t in (query, key, value))

    parts = [torch.empty_like(position_ids) for _ in range(sp_size)]
    torch.distributed.all_gather(parts, position_ids.contiguous(), group=get_ulysses_sequence_parallel_group())
    full_positions = torch.cat(parts, dim=-1).expand(query.size(0), -1)

    out = torch.stack(
        [
            _varlen_attention(q, k, v, positions, scaling, dropout, module.training)
            for q, k, v, positions in zip(query, key, value, full_positions, strict=True)
        ]
    )  # (batch, heads/sp, seq, d)
    # (batch, heads/sp, seq, d) -> (batch, heads, seq/sp, d) -> (batch, seq/sp, heads, d)
    out = gather_heads_scatter_seq(out, head_dim=1, seq_dim=2)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register :func:`ulysses_eager_attention` (and transformers' eager mask for it) under
    :data:`ATTENTION_NAME`, process-wide."""
    AttentionInterface.register(ATTENTION_NAME, ulysses_eager_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)
