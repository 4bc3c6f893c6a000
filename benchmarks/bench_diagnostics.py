"""Time ``compute_step_diagnostics`` on a realistic (paper-sized) batch.

    python benchmarks/bench_diagnostics.py                     # 2048 x 8192, all inputs
    python benchmarks/bench_diagnostics.py --batch 256 --length 4096 --repeat 5

The paper's step is 256 prompts x 8 responses = 2048 responses of up to 8192 tokens
(docs/method.md §4), i.e. a padded ``[2048, 8192]`` batch (16.8M positions). The synthetic batch:
response lengths uniform in [256, R] (about half the positions valid, like a real padded
batch), token ids uniform over a 151,643-token vocabulary (Qwen2.5's size) with about 1%
spark/noise ids sprinkled in, log-probs with about 15% of the tokens below p = 0.1,
advantages per response in {-1, 0, +1}. Prints the median and min wall time in ms over
``--repeat`` runs (after one warm-up), the process CPU time (all threads), the torch
thread count and the machine's load average (a loaded machine inflates the wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from verl_lpreg.diagnostics import DiagnosticsConfig, WordTokenMap, compute_step_diagnostics  # noqa: E402

VOCAB = 151_643


def make_batch(batch: int, length: int, *, seed: int = 0, optional: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(256, length), length + 1, (batch, 1), generator=g)
    mask = (torch.arange(length).unsqueeze(0) < lengths).to(torch.int64)
    responses = torch.randint(0, VOCAB, (batch, length), generator=g)
    sprinkle = torch.rand(batch, length, generator=g) < 0.01
    responses[sprinkle] = torch.randint(0, 20, (int(sprinkle.sum()),), generator=g)  # ids 0..19 = words
    # 85% confident tokens (p in ~[0.5, 1]), 15% low-probability ones (p in ~[1e-4, 0.1])
    u = torch.rand(batch, length, generator=g)
    confident = -0.7 * torch.rand(batch, length, generator=g)
    lowp = torch.log(torch.rand(batch, length, generator=g) * 0.1 + 1e-4)
    old_log_probs = torch.where(u < 0.85, confident, lowp)
    advantages = (torch.randint(-1, 2, (batch, 1), generator=g).float()).expand(batch, length).contiguous()
    out = {
        "responses": responses,
        "response_mask": mask,
        "old_log_probs": old_log_probs,
        "advantages": advantages,
    }
    if optional:
        out["entropy"] = torch.rand(batch, length, generator=g) * 2.0
        out["log_minp_threshold"] = old_log_probs.clamp(max=0.0) * 0 + torch.log(torch.tensor(0.02)) - 0.1
        proxy = old_log_probs + 0.05
        proxy[torch.rand(batch, length, generator=g) < 0.03] = -1.0e4
        out["proxy_log_probs"] = proxy
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2048, help="responses per step (default 2048 = 256 x 8)")
    ap.add_argument("--length", type=int, default=8192, help="padded response length (default 8192)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-optional", action="store_true", help="without entropy / proxy / min-p inputs")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    config = DiagnosticsConfig()
    spark = WordTokenMap.from_ids({w: [2 * i, 2 * i + 1] for i, w in enumerate(config.spark_words)})
    noise = WordTokenMap.from_ids({w: [10 + 2 * i, 11 + 2 * i] for i, w in enumerate(config.noise_words)})
    data = {k: v.to(args.device) for k, v in make_batch(args.batch, args.length, optional=not args.no_optional).items()}

    def once() -> tuple[float, float]:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = compute_step_diagnostics(**data, spark_map=spark, noise_map=noise, config=config)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        once.metrics = metrics
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3

    once()  # warm-up
    runs = [once() for _ in range(args.repeat)]
    times = [w for w, _ in runs]
    cpu = [c for _, c in runs]
    n_valid = int(data["response_mask"].sum())
    print(
        f"compute_step_diagnostics [{args.batch} x {args.length}] ({n_valid / 1e6:.1f}M valid tokens, "
        f"{len(once.metrics)} metrics, device={args.device}, torch threads={torch.get_num_threads()}): "
        f"median {statistics.median(times):.1f} ms, min {min(times):.1f} ms wall over {args.repeat} runs; "
        f"process CPU time median {statistics.median(cpu):.1f} ms (all threads; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
