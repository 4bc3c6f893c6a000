"""Table 1 from a run's own validation log (``python -m verl_lpreg.evaluate best``).

    python -m verl_lpreg.evaluate best --log METRICS.jsonl [--log ...] --output DIR [--per-benchmark-max]

The paper reports "the best score among the total training" (docs/method.md §7), from the
validation that runs every 8 steps during training (§8). This reads a run's validation metrics
(verl's ``val-core/<data_source>/acc/mean@N``; ``.../reward/mean@N`` when the reward gave no
``acc``) from any log :mod:`verl_lpreg.plot` reads -- verl's file-logger jsonl, a TensorBoard
directory, a wandb CSV export -- and writes ``results.json`` and ``results.md`` in the schema of
``evaluate score``: per benchmark ``{"accuracy": percent, "n_samples": N, "metric": log key,
"step": step}``, ``"average"``, plus

* ``"step"``: by default the validation step whose average over the benchmarks is highest,
  every benchmark's accuracy read at that step: one model, as an offline evaluation of one
  checkpoint would give (ties: the earliest step);
* with ``per_benchmark_max`` (``--per-benchmark-max``) each benchmark's own maximum over the
  run, at its own step (``"step"`` is then ``null``; each benchmark names its step) and
  ``"average"`` is the mean of those maxima;
* ``"selection"``: ``"best_average"`` or ``"per_benchmark_max"``; ``"missing"``: the Table 1
  benchmarks the logs do not have.

Several logs (several pieces of one run, e.g. a resumed run's files) are merged by step; where
two logs have the same metric at the same step, the later ``--log`` wins. Each log must hold one
run (a wandb panel export with several runs is refused).

Missing data: a log set without any validation metric is an error. A Table 1 benchmark
(aime24, aime25, math500, minerva, olympiadbench) that no log has gives a ``-`` cell, a warning,
and ``"missing"`` in ``results.json``; the average is then over the benchmarks present and is not
Table 1's five-benchmark average (the warning says so). Benchmarks other than the five (e.g. the
quick-start's task) are columns of their own, as in ``evaluate score``. The best step is chosen
among the steps at which every benchmark present was validated; no such step is an error naming
the steps of each benchmark.
"""

from __future__ import annotations

import json
import os
import sys

from verl_lpreg.evaluate import TABLE_COLUMNS, EvaluateError, _write_text, results_table
from verl_lpreg.plot import VAL_ACC_PATTERN, PlotError, RunLog, _val_keys, load_runs

__all__ = ["best_from_logs", "best"]

TABLE1_SOURCES = tuple(source for source, _ in TABLE_COLUMNS)


def _merged_run(logs: list[str]) -> RunLog:
    """One run from several logs: union of their points, a later log winning on the same step."""
    if not logs:
        raise EvaluateError("give at least one --log")
    try:
        runs, _ = load_runs(logs)
    except PlotError as e:
        raise EvaluateError(str(e)) from None
    by_source: dict[str, list[str]] = {}
    for run in runs:
        by_source.setdefault(run.source, []).append(run.label)
    for source, labels in by_source.items():
        if len(labels) > 1:
            raise EvaluateError(f"{source} holds {len(labels)} runs ({', '.join(labels)}); export one run per file")
    merged = RunLog(label="merged", source=", ".join(logs))
    for run in runs:
        for name, points in run.metrics.items():
            merged.metrics.setdefault(name, {}).update(points)
    return merged


def best_from_logs(logs: list[str], per_benchmark_max: bool = False) -> tuple[dict, list[str]]:
    """The results dict (schema above) and the warnings, from the validation metrics of ``logs``."""
    run = _merged_run(logs)
    keys = _val_keys(run)  # data source -> its val-core key (acc before reward, largest N)
    if not keys:
        raise EvaluateError(
            f"no validation metric (val-core/<data_source>/acc/mean@N) in {run.source}; "
            "was the run validated (trainer.test_freq > 0, data.val_files)?"
        )
    warnings = []
    missing = [s for s in TABLE1_SOURCES if s not in keys]
    if missing:
        warnings.append(
            f"no validation metric for {', '.join(missing)} in {run.source}: shown as '-'; "
            f"the average is over {', '.join(sorted(keys))} only, not Table 1's five benchmarks"
        )
    order = [s for s in TABLE1_SOURCES if s in keys] + sorted(s for s in keys if s not in TABLE1_SOURCES)
    tables = {s: run.metrics[keys[s]] for s in order}

    def entry(source: str, step: int) -> dict:
        n = int(VAL_ACC_PATTERN.match(keys[source])["n"])
        accuracy = round(100.0 * tables[source][step], 4)
        return {"accuracy": accuracy, "n_samples": n, "metric": keys[source], "step": step}

    summary: dict = {}
    if per_benchmark_max:
        for s in order:
            step = max(sorted(tables[s]), key=lambda k, t=tables[s]: t[k])  # earliest among equal maxima
            summary[s] = entry(s, step)
        best_step = None
    else:
        common = sorted(set.intersection(*(set(t) for t in tables.values())))
        if not common:
            steps = "; ".join(f"{s}: {sorted(tables[s])}" for s in order)
            raise EvaluateError(f"no step at which every benchmark was validated ({steps})")
        best_step = max(common, key=lambda k: sum(t[k] for t in tables.values()))
        for s in order:
            summary[s] = entry(s, best_step)
    summary["average"] = round(sum(summary[s]["accuracy"] for s in order) / len(order), 4)
    summary["step"] = best_step
    summary["selection"] = "per_benchmark_max" if per_benchmark_max else "best_average"
    summary["missing"] = missing
    return summary, warnings


def results_markdown(summary: dict) -> str:
    """``evaluate score``'s Table-1 row, under a line saying which step(s) it comes from."""
    benchmarks = {k: v for k, v in summary.items() if isinstance(v, dict)}
    if summary["step"] is None:
        where = ", ".join(f"{s} step {v['step']}" for s, v in benchmarks.items())
        head = f"Each benchmark's best validation score ({where}).\n\n"
    else:
        head = f"Validation at step {summary['step']}, the step with the best average.\n\n"
    return head + results_table({**benchmarks, "average": summary["average"]})


def best(logs: list[str], output: str, per_benchmark_max: bool = False) -> dict:
    """Write ``results.json`` / ``results.md`` under ``output``; print the warnings and the row."""
    summary, warnings = best_from_logs(logs, per_benchmark_max=per_benchmark_max)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    text = results_markdown(summary)
    os.makedirs(output, exist_ok=True)
    _write_text(os.path.join(output, "results.json"), json.dumps(summary, indent=2, sort_keys=True) + "\n")
    _write_text(os.path.join(output, "results.md"), text)
    print(text, end="")
    return summary
