"""Follow verl's file-logger output (metrics.jsonl) and print one line per step; summarise a run.

python3 progress.py follow  --metrics M.jsonl --pid PID [--steps N]   # until PID exits
python3 progress.py summary --metrics M.jsonl [--steps N] [--ckpt DIR] [--wall S] [--startup S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

REWARD = "critic/score/mean"
ENTROPY = "actor/entropy"
REG_FRACTION = "actor/lp_reg/reg_fraction"  # verl prefixes the loss's metrics with actor/
GRAD_NORM = "actor/grad_norm"
STEP_TIME = "timing_s/step"


def read_records(path: str) -> list[dict]:
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
    return out


def val_acc(data: dict) -> float | None:
    vals = [v for k, v in data.items() if k.startswith("val-core/") and "/acc/" in k]
    return sum(vals) / len(vals) if vals else None


def _fmt(x, spec=".3f"):
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def step_line(step: int, data: dict, total: int | None) -> str:
    parts = [f"step {step:>3}" + (f"/{total}" if total else "")]
    if REWARD in data:
        parts.append(f"reward {_fmt(data.get(REWARD))}")
        parts.append(f"entropy {_fmt(data.get(ENTROPY))}")
        parts.append(f"reg_frac {_fmt(data.get(REG_FRACTION), '.4f')}")
        parts.append(f"grad_norm {_fmt(data.get(GRAD_NORM))}")
        parts.append(f"{_fmt(data.get(STEP_TIME), '.1f')}s")
    acc = val_acc(data)
    if acc is not None:
        parts.append(f"val_acc {acc:.3f}")
    return " | ".join(parts)


def follow(args) -> int:
    seen = 0
    while True:
        alive = _alive(args.pid)
        recs = read_records(args.metrics)
        if recs and not seen and args.mark:
            with open(args.mark, "w") as f:
                f.write(str(time.time()))
        for r in recs[seen:]:
            print("[train] " + step_line(r["step"], r["data"], args.steps), flush=True)
        seen = max(seen, len(recs))
        if not alive:
            return 0
        time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by the shell) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summary(args) -> int:
    recs = read_records(args.metrics)
    train = [(r["step"], r["data"]) for r in recs if REWARD in r["data"]]
    vals = [(r["step"], val_acc(r["data"])) for r in recs if val_acc(r["data"]) is not None]
    print("=" * 72)
    print(f"[summary] {len(train)} training steps logged to {args.metrics}")
    if train:
        k = max(1, min(3, len(train) // 2))
        first, last = train[:k], train[-k:]
        print(
            f"[summary] reward (mean score) steps {first[0][0]}-{first[-1][0]}: "
            f"{_fmt(_mean([d.get(REWARD) for _, d in first]))}  ->  steps {last[0][0]}-{last[-1][0]}: "
            f"{_fmt(_mean([d.get(REWARD) for _, d in last]))}"
        )
        print(
            f"[summary] entropy: {_fmt(_mean([d.get(ENTROPY) for _, d in first]))}  ->  "
            f"{_fmt(_mean([d.get(ENTROPY) for _, d in last]))}"
        )
        regs = [d.get(REG_FRACTION) for _, d in train]
        if any(r is not None for r in regs):
            print(
                f"[summary] Lp-Reg regularised fraction of tokens: mean {_fmt(_mean(regs), '.4f')}, "
                f"max {_fmt(max(r for r in regs if r is not None), '.4f')}"
            )
        else:
            print("[summary] Lp-Reg regularised fraction: not logged (lp_reg loss not active?)")
        print("[summary] reward curve: " + " ".join(f"{d.get(REWARD, float('nan')):.2f}" for _, d in train))
        times = [d.get(STEP_TIME) for _, d in train if d.get(STEP_TIME) is not None]
        if times:
            print(f"[summary] time per step: mean {sum(times) / len(times):.1f}s (validation not included)")
    if vals:
        print("[summary] validation accuracy (greedy): " + ", ".join(f"step {s}: {a:.3f}" for s, a in vals))
    if args.ckpt:
        latest = os.path.join(args.ckpt, "latest_checkpointed_iteration.txt")
        if os.path.exists(latest):
            print(f"[summary] checkpoint: {args.ckpt}/global_step_{open(latest).read().strip()}")
    if args.wall is not None:
        extra = f" (start-up before the first metrics line: {args.startup:.0f}s)" if args.startup else ""
        print(f"[summary] training wall time {args.wall:.0f}s{extra}")
    print("=" * 72)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["follow", "summary"])
    p.add_argument("--metrics", required=True)
    p.add_argument("--pid", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--ckpt")
    p.add_argument("--wall", type=float)
    p.add_argument("--startup", type=float)
    p.add_argument("--mark", help="follow: write the time of the first metrics record to this file")
    args = p.parse_args(argv)
    return follow(args) if args.mode == "follow" else summary(args)


if __name__ == "__main__":
    sys.exit(main())
