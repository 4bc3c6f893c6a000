"""Offline evaluation with the paper's protocol (docs/method.md §5): generate responses, then score them.

verl 0.9.1 has no working offline generation/evaluation entry point (docs/method.md §5b), so this is
ours::

    python -m verl_lpreg.evaluate generate --model CKPT --data aime24.parquet math500.parquet ... \\
        --output-dir gen/ [--backend vllm|hf] [--max-new-tokens 8192] [--limit N]
    python -m verl_lpreg.evaluate score --responses gen/*.parquet --output results/

``generate`` reads benchmark files written by ``python -m verl_lpreg.data_prep`` and samples with
:data:`PROTOCOL`: AIME24/AIME25 16 samples at temperature 0.6, top_p 1.0 (avg@16, and
pass@16); MATH-500, Minerva and OlympiadBench one greedy sample; at most 8,192 new tokens.
The prompt is rendered exactly as in training: ``r1`` rows through the pass-through chat
template (``data_prep.core.PASSTHROUGH_CHAT_TEMPLATE``), ``chat`` rows through the model's
own chat template (``extra_info.template`` says which; ``--template`` overrides), tokenized
without added special tokens as verl does. Backends: vLLM (default when it is importable and
CUDA is available) or transformers ``generate`` (CPU or GPU). Output, one parquet per input
file in verl's generation layout: the input rows plus a ``responses`` column (list of
strings); the sampling settings are stored in the parquet metadata under
``verl_lpreg.generation``.

``score`` scores every response with :func:`verl_lpreg.reward.compute_score` in parallel
(progress on stderr) and writes ``results.json`` -- per benchmark (``data_source``):
``accuracy`` (percent; the mean over problems of the per-problem mean, i.e. avg@k),
``n_problems``, ``n_samples`` (responses per problem), ``n_responses``, ``pass@k`` with
k = ``n_samples`` when k > 1 (e.g. ``pass@16``: percent of problems with at least one correct
response), ``timeouts`` (reward calls that hit the time limit); and ``average``, the mean
accuracy over the benchmarks present -- and ``results.md`` with a Table-1 style row (AIME24,
AIME25, MATH-500, Minerva, Olympiad, Avg.), which it also prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from verl_lpreg.atomic_io import OutputPathError, check_output_dir, write_atomic
from verl_lpreg.data_prep.core import PASSTHROUGH_CHAT_TEMPLATE, R1_PREFIX, looks_like_path

__all__ = ["PROTOCOL", "SamplingSpec", "generate", "left_pad", "main", "render_prompt_text", "resolve_model", "score"]


@dataclass(frozen=True)
class SamplingSpec:
    """How many responses per problem and how to sample them (temperature 0 = greedy)."""

    n: int
    temperature: float
    top_p: float


GREEDY = SamplingSpec(n=1, temperature=0.0, top_p=1.0)
#: Sampling per ``data_source`` (docs/method.md §5); any other data source is scored greedy pass@1.
PROTOCOL = {
    "aime24": SamplingSpec(n=16, temperature=0.6, top_p=1.0),
    "aime25": SamplingSpec(n=16, temperature=0.6, top_p=1.0),
    "math500": GREEDY,
    "minerva": GREEDY,
    "olympiadbench": GREEDY,
}
#: Table-1 columns: (data_source, header).
TABLE_COLUMNS = (
    ("aime24", "AIME24"),
    ("aime25", "AIME25"),
    ("math500", "MATH-500"),
    ("minerva", "Minerva"),
    ("olympiadbench", "Olympiad"),
)
METADATA_KEY = b"verl_lpreg.generation"


class EvaluateError(Exception):
    """A user-facing error (bad file, missing column, no chat template, ...)."""


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def _read_table(path: str, needed: tuple[str, ...]):
    """The pyarrow table of a parquet file, checked for ``needed`` columns."""
    import pyarrow.parquet as pq

    if not os.path.isfile(path):
        raise EvaluateError(f"file not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as e:
        raise EvaluateError(f"cannot read {path} as parquet: {type(e).__name__}: {e}") from None
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise EvaluateError(f"{path} has no column {missing[0]!r}; columns found: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        raise EvaluateError(f"{path} has no rows")
    return table


def _write(path: str, write) -> None:
    """:func:`verl_lpreg.atomic_io.write_atomic`, its path errors as :class:`EvaluateError`."""
    try:
        write_atomic(path, write)
    except OutputPathError as e:
        raise EvaluateError(str(e)) from None


def _write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _write(path, write)


def _check_dir(path: str, what: str) -> None:
    try:
        check_output_dir(path, what)
    except OutputPathError as e:
        raise EvaluateError(str(e)) from None


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    return f"row{'s' if len(rows) > 1 else ''} {shown}"


# --------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------


def row_template(row: dict, override: str | None) -> str:
    """``r1`` or ``chat``: ``override``, else ``extra_info.template``, else guessed from the text."""
    if override:
        return override
    template = (row.get("extra_info") or {}).get("template")
    if template in ("r1", "chat"):
        return template
    return "r1" if row["prompt"][0]["content"].startswith(R1_PREFIX) else "chat"


def render_prompt_text(tokenizer, messages: list[dict], template: str) -> str:
    """The prompt string the policy sees in training for ``messages`` (docs/method.md §5b)."""
    if template == "r1":
        return tokenizer.apply_chat_template(
            messages, chat_template=PASSTHROUGH_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False
        )
    if not getattr(tokenizer, "chat_template", None):
        raise EvaluateError("the model's tokenizer has no chat template; use r1 data (or --template r1)")
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


#: Seconds to wait for the Hub's host before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 5.0


def _hub_reachable(endpoint: str) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
        socket.create_connection((url.hostname, port), HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def resolve_model(model: str) -> str:
    """A local checkpoint directory for ``--model``, or the hub id when the hub is reachable.

    A name that looks like a path (see ``data_prep.core.looks_like_path``) must be an existing
    directory. A hub id is used from the local cache when offline (``HF_HUB_OFFLINE=1`` or
    ``TRANSFORMERS_OFFLINE=1``) or when
    the hub does not answer within :data:`HUB_PROBE_TIMEOUT_S`; not cached then is an error at
    once (instead of a minute of retries).
    """
    if os.path.isdir(model):
        return model
    if looks_like_path(model):
        what = "is a file, not a checkpoint directory" if os.path.exists(model) else "not found"
        raise EvaluateError(f"--model {model}: {what} (a local HF checkpoint directory or a hub id)")
    from huggingface_hub import constants, snapshot_download

    offline = bool(constants.HF_HUB_OFFLINE)
    if not offline and _hub_reachable(constants.ENDPOINT):
        return model
    try:
        return snapshot_download(model, local_files_only=True)
    except Exception:
        why = (
            "offline (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1)"
            if offline
            else f"the hub ({constants.ENDPOINT}) is unreachable"
        )
        raise EvaluateError(
            f"--model {model}: {why} and the model is not in the local cache; download it first or pass a "
            "local checkpoint directory"
        ) from None


def _default_backend() -> str:
    import importlib.util

    import torch

    return "vllm" if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available() else "hf"


def left_pad(seqs: list[list[int]], pad_id: int):
    """``(input_ids, attention_mask)`` long tensors of a batch, left-padded to the longest sequence.

    The one left-padding of ``model.generate`` batches (here and in the CPU harness's HF rollout).
    """
    import torch

    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids, mask


class _HFBackend:
    """transformers ``generate``; batches prompts that share a sampling spec."""

    def __init__(self, model_path: str, seed: int, batch_size: int):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype="auto").to(self.device).eval()
        self.seed = seed
        self.batch_size = batch_size

    def generate(
        self, tokenizer, prompt_ids: list[list[int]], spec: SamplingSpec, max_new_tokens: int
    ) -> list[list[str]]:
        from transformers import GenerationConfig

        torch = self.torch
        torch.manual_seed(self.seed)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        # A fresh config: the checkpoint's own sampling defaults (top_k, repetition penalty, ...)
        # must not leak into the protocol.
        sampled = spec.temperature > 0
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            num_return_sequences=spec.n,
            do_sample=sampled,
            temperature=spec.temperature if sampled else None,
            top_p=spec.top_p if sampled else None,
            top_k=0 if sampled else None,
            pad_token_id=pad_id,
            eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        )
        out: list[list[str]] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            batch = prompt_ids[start : start + self.batch_size]
            ids, mask = left_pad(batch, pad_id)
            width = ids.shape[1]
            with torch.no_grad():
                gen = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
                )
            texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
            out.extend(texts[i * spec.n : (i + 1) * spec.n] for i in range(len(batch)))
        return out


class _VLLMBackend:
    """vLLM offline engine (GPU)."""

    def __init__(self, model_path: str, seed: int, tensor_parallel_size: int):
        from vllm import LLM

        self.llm = LLM(model=model_path, seed=seed, tensor_parallel_size=tensor_parallel_size)

    def generate(
        self, tokenizer, prompt_ids: list[list[int]], spec: SamplingSpec, max_new_tokens: int
    ) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=spec.n, temperature=spec.temperature, top_p=spec.top_p, max_tokens=max_new_tokens)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params)
        return [[c.text for c in o.outputs] for o in outputs]


def generate(
    model: str,
    data: list[str],
    output_dir: str,
    backend: str | None = None,
    max_new_tokens: int = 8192,
    limit: int | None = None,
    template: str | None = None,
    seed: int = 0,
    batch_size: int = 8,
    tensor_parallel_size: int = 1,
) -> list[str]:
    """Write ``<output_dir>/<input name>`` for each file of ``data``; returns the paths."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    if limit is not None and limit < 1:
        raise EvaluateError(f"--limit must be >= 1, got {limit}")
    _check_dir(output_dir, "--output-dir")
    tables = {path: _read_table(path, ("data_source", "prompt")) for path in data}
    outputs = [os.path.join(output_dir, os.path.basename(p)) for p in data]
    for src, dst in zip(data, outputs, strict=True):
        if os.path.abspath(src) == os.path.abspath(dst):
            raise EvaluateError(f"--output-dir would overwrite the input {src}")
    if len(set(outputs)) != len(outputs):
        raise EvaluateError("two --data files have the same name; give them distinct names")
    model_path = resolve_model(model)
    backend = backend or _default_backend()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError) as e:  # not a checkpoint, unknown hub id, no tokenizer files
        raise EvaluateError(f"--model {model}: cannot load a tokenizer: {e}") from None
    engine = (
        _VLLMBackend(model_path, seed, tensor_parallel_size)
        if backend == "vllm"
        else _HFBackend(model_path, seed, batch_size)
    )

    for path, out_path in zip(data, outputs, strict=True):
        table = tables[path]
        if limit is not None:
            table = table.slice(0, limit)
        rows = table.to_pylist()
        groups: dict[SamplingSpec, list[int]] = defaultdict(list)
        prompt_ids, settings = [], {}
        for i, row in enumerate(rows):
            spec = PROTOCOL.get(row["data_source"], GREEDY)
            groups[spec].append(i)
            tmpl = row_template(row, template)
            text = render_prompt_text(tokenizer, list(row["prompt"]), tmpl)
            prompt_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
            settings[row["data_source"]] = {**asdict(spec), "template": tmpl}
        responses: list[list[str] | None] = [None] * len(rows)
        for spec, idx in groups.items():
            generated = engine.generate(tokenizer, [prompt_ids[i] for i in idx], spec, max_new_tokens)
            for i, texts in zip(idx, generated, strict=True):
                responses[i] = texts
        result = table.append_column("responses", pa.array(responses, type=pa.list_(pa.string())))
        meta = {
            "model": model,
            "backend": backend,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "data": path,
            "sampling": settings,
        }
        result = result.replace_schema_metadata(
            {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()}
        )
        _write(out_path, lambda tmp, t=result: pq.write_table(t, tmp))
        n = sum(len(r) for r in responses)
        print(f"{path}: {len(rows)} problems, {n} responses -> {out_path}")
    return outputs


