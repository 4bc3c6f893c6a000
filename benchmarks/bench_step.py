"""Lp-Reg's cost in the actor: verl's real engine worker on CPU, ``loss_mode=vanilla`` vs ``lp_reg``.

    python benchmarks/bench_step.py                       # the quick-start's model and batch
    python benchmarks/bench_step.py --vocab 151936        # Qwen's vocabulary, tiny body

Part 1 builds one ``ActorRolloutRefWorker`` (FSDP2, gloo, one process, as the integration tests
do) and times, interleaved round by round on the same batch, ``compute_log_prob`` +
``update_actor`` as the trainer calls them: vanilla (no proxy request, verl's vanilla loss) and
Lp-Reg (proxy and margin requested in the old-log-prob forward, the full-sequence proxy handed
to the update, the Lp-Reg loss). It prints the median of each, and the median of the per-round
ratios Lp-Reg / vanilla (both modes run back to back in each round) with its quartiles and a
bootstrap 90% interval of that median, and the ratio of the fastest rounds (timeit's estimator:
on a shared machine interference only ever adds time). Then, from the same calls, what Lp-Reg's
own code costs: the engine's proxy outputs (``LpRegFSDPEngine._proxy_outputs``, all of what the
old-log-prob forward adds) and the actor's loss function (timed in both modes: the difference),
as a share of vanilla's step: the attributed ratio, which the machine's noise barely moves
(what it leaves out: verl carrying one more field through its micro-batch split).

Part 2 (with a large vocabulary the LM head dominates a tiny body, so part 1 mostly measures
the vocabulary) times, on the same logits, verl's own log-prob computation
(``logprobs_from_logits``) and the proxy (``min_p_proxy_stats``), and projects the proxy's share
of a Qwen3-14B old-log-prob forward from bytes read vs FLOPs, with the assumptions printed.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


os.environ.setdefault("VERL_USE_EXTERNAL_MODULES", "verl_lpreg.cpu")
sys.path.insert(0, str(REPO))

from verl_lpreg.testing.process_env import set_rank_env  # noqa: E402

set_rank_env()

import torch  # noqa: E402
from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.utils.torch_functional import logprobs_from_logits  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402
from verl.workers.utils.padding import response_from_nested  # noqa: E402

from verl_lpreg.config import LpRegConfig  # noqa: E402
from verl_lpreg.cpu import CPU_OVERRIDES  # noqa: E402
from verl_lpreg.integration.engine import LpRegFSDPEngine, proxy_request  # noqa: E402
from verl_lpreg.integration.losses import extended_ppo_loss  # noqa: E402
from verl_lpreg.names import PROXY_FIELD  # noqa: E402
from verl_lpreg.proxy import min_p_proxy_stats  # noqa: E402
from verl_lpreg.testing.tiny_model import build_tiny_model  # noqa: E402
from verl_lpreg.testing.trainer_config import compose_trainer_config  # noqa: E402
from verl_lpreg.testing.worker_batch import rollout_row, set_update_settings  # noqa: E402


def compose_actor(model_path: str, loss_mode: str, args) -> object:
    cfg = compose_trainer_config(
        *CPU_OVERRIDES,
        f"actor_rollout_ref.model.path={model_path}",
        f"actor_rollout_ref.model.use_remove_padding={args.rmpad}",
        "actor_rollout_ref.rollout.n=1",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro_batch}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={args.micro_batch}",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.actor.clip_ratio_low=1.0",
        "actor_rollout_ref.actor.clip_ratio_high=9.0",
        f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}",
        "actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.02",
    )
    return cfg.actor_rollout_ref


def rollout_batch(args, vocab: int):
    """Quick-start shaped rows: prompts and responses of varying length, half negative advantages."""
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(args.batch):
        prompt_len = int(torch.randint(args.prompt_len // 2, args.prompt_len + 1, (1,), generator=gen))
        response_len = int(torch.randint(args.response_len // 2, args.response_len + 1, (1,), generator=gen))
        input_ids = torch.randint(3, vocab, (prompt_len + response_len,), generator=gen)
        row = rollout_row(input_ids[:prompt_len], input_ids[prompt_len:])
        row["advantages"] = torch.full((response_len,), float(torch.randn((), generator=gen)))
        rows.append(row)
    return tu.list_of_dict_to_tensordict(rows)


def one_step(worker, batch, lp_reg: bool, args) -> tuple[float, float]:
    """compute_log_prob then update_actor as the trainer calls them; seconds of each."""
    data = batch.clone()
    request = proxy_request(LpRegConfig(), margin=True) if lp_reg else {}
    tu.assign_non_tensor(data, temperature=1.0, calculate_entropy=True, compute_loss=False, **request)
    gc.collect()  # a collection inside a timed call would land on one mode at random
    t0 = args.timer()
    output = worker.compute_log_prob(data)
    t1 = args.timer()
    train = batch.clone()
    train["old_log_probs"] = response_from_nested(output["log_probs"], batch["response_mask"])
    if lp_reg:
        train[PROXY_FIELD] = output[PROXY_FIELD]
    set_update_settings(train, args.batch)
    gc.collect()
    t2 = args.timer()
    worker.update_actor(train)
    t3 = args.timer()
    return t1 - t0, t3 - t2


class Stopwatch:
    """Wraps a callable and adds the time of each call to ``total``."""

    def __init__(self, fn, timer):
        self.fn, self.timer, self.total = fn, timer, 0.0

    def __call__(self, *args, **kwargs):
        start = self.timer()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += self.timer() - start


def bench_worker(args) -> None:
    model_dir = build_tiny_model(
        tempfile.mkdtemp(prefix="bench_step_"), vocab_size=args.vocab, hidden_size=args.hidden, seed=0
    )
    actor = {mode: compose_actor(model_dir, mode, args) for mode in ("vanilla", "lp_reg")}
    # Lp-Reg's own code in the step: the engine's proxy outputs and the actor's loss.
    proxy_outputs = Stopwatch(LpRegFSDPEngine._proxy_outputs, args.timer)
    LpRegFSDPEngine._proxy_outputs = lambda self, *a, **k: proxy_outputs(self, *a, **k)
    worker = ActorRolloutRefWorker(config=actor["lp_reg"], role="actor")
    worker.init_model()
    losses = {
        mode: Stopwatch(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor)), args.timer)
        for mode, cfg in actor.items()
    }
    batch = rollout_batch(args, args.vocab)
    times = {mode: [] for mode in actor}
    own = {mode: [] for mode in actor}  # (proxy outputs, loss) seconds a step
    for round_ in range(args.warmup + args.rounds):
        order = ("vanilla", "lp_reg") if round_ % 2 == 0 else ("lp_reg", "vanilla")
        for mode in order:
            worker.set_loss_fn(losses[mode])
            proxy_outputs.total = losses[mode].total = 0.0
            log_prob_s, update_s = one_step(worker, batch, mode == "lp_reg", args)
            if round_ >= args.warmup:
                times[mode].append((log_prob_s, update_s))
                own[mode].append((proxy_outputs.total, losses[mode].total))
    tokens = int(batch["attention_mask"].offsets().diff().sum()) if batch["attention_mask"].is_nested else 0
    print(
        f"engine worker, CPU, fp32, vocab {args.vocab}, hidden {args.hidden}, {args.batch} sequences "
        f"({tokens} tokens), micro-batch {args.micro_batch}, remove-padding {args.rmpad}, "
        f"median of {args.rounds} interleaved rounds, {'CPU time, 1 thread' if args.clock == 'cpu' else 'wall time'}"
    )
    print(f"{'':10s} {'old-log-prob':>14s} {'update':>10s} {'both':>10s}")
    for mode, rows in times.items():
        cells = [statistics.median(r[i] for r in rows) * 1e3 for i in range(2)]
        cells.append(statistics.median(r[0] + r[1] for r in rows) * 1e3)
        print(f"{mode:10s} {cells[0]:11.1f} ms {cells[1]:7.1f} ms {cells[2]:7.1f} ms")
    # Each round times both modes back to back, so the ratio within a round cancels the machine's
    # slow drifts; the median over rounds is the figure, the quartiles its spread.
    paired = [[], [], []]
    for lp, van in zip(times["lp_reg"], times["vanilla"], strict=True):
        paired[0].append(lp[0] / van[0])
        paired[1].append(lp[1] / van[1])
        paired[2].append((lp[0] + lp[1]) / (van[0] + van[1]))
    ratio = [statistics.median(p) for p in paired]
    print(
        f"{'ratio':10s} {ratio[0]:14.3f} {ratio[1]:10.3f} {ratio[2]:10.3f}   "
        "(Lp-Reg / vanilla, median of per-round ratios; target <= 1.02)"
    )
    fastest = [
        min(f(r) for r in times["lp_reg"]) / min(f(r) for r in times["vanilla"])
        for f in (lambda r: r[0], lambda r: r[1], lambda r: r[0] + r[1])
    ]
    print(
        f"{'fastest':10s} {fastest[0]:14.3f} {fastest[1]:10.3f} {fastest[2]:10.3f}   "
        "(fastest Lp-Reg round / fastest vanilla round)"
    )
    if args.rounds >= 2:
        quartiles = [statistics.quantiles(p, n=4) for p in paired]
        intervals = [bootstrap_median_interval(p) for p in paired]
        for name, cells in (("quartiles", quartiles), ("90% of med", intervals)):
            print(
                f"{name:10s} "
                + " ".join(f"{q[0]:.3f}-{q[-1]:.3f}".rjust(w) for q, w in zip(cells, (14, 10, 10), strict=True))
            )
    # Attribution: Lp-Reg's own code, timed inside the same calls in both modes.
    med = {mode: [statistics.median(r[i] for r in rows) for i in range(2)] for mode, rows in own.items()}
    vanilla_step = statistics.median(r[0] + r[1] for r in times["vanilla"])
    extra = [med["lp_reg"][i] - med["vanilla"][i] for i in range(2)]
    print(
        f"\nLp-Reg's own code a step (median, Lp-Reg - vanilla): the engine's proxy outputs "
        f"{med['lp_reg'][0] * 1e3:.1f} - {med['vanilla'][0] * 1e3:.1f} = {extra[0] * 1e3:.1f} ms, "
        f"actor loss {med['lp_reg'][1] * 1e3:.1f} - {med['vanilla'][1] * 1e3:.1f} = {extra[1] * 1e3:.1f} ms; "
        f"attributed ratio 1 + {sum(extra) * 1e3:.1f} / {vanilla_step * 1e3:.0f} = {1 + sum(extra) / vanilla_step:.4f}"
    )


def bootstrap_median_interval(values, *, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of the median of ``values`` resampled with replacement."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.05 * draws)], medians[int(0.95 * draws) - 1]


def bench_logits(args) -> None:
    """Proxy vs verl's log-prob on the same logits, and the projection to a Qwen3-14B forward."""
    rows = args.logit_rows
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, args.vocab, generator=gen) * 4
    labels = torch.randint(0, args.vocab, (rows,), generator=gen)

    def best(fn) -> float:
        fn()
        out = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return min(out)

    verl_s = best(lambda: logprobs_from_logits(logits, labels))
    proxy_s = best(lambda: min_p_proxy_stats(logits, labels, 0.02))
    print(
        f"\nlogits {rows} x {args.vocab} fp32 ({logits.numel() * 4 / 2**20:.0f} MiB), best of {args.rounds}: "
        f"verl logprobs_from_logits {verl_s * 1e3:.1f} ms, proxy {proxy_s * 1e3:.1f} ms, "
        f"proxy / verl = {proxy_s / verl_s:.2f}"
    )
    # Projection. The proxy is bandwidth-bound: about one read of the logits (block maxima, then
    # only the few candidate blocks again). A 14B forward is compute-bound: 2 FLOPs per parameter
    # per token. Per token on an H100-class GPU (3.35 TB/s HBM, ~400 TFLOP/s bf16 achieved):
    params, hidden, vocab = 14.8e9, 5120, 151936
    bytes_per_token = vocab * 2  # bf16 logits, one read
    flops_per_token = 2 * params
    proxy_us = bytes_per_token / 3.35e12 * 1e6
    forward_us = flops_per_token / 400e12 * 1e6
    head_us = 2 * hidden * vocab / 400e12 * 1e6
    print(
        f"projection (Qwen3-14B, bf16, H100: 3.35 TB/s, 400 TFLOP/s achieved): proxy ~{proxy_us:.3f} us/token "
        f"(one read of {bytes_per_token / 1e3:.0f} kB of logits) vs forward ~{forward_us:.1f} us/token "
        f"(2 x {params / 1e9:.1f}e9 FLOPs; LM head alone {head_us:.2f} us) = {100 * proxy_us / forward_us:.2f}% "
        "of the old-log-prob forward"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=512, help="vocabulary (quick-start: 512; Qwen: 151936)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256, help="sequences (quick-start: 32 prompts x 8)")
    parser.add_argument("--micro-batch", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=32)
    parser.add_argument("--rmpad", choices=("true", "false"), default="false", help="quick-start default: false")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--logit-rows", type=int, default=1024)
    parser.add_argument("--skip-worker", action="store_true", help="only the logits part")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu (default): this thread's CPU time with one torch thread, which other processes "
        "on the machine barely disturb; wall: wall-clock time with torch's default threads",
    )
    args = parser.parse_args(argv)
    if args.clock == "cpu":
        torch.set_num_threads(1)
    args.timer = time.thread_time if args.clock == "cpu" else time.perf_counter
    if not args.skip_worker:
        bench_worker(args)
    bench_logits(args)


if __name__ == "__main__":
    main()
