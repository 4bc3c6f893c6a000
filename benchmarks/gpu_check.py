"""Everything a single-GPU machine should tell us about verl-lpreg, in one run (``scripts/gpu_check.sh``).

Needs torch with CUDA and what ``scripts/setup_env.sh`` installs: no vLLM, no network, no weights.

1. the test suite's CUDA-marked tests (``pytest -m cuda``);
2. a randomly initialised Qwen3-shaped model of about 0.5B parameters (Qwen3-0.6B's shape) at
   vocabulary 151,936, built locally (``verl_lpreg.testing.tiny_model``);
3. verl's engine worker (``ActorRolloutRefWorker``, FSDP2, one rank) in bf16 with remove-padding and
   dynamic batch size at 30,720 tokens per micro-batch and 8k-token responses: ``compute_log_prob``
   without and with the proxy, ``update_actor`` with ``vanilla`` and ``lp_reg``: time and peak memory;
4. the engine's proxy against a reference-style computation (clone, softmax, mask, log_softmax) on a
   slice, and the proxy's own speed at 30,720 x 151,936 bf16 (GB/s, % of peak, host syncs);
5. one summary table, also written as JSON.

``--dry-run`` runs all of it on CPU at a tiny size (what CI tests); without ``--dry-run`` and
without CUDA it exits with status 2 at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench_proxy lives next to this file; it (and everything of verl) is imported after the CUDA check.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
MIN_P = 0.02


@dataclass
class Size:
    """The shapes of one check: model, batch, micro-batch and proxy benchmark."""

    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    samples: int
    prompt_len: int
    response_len: int
    tokens_per_micro_batch: int
    bench_rows: int
    neg_fraction: float  # rho: the paper's 0.01, larger at the tiny size so that some tokens are regularised


# Qwen3-0.6B's shape (0.6B parameters, 0.44B without the embedding), random weights.
FULL = Size(1024, 28, 16, 8, 128, 3072, 151_936, True, 8, 512, 8192, 30_720, 30_720, 0.01)
# CPU, seconds: the same code paths at a tiny size.
DRY_RUN = Size(32, 2, 4, 2, 8, 64, 512, True, 8, 16, 48, 128, 256, 0.2)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def run_cuda_tests() -> dict:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    # pytest exits 5 when nothing is selected: not a failure
    return {"ok": proc.returncode in (0, 5), "summary": last, "seconds": time.perf_counter() - start}


def build_model(path: str, size: Size) -> str:
    from verl_lpreg.testing.tiny_model import build_tiny_model

    return build_tiny_model(
        path,
        architecture="qwen3",
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        num_layers=size.num_layers,
        num_attention_heads=size.num_attention_heads,
        num_key_value_heads=size.num_key_value_heads,
        head_dim=size.head_dim,
        intermediate_size=size.intermediate_size,
        tie_word_embeddings=size.tie_word_embeddings,
        max_position_embeddings=max(2048, size.prompt_len + size.response_len),
    )


def attention_implementation(device: str) -> str:
    if device != "cuda":
        return "eager"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "sdpa"
    return "flash_attention_2"


def compose_config(model_path: str, size: Size, device: str, *overrides):
    from verl_lpreg.testing.trainer_config import compose_trainer_config

    per_device = []
    if device == "cpu":
        from verl_lpreg.cpu import CPU_OVERRIDES

        per_device = [*CPU_OVERRIDES, "actor_rollout_ref.actor.fsdp_config.model_dtype=bf16"]
        per_device.append("++actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=bf16")
    else:
        per_device = [
            "actor_rollout_ref.actor.strategy=fsdp2",
            "actor_rollout_ref.model.enable_gradient_checkpointing=true",
            f"+actor_rollout_ref.model.override_config.attn_implementation={attention_implementation(device)}",
        ]
    return compose_trainer_config(
        *per_device,
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.model.use_remove_padding=true",
        "actor_rollout_ref.rollout.n=1",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={size.samples}",
        "actor_rollout_ref.actor.use_dynamic_bsz=true",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={size.tokens_per_micro_batch}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={size.tokens_per_micro_batch}",
        f"actor_rollout_ref.actor.policy_loss.lp_reg.min_p={MIN_P}",
        f"actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction={size.neg_fraction}",
        *overrides,
    )


def rollout_batch(size: Size, seed: int = 0):
    from verl.utils import tensordict_utils as tu

    from verl_lpreg.testing.worker_batch import rollout_row

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(size.samples):  # unequal lengths, as rollouts are (and as verl's jagged layout expects)
        prompt = torch.randint(3, size.vocab_size, (size.prompt_len - i,), generator=gen)
        response = torch.randint(3, size.vocab_size, (size.response_len - 2 * i,), generator=gen)
        rows.append(rollout_row(prompt, response))
    return tu.list_of_dict_to_tensordict(rows)


def timed(device: str, fn, *args):
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    out = fn(*args)
    _sync(device)
    return out, time.perf_counter() - start, _peak_gib(device)


def _has_nan(value) -> bool:
    if isinstance(value, torch.Tensor):
        value = value.values() if value.is_nested else value
        return bool(torch.isnan(value.float()).any())
    if isinstance(value, list | tuple):
        return any(_has_nan(v) for v in value)
    if isinstance(value, float):
        return math.isnan(value)
    return False


def engine_checks(model_path: str, size: Size, device: str) -> dict:
    """compute_log_prob with and without the proxy, update_actor with vanilla and lp_reg."""
    from verl.utils import tensordict_utils as tu
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    from verl_lpreg.config import LpRegConfig
    from verl_lpreg.integration.engine import proxy_request
    from verl_lpreg.integration.losses import extended_ppo_loss
    from verl_lpreg.names import PROXY_FIELD
    from verl_lpreg.testing.worker_batch import set_update_settings

    cfg = compose_config(model_path, size, device)
    worker = ActorRolloutRefWorker(config=cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    if type(worker.actor.engine).__name__ != "LpRegFSDPEngine":
        raise RuntimeError(f"verl picked {type(worker.actor.engine).__name__}, not verl-lpreg's engine")
    batch = rollout_batch(size)
    results = {}

    def old_log_prob(with_proxy: bool):
        data = batch.clone()
        request = proxy_request(LpRegConfig(min_p=MIN_P)) if with_proxy else {}
        tu.assign_non_tensor(data, temperature=1.0, calculate_entropy=True, compute_loss=False, **request)
        return worker.compute_log_prob(data)

    old_log_prob(True)  # warm-up: allocator, kernels, the proxy's compilation
    for name, with_proxy in (("old_log_prob", False), ("old_log_prob_lp_reg", True)):
        output, seconds, peak = timed(device, old_log_prob, with_proxy)
        results[name] = {"seconds": seconds, "peak_gib": peak, "nan": _has_nan(output["log_probs"])}
        if with_proxy:  # the proxy stays in the engine's full-sequence layout, as the trainer passes it on
            proxy = output[PROXY_FIELD]
            results[name]["nan"] |= _has_nan(proxy)
            old = response_from_nested(output["log_probs"], batch["response_mask"])
    results["tokens"] = int(batch["input_ids"].offsets()[-1])

    def update(loss_mode: str):
        data = batch.clone()
        data["old_log_probs"] = old
        gen = torch.Generator().manual_seed(1)
        advantages = [torch.full((len(r),), float(torch.randn((), generator=gen))) for r in batch["responses"].unbind()]
        data["advantages"] = torch.nested.as_nested_tensor(advantages, layout=torch.jagged)
        data[PROXY_FIELD] = proxy
        set_update_settings(data, size.samples)
        actor = compose_config(model_path, size, device, f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode}")
        worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(actor.actor_rollout_ref.actor)))
        return worker.update_actor(data)["metrics"]

    for loss_mode in ("vanilla", "lp_reg"):
        metrics, seconds, peak = timed(device, update, loss_mode)
        results[f"update_{loss_mode}"] = {
            "seconds": seconds,
            "peak_gib": peak,
            "nan": any(_has_nan(v) for v in metrics.values() if isinstance(v, float | list)),
            "loss": metrics.get("loss"),
            # per micro-batch counts (verl averages them over dp ranks: one rank here)
            "regularised_tokens": float(sum(metrics["lp_reg/reg_count"])) if loss_mode == "lp_reg" else 0.0,
        }
    results["proxy_slice"] = proxy_slice_check(
        model_path, batch, response_from_nested(proxy, batch["response_mask"]), device
    )
    return results


def proxy_slice_check(model_path: str, batch, engine_proxy, device: str, positions: int = 1024) -> dict:
    """The first sample, truncated: its logits from a plain transformers forward, the proxy the
    reference's way (clone, softmax, mask, log_softmax) against ours on those logits (same
    logits: float32 rounding only) and against what the engine returned (another forward: bf16)."""
    from bench_proxy import reference_proxy
    from transformers import AutoModelForCausalLM

    from verl_lpreg.proxy import min_p_proxy_log_prob

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).to(device)
    prompt_len = len(batch["prompts"][0])
    n = min(positions, len(batch["responses"][0]))
    input_ids = batch["input_ids"][0][: prompt_len + n].to(device)
    with torch.no_grad():
        logits = model(input_ids.unsqueeze(0)).logits[0, prompt_len - 1 : prompt_len - 1 + n]
    tokens = input_ids[prompt_len : prompt_len + n]
    ours = min_p_proxy_log_prob(logits, tokens, MIN_P)
    ref = reference_proxy(logits.float(), tokens, MIN_P)
    kept = ref > -1e3
    engine = engine_proxy[0][:n].to(device)
    both_kept = kept & (engine > -1e3)
    return {
        "positions": n,
        "kept_fraction": float(kept.float().mean()),
        "max_abs_diff_vs_reference": float((ours - ref)[kept].abs().max()) if kept.any() else 0.0,
        "max_rel_diff_removed": float(((ours - ref) / ref).abs()[~kept].max()) if (~kept).any() else 0.0,
        "kept_decision_agreement_with_engine": float(((engine > -1e3) == kept).float().mean()),
        "median_abs_diff_engine_kept": float((engine - ours)[both_kept].abs().median()) if both_kept.any() else 0.0,
        "nan": _has_nan(ours) or _has_nan(engine),
    }


def proxy_bandwidth(size: Size, device: str, repeats: int = 5) -> dict:
    from bench_proxy import count_host_syncs, peak_memory_bandwidth

    from verl_lpreg.proxy import min_p_proxy_log_prob

    gen = torch.Generator(device=device).manual_seed(0)
    logits = torch.empty(size.bench_rows, size.vocab_size, device=device, dtype=torch.bfloat16)
    logits.normal_(generator=gen).mul_(4.0)
    tokens = torch.randint(0, size.vocab_size, (size.bench_rows,), generator=gen, device=device)
    min_p_proxy_log_prob(logits, tokens, MIN_P)  # warm-up / compile
    times = []
    for _ in range(repeats):
        _, seconds, _ = timed(device, min_p_proxy_log_prob, logits, tokens, MIN_P)
        times.append(seconds)
    best = min(times)
    gbps = 2 * logits.numel() * logits.element_size() / best / 1e9  # two reads of the logits
    out = {"rows": size.bench_rows, "vocab": size.vocab_size, "ms": best * 1e3, "gb_per_s": gbps}
    if device == "cuda":
        peak, source = peak_memory_bandwidth()
        out.update(peak_gb_per_s=peak, peak_source=source, percent_of_peak=100 * gbps / peak)
        out["host_syncs"] = count_host_syncs(min_p_proxy_log_prob, logits, tokens, MIN_P)
    return out


def summary_rows(report: dict) -> list[tuple[str, str]]:
    eng, bench = report["engine"], report["proxy_bandwidth"]

    def ratio(a, b):
        return f"{eng[a]['seconds'] / eng[b]['seconds']:.2f}x"

    def gib(key):
        peak = eng[key]["peak_gib"]
        return "n/a (CPU)" if peak is None else f"{peak:.1f} GiB"

    pct = f" ({bench['percent_of_peak']:.0f}% of {bench['peak_gb_per_s']:.0f})" if "percent_of_peak" in bench else ""
    syncs = f", {bench['host_syncs']} host syncs" if "host_syncs" in bench else ""
    slice_check = eng["proxy_slice"]
    any_nan = any(v.get("nan", False) for v in eng.values() if isinstance(v, dict))
    return [
        ("device", report["device"]),
        ("CUDA-marked tests", report["cuda_tests"]["summary"] if report["cuda_tests"] else "skipped (dry run)"),
        ("model", f"Qwen3-shaped, {report['parameters']:,} parameters, vocab {report['size']['vocab_size']}"),
        (
            "batch",
            f"{report['size']['samples']} x (up to {report['size']['prompt_len']} + {report['size']['response_len']}) "
            f"tokens, {report['size']['tokens_per_micro_batch']} per micro-batch",
        ),
        ("proxy", f"{bench['ms']:.1f} ms, {bench['gb_per_s']:.0f} GB/s{pct}{syncs}"),
        ("old log-prob time Lp-Reg / vanilla", ratio("old_log_prob_lp_reg", "old_log_prob")),
        ("update time Lp-Reg / vanilla", ratio("update_lp_reg", "update_vanilla")),
        ("peak memory old log-prob vanilla / Lp-Reg", f"{gib('old_log_prob')} / {gib('old_log_prob_lp_reg')}"),
        ("peak memory update vanilla / Lp-Reg", f"{gib('update_vanilla')} / {gib('update_lp_reg')}"),
        ("proxy vs reference on a slice (max abs, kept)", f"{slice_check['max_abs_diff_vs_reference']:.1e}"),
        (
            "engine vs plain forward, kept/removed agree",
            f"{100 * slice_check['kept_decision_agreement_with_engine']:.1f}%",
        ),
        ("any NaN", str(any_nan)),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="everything on CPU at a tiny size (CI)")
    parser.add_argument("--output", default="gpu_check.json", help="where the JSON summary goes")
    parser.add_argument("--workdir", help="where the model is built (default: a temporary directory)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        why = (
            f"torch {torch.__version__} is a CPU build: install torch==2.13.0 from the CUDA wheel index"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
        )
        print(f"gpu_check: no CUDA device ({why}); `--dry-run` runs the check on CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    size = DRY_RUN if args.dry_run else FULL
    # one process of its own: a port of its own too (an inherited MASTER_PORT may be held by its parent)
    from verl_lpreg.testing.process_env import set_rank_env

    set_rank_env()
    if device == "cpu":
        import verl_lpreg.cpu  # noqa: F401  (CPU platform, gloo)

    started = time.perf_counter()
    report = {"device": "CPU (dry run)" if args.dry_run else torch.cuda.get_device_name(), "size": asdict(size)}
    report["cuda_tests"] = None if args.dry_run else run_cuda_tests()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        model_path = build_model(os.path.join(tmp, "qwen3"), size)
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_path)
        report["parameters"] = _count_parameters(config)
        report["engine"] = engine_checks(model_path, size, device)
    report["proxy_bandwidth"] = proxy_bandwidth(size, device)
    report["seconds"] = time.perf_counter() - started
    rows = summary_rows(report)
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)
    print(f"written: {args.output} ({report['seconds']:.0f} s)")
    failed = (report["cuda_tests"] is not None and not report["cuda_tests"]["ok"]) or rows[-1][1] == "True"
    return 1 if failed else 0


def _count_parameters(config) -> int:
    """Parameters of the built model, from its config (no second copy of the weights)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
    sys.exit(main())
