"""The denoised proxy distribution of Lp-Reg (docs/method.md §2).

For one position with raw logits ``z`` (the policy that generated the rollout, pi_old) and
``p = softmax(z)`` the proxy keeps token ``v`` iff

* ``mode="minp"``  (default): ``p_v >= kappa * max_u p_u``  <=>  ``z_v >= max(z) + log(kappa)``
* ``mode="fixed"``:           ``p_v >= kappa``              <=>  ``z_v >= logsumexp(z) + log(kappa)``

A removed token's logit becomes ``-1e4`` (hard filter, the reference) or the row's minimum
logit (``soft=True``). The filtered logits are divided by the temperature ``T`` and
log-softmaxed. For the sampled token ``o`` this has the closed form

    log pi_proxy(o) = z'_o / T - log( sum_{v kept} exp(z_v / T) + n_removed * exp(f / T) )

with ``z'_o = z_o`` when ``o`` is kept and ``z'_o = f`` when it was removed, ``f`` the fill
value. Only the kept tokens need an exponential, and they are few. So the logits are read
once, as blocks of :data:`BLOCK` columns: the block maxima give the row max, and only the
blocks whose max reaches the threshold (at most one per kept token) are looked at again.
No copy of the logits, no softmax over the vocabulary; ``fixed`` mode adds one logsumexp
pass. When the rows are flat (a quarter of the blocks or more are candidates: a random or
small model) one masked exponential pass over the rows replaces the candidate gather. The
reference clones the logits and runs softmax + masked fill + log_softmax over the whole
vocabulary (``benchmarks/bench_proxy.py`` compares the two).

On an accelerator the candidate blocks' ``.nonzero()`` would be a host synchronisation per
chunk, so there the same numbers come from a fixed-shape formulation with no data-dependent
shape: the row max (and min), then one masked exponential sum over the whole row,
``sum_v [z_v >= threshold] exp((z_v - max) / T)``. Under ``torch.compile`` (when Triton is
available) each is one fused pass over the logits, reading them in their own dtype and
keeping only per-row float32 scalars, so chunks are sized by a memory budget
(:data:`_DEVICE_CHUNK_BYTES`) rather than by the candidate temporaries. Thresholds,
comparisons and sums are float32 in both paths, so they agree to float32 rounding (the sums
run in another order).
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import torch

__all__ = ["PROXY_MODES", "HARD_FILL_LOGIT", "ProxyStats", "min_p_proxy_log_prob", "min_p_proxy_stats"]

PROXY_MODES = ("minp", "fixed")
HARD_FILL_LOGIT = -1e4
# Rows processed at once: bounds the small per-block temporaries (and, in fixed mode only, a
# float32 copy of the rows for the logsumexp) whatever the batch size.
_CHUNK_ELEMENTS = 1 << 24
# Columns per block of the one-pass filter.
BLOCK = 64
# The CPU pass switches to one masked pass over whole rows when at least 1 / _DENSE_FRACTION of the
# blocks are candidates, in groups of rows of _DENSE_ELEMENTS values.
_DENSE_FRACTION = 4
_DENSE_ELEMENTS = 1 << 19
# Accelerator path: float32 bytes per chunk if the chunk's rows were upcast (what the eager
# fixed-shape pass allocates; compiled, it allocates per-row scalars only). 1 GiB: ~1,770 rows
# at Qwen's vocabulary, a few chunks per 30,720-token micro-batch.
_DEVICE_CHUNK_BYTES = 1 << 30


class ProxyStats(NamedTuple):
    """Per-token outputs of one proxy pass (all float32, shaped like ``token_ids``).

    ``proxy_log_prob``: log pi_proxy of the token (docs/method.md §2).
    ``threshold_margin``: ``threshold - z_o`` in raw-logit units, where the token is kept iff
    ``z_o >= threshold``: positive exactly for tokens outside the proxy's support. In ``minp``
    mode ``threshold = max(z) + log(kappa)``, so ``log(kappa * p_max)`` follows from it and the
    token's log-prob without another pass (docs/method.md §6 diagnostics).
    """

    proxy_log_prob: torch.Tensor
    threshold_margin: torch.Tensor


def _validate(logits: torch.Tensor, token_ids: torch.Tensor, min_p: float, mode: str, temperature) -> None:
    if mode not in PROXY_MODES:
        raise ValueError(f"proxy mode {mode!r} is not supported; allowed: {', '.join(PROXY_MODES)}")
    if not (0.0 <= float(min_p) <= 1.0):
        raise ValueError(f"min_p (kappa) must be in [0, 1] (0 = no filter), got {min_p}")
    if logits.dim() < 1 or logits.shape[:-1] != token_ids.shape:
        raise ValueError(
            f"logits must be [..., V] with [...] equal to token_ids' shape; got logits {tuple(logits.shape)} "
            f"and token_ids {tuple(token_ids.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating point tensor, got {logits.dtype}")
    if isinstance(temperature, torch.Tensor):
        if temperature.device.type == "cpu":
            if bool((temperature <= 0).any()):
                raise ValueError("temperature must be > 0")
        else:  # checked on the device: reading the flag back would be a host synchronisation
            torch._assert_async((temperature > 0).all(), "temperature must be > 0")
    elif not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


@torch.no_grad()
def min_p_proxy_stats(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    min_p: float = 0.02,
    *,
    mode: str = "minp",
    soft: bool = False,
    temperature: float | torch.Tensor = 1.0,
) -> ProxyStats:
    """Proxy log-prob of ``token_ids`` and its threshold margin, in one streaming pass (docs/method.md §2).

    ``temperature`` is a float or a tensor broadcastable to ``token_ids`` (per-token
    temperatures, as verl's remove-padding path carries them). Computed in float32
    whatever the input dtype; no gradient.
    """
    _validate(logits, token_ids, min_p, mode, temperature)
    if soft and mode == "fixed":
        raise ValueError("soft=True is not supported with mode='fixed' (the reference always fills -1e4 there)")
    if float(min_p) == 0.0:
        return _unfiltered_stats(logits, token_ids, temperature)
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    if flat_logits.stride() != (vocab, 1):
        flat_logits = flat_logits.contiguous()
    flat_ids = token_ids.reshape(-1).to(device=logits.device, dtype=torch.long)
    n_rows = flat_logits.shape[0]
    if isinstance(temperature, torch.Tensor):
        flat_temp = temperature.to(device=logits.device, dtype=torch.float32).expand(token_ids.shape).reshape(-1)
    else:
        flat_temp = None
    log_kappa = math.log(float(min_p))

    proxy = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    margin = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    rows_fn, chunk = _rows_impl(logits.device, vocab)
    for start in range(0, n_rows, chunk):
        stop = min(start + chunk, n_rows)
        rows = flat_logits[start:stop]
        if flat_temp is not None:
            inv_t = 1.0 / flat_temp[start:stop]
        else:
            inv_t = torch.full((stop - start,), 1.0 / temperature, device=rows.device)
        token_logit = rows.gather(-1, flat_ids[start:stop, None]).squeeze(-1).float()
        p, m = rows_fn(rows, token_logit, inv_t, log_kappa, mode, soft)
        proxy[start:stop] = p
        margin[start:stop] = m
    shape = token_ids.shape
    return ProxyStats(proxy.reshape(shape), margin.reshape(shape))


def _rows_impl(device: torch.device, vocab: int):
    """The per-chunk function and the rows per chunk: candidate blocks on CPU, the fixed-shape
    (sync-free) formulation on an accelerator."""
    if device.type == "cpu":
        return _proxy_rows, max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    return _fixed_shape_rows(), max(1, _DEVICE_CHUNK_BYTES // (4 * max(vocab, 1)))


def _unfiltered_stats(logits: torch.Tensor, token_ids: torch.Tensor, temperature) -> ProxyStats:
    """``min_p=0``: the log-prob of ``token_ids`` under ``log_softmax(logits / T)``, in float32, by
    chunks of rows; nothing is removed, so every margin is ``-inf``."""
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_ids = token_ids.reshape(-1, 1).to(device=logits.device, dtype=torch.long)
    temp = torch.as_tensor(temperature, dtype=torch.float32, device=logits.device)
    flat_temp = temp.expand(token_ids.shape).reshape(-1, 1)
    proxy = torch.empty(flat_ids.shape[0], dtype=torch.float32, device=logits.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(vocab, 1))
    for start in range(0, flat_ids.shape[0], chunk):
        stop = min(start + chunk, flat_ids.shape[0])
        scaled = flat_logits[start:stop].float() / flat_temp[start:stop]
        proxy[start:stop] = (scaled.gather(-1, flat_ids[start:stop]) - scaled.logsumexp(-1, keepdim=True)).squeeze(-1)
    proxy = proxy.reshape(token_ids.shape)
    return ProxyStats(proxy, torch.full_like(proxy, -math.inf))


def _proxy_rows(rows, token_logit, inv_t, log_kappa: float, mode: str, soft: bool):
    """Proxy log-prob and threshold margin for a ``[R, V]`` block of rows (row stride ``V``).

    Reductions and comparisons read the logits in their own dtype (max and min are exact in
    it); only block maxima, the gathered candidate blocks and per-row values become float32.
    """
    n, vocab = rows.shape
    n_blocks = vocab // BLOCK
    main = n_blocks * BLOCK
    # [R, V // BLOCK, BLOCK] view of the first `main` columns; the last V % BLOCK columns form a tail.
    blocks = torch.as_strided(rows, (n, n_blocks, BLOCK), (vocab, BLOCK, 1), rows.storage_offset())
    tail = rows[:, main:]
    if soft:
        block_min, block_max = (t.float() for t in torch.aminmax(blocks, dim=-1))
        row_min = block_min.amin(-1) if n_blocks else torch.full((n,), math.inf, device=rows.device)
        if tail.shape[1]:
            row_min = torch.minimum(row_min, tail.amin(-1).float())
    else:
        block_max = blocks.amax(-1).float()
    row_max = block_max.amax(-1) if n_blocks else torch.full((n,), -math.inf, device=rows.device)
    if tail.shape[1]:
        row_max = torch.maximum(row_max, tail.amax(-1).float())
    if mode == "minp":
        threshold = row_max + log_kappa
    else:
        threshold = torch.logsumexp(rows.float(), dim=-1) + log_kappa

    # Kept tokens live in blocks whose max reaches the threshold: at most one block per kept token.
    cand_rows, cand_blocks = (block_max >= threshold[:, None]).nonzero(as_tuple=True)
    if cand_rows.numel() * _DENSE_FRACTION >= block_max.numel():
        # Flat rows (a random or small model): most blocks are candidates, and gathering them costs
        # more than one masked pass over the rows.
        kept_sum, n_kept = _dense_kept_sums(rows, inv_t, threshold, row_max)
        return _finish(vocab, token_logit, inv_t, threshold, row_max, row_min if soft else None, kept_sum, n_kept)
    cand = blocks[cand_rows, cand_blocks].float()  # a fresh [C, BLOCK] tensor: updated in place below
    keep = cand >= threshold[cand_rows, None]
    terms = cand.sub_(row_max[cand_rows, None]).mul_(inv_t[cand_rows, None]).exp_().masked_fill_(~keep, 0.0)
    kept_sum = torch.zeros_like(row_max).index_add_(0, cand_rows, terms.sum(-1))
    n_kept = torch.zeros_like(row_max).index_add_(0, cand_rows, keep.sum(-1, dtype=torch.float32))
    if tail.shape[1]:
        tail = tail.float()
        tail_keep = tail >= threshold[:, None]
        kept_sum += (torch.exp((tail - row_max[:, None]) * inv_t[:, None]) * tail_keep).sum(-1)
        n_kept += tail_keep.sum(-1, dtype=torch.float32)

    return _finish(vocab, token_logit, inv_t, threshold, row_max, row_min if soft else None, kept_sum, n_kept)


def _dense_kept_sums(rows, inv_t, threshold, row_max):
    """``sum_v [z_v >= threshold] exp((z_v - max) / T)`` and the number of kept tokens of each row,
    over every column, by groups of rows of :data:`_DENSE_ELEMENTS` (cache-sized temporaries).
    The mask is a float: ``threshold - z`` is positive exactly where ``z < threshold``, so
    ``threshold(., 0, -1)`` then ``clamp(max=0)`` gives -1 where the token is kept and 0 where it
    is removed (CPU comparisons into bool tensors cost more than the exponentials here)."""
    n, vocab = rows.shape
    kept_sum = torch.empty_like(row_max)
    n_kept = torch.empty_like(row_max)
    step = max(1, _DENSE_ELEMENTS // max(vocab, 1))
    for start in range(0, n, step):
        part = slice(start, start + step)
        z = rows[part].float()
        minus_kept = torch.nn.functional.threshold_(threshold[part, None] - z, 0.0, -1.0).clamp_(max=0.0)
        terms = (z - row_max[part, None]).mul_(inv_t[part, None]).exp_().mul_(minus_kept)
        kept_sum[part] = terms.sum(-1).neg_()
        n_kept[part] = minus_kept.sum(-1).neg_()
    return kept_sum, n_kept


def _finish(vocab, token_logit, inv_t, threshold, row_max, row_min, kept_sum, n_kept):
    """Proxy log-prob and margin from the per-row statistics (``row_min`` given: soft fill)."""
    fill = torch.full_like(row_max, HARD_FILL_LOGIT) if row_min is None else row_min
    # Removed tokens keep a (usually negligible) share exp(f / T) each, as in the reference;
    # logaddexp keeps a row whose tokens were all removed (fixed mode) finite. Everything is
    # relative to the row max, as in log_softmax, so large logits lose no precision.
    log_norm = torch.logaddexp(torch.log(kept_sum), torch.log(vocab - n_kept) + (fill - row_max) * inv_t)
    filtered_token_logit = torch.where(token_logit >= threshold, token_logit, fill)
    return (filtered_token_logit - row_max) * inv_t - log_norm, threshold - token_logit


def _proxy_rows_fixed_shape(rows, token_logit, inv_t, log_kappa: float, mode: str, soft: bool):
    """:func:`_proxy_rows` without data-dependent shapes (no ``.nonzero()``, no host sync): a
    masked exponential sum over every column instead of the candidate blocks. Same thresholds
    and comparisons (max and min are exact in the logits' dtype), float32 sums."""
    vocab = rows.shape[-1]
    z = rows.float()
    row_max = z.amax(-1)
    row_min = z.amin(-1) if soft else None
    if mode == "minp":
        threshold = row_max + log_kappa
    else:
        threshold = torch.logsumexp(z, dim=-1) + log_kappa
    keep = z >= threshold[:, None]
    terms = torch.where(keep, torch.exp((z - row_max[:, None]) * inv_t[:, None]), 0.0)
    kept_sum = terms.sum(-1)
    n_kept = keep.sum(-1, dtype=torch.float32)
    return _finish(vocab, token_logit, inv_t, threshold, row_max, row_min, kept_sum, n_kept)


@cache
def _fixed_shape_rows():
    """The accelerator path: :func:`_proxy_rows_fixed_shape`, compiled into fused passes when
    Triton is available (the eager function otherwise: also sync-free, more memory traffic)."""
    from torch.utils._triton import has_triton

    if has_triton():
        return torch.compile(_proxy_rows_fixed_shape, dynamic=None)
    return _proxy_rows_fixed_shape


def min_p_proxy_log_prob(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    min_p: float = 0.02,
    *,
    mode: str = "minp",
    soft: bool = False,
    temperature: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """Log-prob of ``token_ids`` under the min-p proxy of ``logits`` (docs/method.md §2), float32.

    ``logits`` ``[..., V]`` are raw (not temperature-scaled); ``token_ids`` ``[...]``.
    ``mode="minp"`` keeps ``p_v >= min_p * p_max``; ``mode="fixed"`` keeps ``p_v >= min_p``.
    ``min_p=0`` is no filter (the proxy is the distribution itself); ``soft`` exists in ``minp``
    mode only. Removed tokens' logits become -1e4 (or the row minimum with ``soft=True``); the result
    is ``log_softmax(filtered / temperature)`` read at ``token_ids``. A sampled token that was
    removed gets about ``-1e4 / temperature``: it is noise and never regularised (docs/method.md §3).
    """
    return min_p_proxy_stats(logits, token_ids, min_p, mode=mode, soft=soft, temperature=temperature).proxy_log_prob
