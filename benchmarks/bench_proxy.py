"""min_p_proxy_log_prob against the reference's way of computing the proxy (docs/method.md §2).

Both run in one invocation on the same logits. Each implementation runs in a fresh spawned
process: its first call gives the peak extra memory (``ru_maxrss`` after the logits exist and
after the call; on CUDA the allocator's peak), then the best of ``--repeats`` warm calls the
time. Prints times, the speed-up, the peak extra memory as a fraction of the logits, and (on
CUDA) the achieved bandwidth.

    python benchmarks/bench_proxy.py                      # 4096 x 32768 fp32 on CPU
    python benchmarks/bench_proxy.py --device cuda --rows 16384 --vocab 151936

Logits: ``N(0, 1) * scale`` with ``--scale 4`` by default, which keeps ~30 tokens a row under
min-p 0.02, about what an LLM's next-token distribution keeps; ``--scale 1`` is the flat worst
case (~40% of the vocabulary kept).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _measure(name: str, rows: int, vocab: int, scale: float, device: str, repeats: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.empty(rows, vocab, device=device).normal_(generator=gen).mul_(scale)  # no temporaries
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
    queue.put({"time": min(times), "peak_extra": max(peak_extra, 0), "kept": kept})


def measure(name: str, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_measure, args=(name, args.rows, args.vocab, args.scale, args.device, args.repeats, args.threads, queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def check_agreement(args) -> float:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(256, args.vocab, generator=gen) * args.scale
    token_ids = torch.randint(0, args.vocab, (256,), generator=gen)
    diff = (min_p_proxy_log_prob(logits, token_ids) - reference_proxy(logits, token_ids)).abs()
    return float((diff / reference_proxy(logits, token_ids).abs().clamp(min=1.0)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    logits_bytes = args.rows * args.vocab * 4
    print(
        f"logits {args.rows} x {args.vocab} fp32 ({logits_bytes / 2**20:.0f} MiB) on {args.device}, scale {args.scale}"
    )
    print(f"max relative difference to the reference: {check_agreement(args):.2e}")
    results = {name: measure(name, args) for name in IMPLEMENTATIONS}
    for name, r in results.items():
        line = f"{name:>11}: {r['time'] * 1e3:9.1f} ms   peak extra {r['peak_extra'] / 2**20:8.1f} MiB"
        line += f" ({r['peak_extra'] / logits_bytes:.3f}x logits)"
        if args.device == "cuda":
            line += f"   {2 * logits_bytes / r['time'] / 1e9:7.1f} GB/s (two reads of the logits)"
        print(line)
    ref, ours = results["reference"], results["verl_lpreg"]
    print(f"kept tokens per row (mean): {ours['kept']:.1f}")
    memory_ratio = ours["peak_extra"] / logits_bytes
    print(f"speed-up: {ref['time'] / ours['time']:.2f}x   peak extra memory ratio: {memory_ratio:.3f}")


if __name__ == "__main__":
    main()
