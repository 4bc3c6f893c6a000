"""Short supervised warm-up of the tiny model on CPU (plain PyTorch, a few seconds).

A randomly initialised model earns reward 0 on every sample, so GRPO advantages, pg_loss and
grad_norm are all exactly 0. This warm-up teaches the answer format and part of the arithmetic on
the *train* problems (validation problems are never seen), stopping early so that sampled answers
are right only part of the time: the reward then varies within a GRPO group and RL has
something to learn. The model is saved in place (save_pretrained), tokenizer unchanged.

    python3 examples/quickstart/warmup_sft.py --model DIR --data DIR/sft.jsonl [--steps 150]
"""

from __future__ import annotations

import argparse
import json
import random
import time


def main(argv=None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.time()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation="eager")
    rows = [json.loads(line) for line in open(args.data)]
    examples = []
    for r in rows:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(r["response"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        examples.append((p_ids, r_ids))

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    model.train()
    loss_val = float("nan")
    for step in range(args.steps):
        batch = [examples[rng.randrange(len(examples))] for _ in range(args.batch_size)]
        width = max(len(a) + len(b) for a, b in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (a, b) in enumerate(batch):
            seq = a + b
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(a) : len(seq)] = torch.tensor(b)
            mask[i, : len(seq)] = 1
        lr = args.lr * min(1.0, (step + 1) / 10)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = loss.item()
    model.eval()
    model.save_pretrained(args.model, safe_serialization=True)
    print(
        f"[warmup] {args.steps} SFT steps on {len(examples)} solved train problems: "
        f"final loss {loss_val:.3f} ({time.time() - t0:.1f}s)"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: run_cpu.sh says what happened, no traceback
        raise SystemExit(130) from None
