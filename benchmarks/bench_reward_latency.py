"""Latency of a normal reward call while pathological answers are in flight (verl_lpreg.reward).

``THREADS`` caller threads share one process's pool (``--workers`` base children, growing by up
to ``MAX_EXTRA_WORKERS``). In each round ``k`` threads score a pathological answer
(``9^{9^{9^{9}}}``, ``1000000!``, a 1 MB boxed string; each runs to the timeout) and the other
threads score normal answers (a warm-pool call takes a few ms) back to back for the duration of
the round. Prints, per ``k``, the normal calls' median and maximum latency and the maximum as a
ratio of the timeout: a time bound on the call means the maximum stays below the timeout plus a
small overhead for every ``k`` (before the pool could grow, a normal answer waited up to
``k / workers`` timeouts behind the pathological ones). The first round's start-up of the
children is excluded (the pool is warmed first).

    python benchmarks/bench_reward_latency.py [--workers 2] [--threads 8] [--timeout 5]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

from verl_lpreg import reward

PATHOLOGICAL = ("\\boxed{9^{9^{9^{9}}}}", "\\boxed{1000000!}", "\\boxed{" + "9" * 1_000_000 + "}")


def round_(k: int, threads: int, timeout: float) -> tuple[list[float], list[str]]:
    stop = time.monotonic() + timeout + 1.0
    latencies, reasons, lock = [], [], threading.Lock()

    def bad(i: int) -> None:
        out = reward.compute_score("x", PATHOLOGICAL[i % 3], "7", timeout_s=timeout)
        with lock:
            reasons.append(out["reason"])

    def normal(i: int) -> None:
        j = 0
        while time.monotonic() < stop:
            j += 1
            t0 = time.monotonic()
            text = f"\\boxed{{\\frac{{{2 * (i + j)}}}{{4}}}}"
            out = reward.compute_score("x", text, str((i + j) / 2), timeout_s=timeout)
            with lock:
                latencies.append(time.monotonic() - t0)
                reasons.append(out["reason"])

    ts = [threading.Thread(target=bad if i < k else normal, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return latencies, reasons


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args()
    pool = reward._get_pool(args.workers)
    warm = [
        threading.Thread(target=reward.compute_score, args=("x", "\\boxed{1}", "1.0")) for _ in range(pool.max_size)
    ]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    print(
        f"pool: {args.workers} base workers, at most {pool.max_size}; {args.threads} threads; "
        f"timeout {args.timeout:g} s"
    )
    print(f"{'pathological':>12} {'normal calls':>12} {'median s':>9} {'max s':>7} {'max/timeout':>11} {'workers':>7}")
    for k in range(0, args.threads):
        lat, reasons = round_(k, args.threads, args.timeout)
        wrong = sum(r not in ("correct", "timeout") for r in reasons)
        note = f"  ({wrong} unexpected reasons)" if wrong else ""
        print(
            f"{k:>12} {len(lat):>12} {statistics.median(lat):>9.3f} {max(lat):>7.3f} "
            f"{max(lat) / args.timeout:>11.2f} {pool._n_workers:>7}{note}"
        )
    reward.shutdown()


if __name__ == "__main__":
    main()