# --------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------


def _read_responses(path: str) -> list[tuple]:
    """(data_source, ground_truth, extra_info, [responses]) per row of a ``generate`` output.

    Refuses, naming the file and rows: a ``responses`` column that is not a list of strings per
    row (a plain string would be scored character by character), rows without a ground truth (they
    would count as wrong), and rows without any response.
    """
    import pyarrow as pa

    table = _read_table(path, ("data_source", "reward_model", "responses"))
    rtype = table.schema.field("responses").type
    if not (pa.types.is_list(rtype) or pa.types.is_large_list(rtype)) or not (
        pa.types.is_string(rtype.value_type) or pa.types.is_large_string(rtype.value_type)
    ):
        raise EvaluateError(
            f"{path}: column 'responses' has type {rtype} in all {table.num_rows} rows; it must be a list of "
            "strings per row (the responses to that problem), as 'generate' writes it"
        )
    rows = table.to_pylist()
    no_gt, no_resp, problems = [], [], []
    for i, row in enumerate(rows):
        rm = row["reward_model"]
        gt = rm.get("ground_truth") if isinstance(rm, dict) else None
        if gt is None or (isinstance(gt, str) and not gt.strip()) or (isinstance(gt, list) and not gt):
            no_gt.append(i)
        resps = row["responses"] or []
        if not resps:
            no_resp.append(i)
        problems.append((row["data_source"], gt, row.get("extra_info") or {}, list(resps)))
    if no_gt:
        raise EvaluateError(
            f"{path}: {_rows_text(no_gt)} (of {len(rows)}) have no ground truth (reward_model.ground_truth is "
            "null or empty); they would count as wrong: fix or drop them"
        )
    if no_resp:
        raise EvaluateError(
            f"{path}: {_rows_text(no_resp)} (of {len(rows)}) have no responses; generate them again "
            "(or drop those problems) so that the accuracy covers the whole benchmark"
        )
    return problems


