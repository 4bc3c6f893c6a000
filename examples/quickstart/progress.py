"""Follow verl's file-logger output and print one line per step; keep and summarise a run's history.

python3 progress.py follow  --metrics SEG.jsonl --pid PID [--parent PID] [--steps N]   # until PID exits
python3 progress.py begin   --history M.jsonl --segment SEG.jsonl [--resumed-from N]
python3 progress.py fold    --history M.jsonl --segment SEG.jsonl
python3 progress.py summary --metrics M.jsonl [--steps N] [--ckpt DIR] [--wall S] [--startup S]

``begin`` appends a segment left by a killed run to the history, then starts a fresh history, or
(``--resumed-from N``) appends the marker ``{"resumed_from": N}``; ``fold`` appends the segment's
complete lines to the history and removes it. Files are read with ``verl_lpreg.plot.read_history``
(the one reader: a resumed run reads as one run). ``follow --parent``: if that process (the
calling script) disappears, e.g. SIGKILLed, the training process group ``--pid`` is stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time

from verl_lpreg.names import ENTROPY_METRIC as ENTROPY
from verl_lpreg.names import GRAD_NORM_METRIC as GRAD_NORM
from verl_lpreg.names import REG_FRACTION_METRIC as REG_FRACTION
from verl_lpreg.names import REWARD_METRIC as REWARD
from verl_lpreg.names import STEP_TIME_METRIC as STEP_TIME
from verl_lpreg.names import VALIDATION_PREFIX
from verl_lpreg.plot import RESUME_MARKER, PlotError, read_history


def read_records(path: str) -> list[tuple[int, dict]]:
    """(step, data) per step of a file-logger file (``[]`` while it does not exist yet)."""
    if not os.path.exists(path):
        return []
    return read_history(path)


def val_acc(data: dict) -> float | None:
    vals = [v for k, v in data.items() if k.startswith(VALIDATION_PREFIX) and "/acc/" in k]
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
        if args.parent and os.getppid() != args.parent:  # the script is gone: take the training with it
            _stop_group(args.pid)
            return 1
        try:
            recs = read_records(args.metrics)
        except PlotError as e:
            print(f"[train] cannot read {args.metrics}: {e}", flush=True)
            recs = []
        if recs and not seen and args.mark:
            with open(args.mark, "w") as f:
                f.write(str(time.time()))
        for step, data in recs[seen:]:
            print("[train] " + step_line(step, data, args.steps), flush=True)
        seen = max(seen, len(recs))
        if not alive:
            return 0
        time.sleep(0.5)


def _stop_group(pgid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except OSError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def fold(args) -> int:
    """Append the segment's complete lines to the history; remove the segment."""
    if not os.path.exists(args.segment):
        return 0
    with open(args.segment, "rb") as f:
        data = f.read()
    data = data[: data.rfind(b"\n") + 1]  # a line cut by a kill is dropped
    if data:
        with open(args.history, "ab") as f:
            f.write(data)
    os.unlink(args.segment)
    return 0


def begin(args) -> int:
    fold(args)
    if args.resumed_from is None:
        if os.path.exists(args.history):
            os.unlink(args.history)
        return 0
    with open(args.history, "ab") as f:
        f.write(json.dumps({RESUME_MARKER: args.resumed_from}).encode() + b"\n")
    return 0


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
    train = [(s, d) for s, d in recs if REWARD in d]
    vals = [(s, val_acc(d)) for s, d in recs if val_acc(d) is not None]
    print("=" * 72)
    print(f"[summary] {len(train)} training steps logged to {args.metrics} (the whole run, resumes included)")
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
    p.add_argument("mode", choices=["follow", "begin", "fold", "summary"])
    p.add_argument("--metrics", help="follow: the segment file; summary: the history")
    p.add_argument("--history", help="begin/fold: the run's metrics history")
    p.add_argument("--segment", help="begin/fold: what the current training process logs")
    p.add_argument("--resumed-from", type=int, help="begin: the checkpoint step the run resumes from")
    p.add_argument("--pid", type=int)
    p.add_argument("--parent", type=int, help="follow: stop the training when this process is gone")
    p.add_argument("--steps", type=int)
    p.add_argument("--ckpt")
    p.add_argument("--wall", type=float)
    p.add_argument("--startup", type=float)
    p.add_argument("--mark", help="follow: write the time of the first metrics record to this file")
    args = p.parse_args(argv)
    try:
        return {"follow": follow, "begin": begin, "fold": fold, "summary": summary}[args.mode](args)
    except KeyboardInterrupt:
        return 130
    except PlotError as e:
        print(f"[error] {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
