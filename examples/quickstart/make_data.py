"""Synthetic arithmetic task in verl's parquet layout (answers in \\boxed{}).

Rows: data_source, prompt (chat list), ability, reward_model {style, ground_truth},
extra_info {split, index, a, b, op}. Also writes sft.jsonl (prompt, response) for the warm-up.

    python3 examples/quickstart/make_data.py --out_dir DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random

DATA_SOURCE = "synthetic_arith"
INSTRUCTION = "Put the final answer in \\boxed{}."


def problem(a: int, b: int, op: str) -> tuple[str, int]:
    val = {"+": a + b, "-": a - b}[op]
    return f"What is {a} {op} {b}? {INSTRUCTION}", val


def solution(a: int, b: int, op: str, val: int) -> str:
    return f"{a} {op} {b} = {val}. The answer is \\boxed{{{val}}}."


def all_problems(max_operand: int) -> list[tuple[int, int, str]]:
    return [(a, b, op) for op in ("+", "-") for a in range(max_operand + 1) for b in range(max_operand + 1)]


def to_row(a, b, op, split, index):
    q, val = problem(a, b, op)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "user", "content": q}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(val)},
        "extra_info": {"split": split, "index": index, "a": a, "b": b, "op": op},
    }


def main(argv=None):
    import pandas as pd

    p = argparse.ArgumentParser()
    p.add_argument("--out_dir", required=True)
    p.add_argument("--max_operand", type=int, default=12)
    p.add_argument("--n_val", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    probs = all_problems(args.max_operand)
    rng.shuffle(probs)
    val, train = probs[: args.n_val], probs[args.n_val :]
    os.makedirs(args.out_dir, exist_ok=True)
    pd.DataFrame([to_row(*t, "train", i) for i, t in enumerate(train)]).to_parquet(
        os.path.join(args.out_dir, "train.parquet")
    )
    pd.DataFrame([to_row(*t, "test", i) for i, t in enumerate(val)]).to_parquet(
        os.path.join(args.out_dir, "val.parquet")
    )
    # Warm-up data: the train problems only (validation problems are never seen in SFT).
    with open(os.path.join(args.out_dir, "sft.jsonl"), "w") as f:
        for a, b, op in train:
            q, v = problem(a, b, op)
            f.write(json.dumps({"prompt": q, "response": solution(a, b, op, v)}) + "\n")
    print(f"[data] {len(train)} train / {len(val)} val problems in {args.out_dir}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: run_cpu.sh says what happened, no traceback
        raise SystemExit(130) from None