def score(responses: list[str], output: str, workers: int | None = None, timeout_s: float | None = None) -> dict:
    """Score response files and write ``results.json`` / ``results.md`` under ``output``."""
    from verl_lpreg.reward import compute_score, resolve_settings

    try:
        timeout_s, _ = resolve_settings(timeout_s, workers)
    except ValueError as e:
        raise EvaluateError(f"{e} (--timeout / --workers)") from None
    _check_dir(output, "--output")
    problems = []  # (data_source, ground_truth, extra_info, [responses])
    for path in responses:
        problems.extend(_read_responses(path))
    jobs = [(p, r) for p, (_, _, _, resps) in enumerate(problems) for r in resps]

    workers = workers or os.cpu_count() or 1
    done, lock, results = [0], threading.Lock(), [None] * len(jobs)

    def run(k: int) -> None:
        p, text = jobs[k]
        source, gt, info, _ = problems[p]
        results[k] = compute_score(source, text, gt, info, timeout_s=timeout_s, num_workers=workers)
        with lock:
            done[0] += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, k) for k in range(len(jobs))]
        while not all(f.done() for f in futures):
            print(f"\rscoring {done[0]}/{len(jobs)} responses", end="", file=sys.stderr, flush=True)
            time.sleep(0.2)
        for f in futures:
            f.result()
    print(f"\rscoring {len(jobs)}/{len(jobs)} responses", file=sys.stderr, flush=True)

    per_problem: dict[int, list[dict]] = defaultdict(list)
    for (p, _), res in zip(jobs, results, strict=True):
        per_problem[p].append(res)
    by_source: dict[str, list[list[dict]]] = defaultdict(list)
    for p, (source, _, _, _) in enumerate(problems):
        by_source[source].append(per_problem.get(p, []))

    summary: dict = {}
    for source, outcomes in by_source.items():
        counts = sorted({len(o) for o in outcomes})
        accs = [sum(r["score"] for r in o) / len(o) for o in outcomes]
        entry = {
            "accuracy": round(100.0 * sum(accs) / len(accs), 4),
            "n_problems": len(outcomes),
            "n_samples": counts[-1],
            "n_responses": sum(len(o) for o in outcomes),
            "timeouts": sum(r["reason"] == "timeout" for o in outcomes for r in o),
        }
        if counts[-1] > 1:
            k = counts[-1]
            entry[f"pass@{k}"] = round(100.0 * sum(any(r["score"] > 0 for r in o) for o in outcomes) / len(outcomes), 4)
        summary[source] = entry
    summary["average"] = round(sum(v["accuracy"] for v in summary.values()) / len(by_source), 4)

    table_md = results_table(summary)
    _write_text(os.path.join(output, "results.json"), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write_text(os.path.join(output, "results.md"), table_md)
    print(table_md, end="")
    return summary


def results_table(summary: dict) -> str:
    """Markdown Table-1 row: the five benchmarks (``-`` where absent), any others, Avg."""
    known = dict(TABLE_COLUMNS)
    columns = list(TABLE_COLUMNS) + [(s, s) for s in summary if s != "average" and s not in known]
    header = [h for _, h in columns] + ["Avg."]
    cells = [f"{summary[s]['accuracy']:.2f}" if s in summary else "-" for s, _ in columns]
    cells.append(f"{summary['average']:.2f}")
    return (
        "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(cells) + " |"])
        + "\n"
    )


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verl_lpreg.evaluate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="sample responses for benchmark parquet files")
    g.add_argument("--model", required=True, help="HF checkpoint directory (or hub id)")
    g.add_argument("--data", nargs="+", required=True, help="benchmark parquet files from data_prep")
    g.add_argument("--output-dir", required=True)
    g.add_argument(
        "--backend", choices=("vllm", "hf"), help="default: vllm if importable and CUDA is available, else hf"
    )
    g.add_argument("--max-new-tokens", type=int, default=8192)
    g.add_argument("--limit", type=int, help="first N problems of each file")
    g.add_argument("--template", choices=("r1", "chat"), help="override the rows' extra_info.template")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call (hf backend)")
    g.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm backend")
    s = sub.add_parser("score", help="score generated responses")
    s.add_argument("--responses", nargs="+", required=True, help="parquet files written by 'generate'")
    s.add_argument("--output", required=True, help="directory for results.json and results.md")
    s.add_argument("--workers", type=int, help="math-verify worker processes (default: CPU count)")
    s.add_argument("--timeout", type=float, help="seconds per response (default: the reward's, 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "generate":
            generate(
                args.model,
                args.data,
                args.output_dir,
                backend=args.backend,
                max_new_tokens=args.max_new_tokens,
                limit=args.limit,
                template=args.template,
                seed=args.seed,
                batch_size=args.batch_size,
                tensor_parallel_size=args.tensor_parallel_size,
            )
        else:
            score(args.responses, args.output, workers=args.workers, timeout_s=args.timeout)
    except EvaluateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
