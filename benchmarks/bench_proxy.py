"""min_p_proxy_log_prob against the reference's way of computing the proxy (docs/method.md §2).

Both run in one invocation on the same logits. Each implementation runs in a fresh spawned
process: its first call gives the peak extra memory (``ru_maxrss`` after the logits exist and
after the call; on CUDA the allocator's peak), then the best of ``--repeats`` warm calls the
time. Prints times, the speed-up, the peak extra memory as a fraction of the logits, and (on
CUDA) the achieved bandwidth.

    python benchmarks/bench_proxy.py                      # 4096 x 32768 fp32 on CPU
    python benchmarks/bench_proxy.py --device cuda        # 30720 x 151936 bf16: one micro-batch of the paper's runs

On CUDA it also prints the achieved bandwidth (two reads of the logits) as a fraction of the
GPU's peak memory bandwidth (:func:`peak_memory_bandwidth`; ``--peak-gbps`` overrides it) and
counts the host synchronisations inside one call (``torch.cuda.set_sync_debug_mode``).

Logits: ``N(0, 1) * scale`` with ``--scale 4`` by default, which keeps ~30 tokens a row under
min-p 0.02, about what an LLM's next-token distribution keeps; ``--scale 1`` is the flat worst
case (~40% of the vocabulary kept).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
import warnings

import torch

from verl_lpreg.proxy import HARD_FILL_LOGIT, min_p_proxy_log_prob

REFERENCE_CHUNK_ROWS = 4096


def reference_proxy(logits: torch.Tensor, token_ids: torch.Tensor, min_p: float = 0.02) -> torch.Tensor:
    """The reference's computation: per 4096 rows, clone, softmax, mask, fill, log_softmax."""
    out = []
    for start in range(0, logits.shape[0], REFERENCE_CHUNK_ROWS):
        z = logits[start : start + REFERENCE_CHUNK_ROWS].clone()
        p = torch.softmax(z, dim=-1)
        keep = p >= min_p * p.max(dim=-1, keepdim=True).values
        z = z.masked_fill(~keep, HARD_FILL_LOGIT)
        log_p = torch.log_softmax(z, dim=-1)
        out.append(log_p.gather(-1, token_ids[start : start + REFERENCE_CHUNK_ROWS, None]).squeeze(-1))
    return torch.cat(out)


IMPLEMENTATIONS = {"reference": reference_proxy, "verl_lpreg": min_p_proxy_log_prob}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Peak memory bandwidth (GB/s) of the usual training GPUs, by a substring of the device name.
PEAK_GBPS = {
    "H200": 4800,
    "H100 NVL": 3900,
    "H100 PCIe": 2000,
    "H100": 3350,
    "H800": 3350,
    "H20": 4000,
    "A100-SXM4-80GB": 2039,
    "A100 80GB PCIe": 1935,
    "A100": 1555,
    "A800": 2039,
    "L40S": 864,
    "L4": 300,
}


def peak_memory_bandwidth(device: int = 0) -> tuple[float, str]:
    """The GPU's peak memory bandwidth in GB/s and where the number comes from (its data sheet by
    name, else memory clock x bus width from the device properties, double data rate)."""
    props = torch.cuda.get_device_properties(device)
    for key, gbps in PEAK_GBPS.items():
        if key in props.name:
            return float(gbps), f"data sheet ({key})"
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9, "memory clock x bus width"
    raise RuntimeError(f"peak memory bandwidth of {props.name!r} unknown: pass --peak-gbps")


def count_host_syncs(fn, *args) -> int:
    """Synchronising CUDA calls made by ``fn(*args)`` (``torch.cuda.set_sync_debug_mode`` warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _measure(name: str, rows, vocab, scale, device, repeats, threads, dtype: str, queue) -> None:
    torch.set_num_threads(threads)
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.empty(rows, vocab, device=device, dtype=DTYPES[dtype]).normal_(generator=gen).mul_(scale)
    token_ids = torch.randint(0, vocab, (rows,), generator=gen, device=device)
    fn = IMPLEMENTATIONS[name]
    _sync(device)
    # Peak memory of the first full call, then the best of `repeats` warm calls.
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn(logits, token_ids)
    _sync(device)
    if device == "cuda":
        peak_extra = torch.cuda.max_memory_allocated() - base
    else:
        peak_extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(logits, token_ids)
        _sync(device)
        times.append(time.perf_counter() - start)
    kept = float(
        (logits[:256] >= logits[:256].amax(-1, keepdim=True) + torch.log(torch.tensor(0.02))).sum(-1).float().mean()
    )
    syncs = count_host_syncs(fn, logits, token_ids) if device == "cuda" else None
    queue.put({"time": min(times), "peak_extra": max(peak_extra, 0), "kept": kept, "syncs": syncs})


def measure(name: str, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_measure,
        args=(name, args.rows, args.vocab, args.scale, args.device, args.repeats, args.threads, args.dtype, queue),
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def check_agreement(args) -> float:
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(256, args.vocab, generator=gen) * args.scale).to(DTYPES[args.dtype])
    token_ids = torch.randint(0, args.vocab, (256,), generator=gen)
    want = reference_proxy(logits.float(), token_ids)  # ours computes in float32 whatever the dtype
    diff = (min_p_proxy_log_prob(logits, token_ids) - want).abs()
    return float((diff / want.abs().clamp(min=1.0)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rows", type=int, help="default 4096 on CPU, 30720 on CUDA")
    parser.add_argument("--vocab", type=int, help="default 32768 on CPU, 151936 on CUDA")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="default fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--peak-gbps", type=float, help="the GPU's peak memory bandwidth (default: by its name)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    on_cuda = args.device == "cuda"
    args.rows = args.rows or (30720 if on_cuda else 4096)
    args.vocab = args.vocab or (151936 if on_cuda else 32768)
    args.dtype = args.dtype or ("bf16" if on_cuda else "fp32")

    logits_bytes = args.rows * args.vocab * DTYPES[args.dtype].itemsize
    print(
        f"logits {args.rows} x {args.vocab} {args.dtype} ({logits_bytes / 2**20:.0f} MiB) on {args.device}, "
        f"scale {args.scale}"
    )
    if on_cuda:
        peak, source = (args.peak_gbps, "--peak-gbps") if args.peak_gbps else peak_memory_bandwidth()
        print(f"GPU {torch.cuda.get_device_name()}: peak memory bandwidth {peak:.0f} GB/s ({source})")
    print(f"max relative difference to the reference: {check_agreement(args):.2e}")
    results = {name: measure(name, args) for name in IMPLEMENTATIONS}
    for name, r in results.items():
        line = f"{name:>11}: {r['time'] * 1e3:9.1f} ms   peak extra {r['peak_extra'] / 2**20:8.1f} MiB"
        line += f" ({r['peak_extra'] / logits_bytes:.3f}x logits)"
        if on_cuda:
            gbps = 2 * logits_bytes / r["time"] / 1e9
            line += f"   {gbps:7.1f} GB/s (two reads of the logits, {100 * gbps / peak:.0f}% of peak)"
            line += f"   host syncs per call: {r['syncs']}"
        print(line)
    ref, ours = results["reference"], results["verl_lpreg"]
    print(f"kept tokens per row (mean): {ours['kept']:.1f}")
    memory_ratio = ours["peak_extra"] / logits_bytes
    print(f"speed-up: {ref['time'] / ours['time']:.2f}x   peak extra memory ratio: {memory_ratio:.3f}")


if __name__ == "__main__":
    main()
