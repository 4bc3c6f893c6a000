"""Draw the Lp-Reg paper's diagnostic figures (docs/method.md §6) from one or more runs' logs.

    python -m verl_lpreg.plot RUN_LOG [RUN_LOG ...] --output figs/ [--labels grpo lp-reg]

A RUN_LOG is any of

* verl's file-logger output (``trainer.logger=[...,file]``): JSON lines
  ``{"step": N, "data": {"metric": value, ...}}`` (``verl/utils/tracking.py`` FileLogger); a
  history with ``{"resumed_from": N}`` lines (a resumed run, as the quick-start keeps it) is drawn
  as one run (:func:`read_history`);
* a TensorBoard log directory (``trainer.logger=[...,tensorboard]``, ``$TENSORBOARD_DIR``
  or ``tensorboard_log/<project>/<experiment>``), read with TensorBoard's EventAccumulator;
* a wandb CSV export (``*.csv``): a run's history (``run.history().to_csv()``, step column
  ``_step``) or a panel's "Export CSV" (column ``Step``, columns ``<run> - <metric>``; a
  panel with several runs gives several runs).

Several runs are overlaid, one colour per run, labelled with the run's name (file stem,
directory name, or wandb run name) or ``--labels``. One PNG per figure:

=======================  =============================================================
``entropy.png``          policy entropy vs step
``val_<source>.png``     validation accuracy vs step, one per benchmark
``val_average.png``      mean over the benchmarks (steps where a run has all of them)
``spark_noise_freq.png`` spark / noise words per 1k sampled tokens vs step
``spark_noise_prob.png`` mean pi_old probability of sampled spark / noise words vs step
``reg_fraction.png``     share of tokens Lp-Reg regularised vs step
``minp_threshold.png``   mean min-p threshold kappa * p_max vs step
``low_prob.png``         share of sampled tokens with p < threshold vs step
``low_prob_hist.png``    probabilities of low-probability tokens, first and last step
=======================  =============================================================

A figure whose metric no run has is skipped with a warning naming the metric; a run
without a figure's metric is left out of that figure with a warning; runs of different
lengths are drawn as far as each goes. It is an error when no figure can be drawn.

The metric names are in one table below (``METRICS`` and the patterns after it). The
series handed to matplotlib are built by :func:`collect_figures` (plain data, tested);
:func:`render` only draws them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# ---------------------------------------------------------------------------------------
# metric-name table: every name this module reads. First name found in a run wins.
# ---------------------------------------------------------------------------------------
METRICS: dict[str, tuple[str, ...]] = {
    "entropy": ("actor/entropy", "lp_reg/entropy_mean"),
    "spark_per_1k": ("lp_reg/spark_per_1k",),
    "noise_per_1k": ("lp_reg/noise_per_1k",),
    "spark_prob_mean": ("lp_reg/spark_prob_mean",),
    "noise_prob_mean": ("lp_reg/noise_prob_mean",),
    "reg_fraction": ("actor/lp_reg/reg_fraction", "lp_reg/reg_fraction"),
    "minp_threshold_mean": ("lp_reg/minp_threshold_mean",),
    "low_prob_fraction": ("lp_reg/low_prob_fraction",),
}
#: validation accuracy, verl 0.9.1 ``_val_metrics_update``: ``val-core/<data_source>/<var>/mean@N``
#: with var ``acc`` when the reward function returns one, else ``reward``. The data source
#: may itself contain "/" (e.g. ``HuggingFaceH4/aime_2024``).
VAL_ACC_PATTERN = re.compile(r"^val-core/(?P<source>.+)/(?P<var>acc|reward)/mean@(?P<n>\d+)$")
VAL_VAR_PREFERENCE = ("acc", "reward")
#: histogram bins of ``verl_lpreg.diagnostics``: ``lp_reg/low_prob_hist/<ii>_<lo>-<hi>``
LOW_PROB_HIST_PATTERN = re.compile(r"^lp_reg/low_prob_hist/(?P<i>\d+)_(?P<lo>[0-9.]+)-(?P<hi>[0-9.]+)$")
#: step column of a wandb CSV export, in order of preference
CSV_STEP_COLUMNS = ("_step", "Step", "step", "global_step", "trainer/global_step", "training/global_step")

# (file stem, figure title, [(panel title, METRICS key, y label), ...])
STEP_FIGURES: tuple[tuple[str, str, tuple[tuple[str, str, str], ...]], ...] = (
    ("entropy", "Policy entropy", (("entropy", "entropy", "entropy (nats)"),)),
    (
        "spark_noise_freq",
        "Sampled spark vs noise words",
        (
            ("spark words", "spark_per_1k", "per 1k sampled tokens"),
            ("noise words", "noise_per_1k", "per 1k sampled tokens"),
        ),
    ),
    (
        "spark_noise_prob",
        "Probability of sampled spark vs noise words",
        (
            ("spark words", "spark_prob_mean", "mean pi_old probability"),
            ("noise words", "noise_prob_mean", "mean pi_old probability"),
        ),
    ),
    ("reg_fraction", "Tokens regularised by Lp-Reg", (("regularised", "reg_fraction", "share of tokens"),)),
    ("minp_threshold", "min-p threshold kappa * p_max", (("threshold", "minp_threshold_mean", "mean kappa * p_max"),)),
    (
        "low_prob",
        "Low-probability sampled tokens",
        (("p < threshold", "low_prob_fraction", "share of sampled tokens"),),
    ),
)


class PlotError(Exception):
    """A problem with the inputs that stops the plotting (message is user-facing)."""


# ---------------------------------------------------------------------------------------
# reading logs
# ---------------------------------------------------------------------------------------
@dataclass
class RunLog:
    """One run: ``metrics[name][step] = value`` (finite values only)."""

    label: str
    source: str
    metrics: dict[str, dict[int, float]] = field(default_factory=dict)

    def add(self, name: str, step: int, value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return  # arrays, strings, None: not a scalar series
        value = float(value)
        if math.isfinite(value):
            self.metrics.setdefault(name, {})[int(step)] = value  # a later record wins

    def series(self, name: str) -> tuple[list[int], list[float]]:
        points = sorted(self.metrics.get(name, {}).items())
        return [s for s, _ in points], [v for _, v in points]

    def first_present(self, names: Sequence[str]) -> str | None:
        return next((n for n in names if self.metrics.get(n)), None)


#: A line ``{"resumed_from": N}`` in a file-logger history: the run resumed from its step-N
#: checkpoint; the rows logged before it for steps later than N are superseded (see
#: :func:`read_history`). ``examples/quickstart`` writes it when it resumes a run.
RESUME_MARKER = "resumed_from"


def _int_step(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def read_history(path: str | os.PathLike, warnings: list[str] | None = None) -> list[tuple[int, dict]]:
    """``[(step, data), ...]`` of a verl file-logger JSONL, one entry per step, in step order.

    The one reader of these files (also ``examples/quickstart/progress.py``). Records of the same
    step are merged (a later value wins); a :data:`RESUME_MARKER` line drops the earlier records of
    steps after the resumed checkpoint, so a resumed run reads as one run. A line that is not valid
    JSON (e.g. the last one of a run killed mid-write, or one still being written) is skipped with a
    warning appended to ``warnings``. Raises :class:`PlotError` for a binary file, a record that is
    not ``{"step": N, "data": {...}}``, or a step that is not an integer.
    """
    path = Path(path)
    rows: dict[int, dict] = {}
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if b"\0" in raw:
                raise PlotError(
                    f"{path}:{lineno}: binary data, not a verl file-logger .jsonl "
                    "(pass a .jsonl file, a TensorBoard directory or a wandb .csv)"
                )
            try:
                rec = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise PlotError(f"{path}:{lineno}: not UTF-8 text; not a verl file-logger .jsonl") from None
            except json.JSONDecodeError:
                if warnings is not None:
                    warnings.append(f"{path}:{lineno}: not valid JSON, line skipped")
                continue
            if isinstance(rec, dict) and set(rec) == {RESUME_MARKER}:
                resumed = _int_step(rec[RESUME_MARKER])
                if resumed is None:
                    raise PlotError(f"{path}:{lineno}: {RESUME_MARKER} {rec[RESUME_MARKER]!r} is not an integer step")
                rows = {s: d for s, d in rows.items() if s <= resumed}
                continue
            if not (isinstance(rec, dict) and "step" in rec and isinstance(rec.get("data"), dict)):
                raise PlotError(
                    f'{path}:{lineno}: not a verl file-logger record (expected {{"step": N, "data": {{...}}}})'
                )
            step = _int_step(rec["step"])
            if step is None:
                raise PlotError(f"{path}:{lineno}: step {rec['step']!r} is not an integer")
            rows.setdefault(step, {}).update(rec["data"])
    return sorted(rows.items())


def _read_jsonl(path: Path, warnings: list[str]) -> RunLog:
    run = RunLog(label=path.stem, source=str(path))
    history = read_history(path, warnings)
    if not history:
        raise PlotError(f"{path}: no records (an empty or unreadable verl file-logger log)")
    for step, data in history:
        for name, value in data.items():
            run.add(name, step, value)
    return run


def _read_tensorboard(path: Path) -> RunLog:
    event_dirs = sorted({p.parent for p in path.rglob("events.out.tfevents.*")})
    if not event_dirs:
        raise PlotError(
            f"{path}: a directory without TensorBoard event files (events.out.tfevents.*); "
            "for verl's file logger pass the .jsonl file itself"
        )
    if len(event_dirs) > 1:
        listing = ", ".join(str(d) for d in event_dirs)
        raise PlotError(f"{path} holds several TensorBoard runs ({listing}); pass each run directory")
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:  # a verl dependency, so normally there
        raise PlotError(f"{path}: reading a TensorBoard directory needs the tensorboard package ({e})") from e

    acc = event_accumulator.EventAccumulator(str(event_dirs[0]), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    run = RunLog(label=path.name, source=str(path))
    for tag in acc.Tags().get(event_accumulator.SCALARS, []):
        for ev in acc.Scalars(tag):
            run.add(tag, ev.step, ev.value)
    if not run.metrics:
        raise PlotError(f"{path}: TensorBoard log without scalar values")
    return run


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _read_wandb_csv(path: Path) -> list[RunLog]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise PlotError(f"{path}: empty CSV") from None
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise PlotError(f"{path}: not a CSV text file ({type(e).__name__}: {e})") from None
    step_col = next((c for c in CSV_STEP_COLUMNS if c in header), None)
    if step_col is None:
        raise PlotError(f"{path}: no step column in the CSV header (looked for {', '.join(CSV_STEP_COLUMNS)})")
    step_idx = header.index(step_col)
    runs: dict[str, RunLog] = {}
    columns: list[tuple[int, RunLog, str]] = []
    for i, name in enumerate(header):
        if i == step_idx or name.endswith(("__MIN", "__MAX")) or name in ("_runtime", "_timestamp"):
            continue
        run_name, sep, metric = name.partition(" - ")
        if not sep:  # a run's history export: one run, named after the file
            run_name, metric = path.stem, name
        run = runs.setdefault(run_name, RunLog(label=run_name, source=str(path)))
        columns.append((i, run, metric))
    for row in rows:
        if step_idx >= len(row):
            continue
        step = _float_or_none(row[step_idx])
        if step is None or not math.isfinite(step):
            continue
        for i, run, metric in columns:
            if i < len(row):
                value = _float_or_none(row[i])
                if value is not None:
                    run.add(metric, int(step), value)
    out = [r for r in runs.values() if r.metrics]
    if not out:
        raise PlotError(f"{path}: CSV without numeric metric values")
    return out


def load_runs(
    paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None
) -> tuple[list[RunLog], list[str]]:
    """Read every log; returns the runs (in order) and the warnings met on the way."""
    warnings: list[str] = []
    runs: list[RunLog] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise PlotError(f"log not found: {path}")
        if path.is_dir():
            runs.append(_read_tensorboard(path))
        elif path.suffix.lower() == ".csv":
            runs.extend(_read_wandb_csv(path))
        else:
            runs.append(_read_jsonl(path, warnings))
    if labels:
        if len(labels) != len(runs):
            names = ", ".join(r.label for r in runs)
            raise PlotError(
                f"--labels has {len(labels)} label(s) but {len(runs)} run(s) were loaded ({names}); give one per run"
            )
        for run, label in zip(runs, labels, strict=True):
            run.label = label
    else:  # the same default name twice (e.g. two runs/<x>/metrics.jsonl): add the parent
        seen: dict[str, int] = {}
        for run in runs:
            seen[run.label] = seen.get(run.label, 0) + 1
        for run in runs:
            if seen[run.label] > 1:
                parent = Path(run.source).parent.name
                run.label = f"{parent}/{run.label}" if parent else run.label
    return runs, warnings


# ---------------------------------------------------------------------------------------
# the figures as data
# ---------------------------------------------------------------------------------------
@dataclass
class Line:
    run: str  # run label (legend)
    run_index: int  # fixes the colour across figures
    metric: str  # the log key the values come from
    x: list[float]
    y: list[float]
    label: str = ""  # legend text; run label when empty


@dataclass
class Panel:
    title: str
    ylabel: str
    xlabel: str = "step"
    lines: list[Line] = field(default_factory=list)


@dataclass
class FigureData:
    name: str  # file stem
    title: str
    panels: list[Panel]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unnamed"


def _step_panel(runs: list[RunLog], title: str, key: str, ylabel: str, fig: str, warnings: list[str]) -> Panel | None:
    names = METRICS[key]
    panel = Panel(title=title, ylabel=ylabel)
    missing = []
    for idx, run in enumerate(runs):
        name = run.first_present(names)
        if name is None:
            missing.append(run.label)
            continue
        x, y = run.series(name)
        panel.lines.append(Line(run=run.label, run_index=idx, metric=name, x=x, y=y))
    wanted = " or ".join(names)
    if not panel.lines:
        warnings.append(f"no run has {wanted}: {fig}.png skipped" if fig else f"no run has {wanted}")
        return None
    if missing:
        warnings.append(f"{', '.join(missing)}: no {wanted}, left out of {fig}.png")
    return panel


def _val_keys(run: RunLog) -> dict[str, str]:
    """data source -> the run's validation-accuracy key (acc before reward, largest N)."""
    best: dict[str, tuple[int, int, str]] = {}
    for name in run.metrics:
        m = VAL_ACC_PATTERN.match(name)
        if not m:
            continue
        rank = (-VAL_VAR_PREFERENCE.index(m["var"]), int(m["n"]), name)
        if m["source"] not in best or rank > best[m["source"]]:
            best[m["source"]] = rank
    return {src: rank[2] for src, rank in best.items()}


def _val_figures(runs: list[RunLog], warnings: list[str]) -> list[FigureData]:
    per_run = [_val_keys(r) for r in runs]
    sources = sorted({s for keys in per_run for s in keys})
    if not sources:
        warnings.append(
            "no run has a validation metric (val-core/<data_source>/acc/mean@N or .../reward/mean@N): val_*.png skipped"
        )
        return []
    figures = []
    for src in sources:
        panel = Panel(title=src, ylabel="accuracy")
        for idx, (run, keys) in enumerate(zip(runs, per_run, strict=True)):
            if src in keys:
                x, y = run.series(keys[src])
                panel.lines.append(Line(run=run.label, run_index=idx, metric=keys[src], x=x, y=y))
            else:
                warnings.append(f"{run.label}: no validation metric for {src}, left out of val_{_safe_name(src)}.png")
        figures.append(FigureData(name=f"val_{_safe_name(src)}", title=f"Validation accuracy: {src}", panels=[panel]))
    if len(sources) > 1:
        panel = Panel(title=f"mean over {len(sources)} benchmarks", ylabel="mean accuracy")
        for idx, (run, keys) in enumerate(zip(runs, per_run, strict=True)):
            if len(keys) < len(sources):
                continue  # an average over a different set of benchmarks would mislead
            tables = [run.metrics[k] for k in keys.values()]
            steps = sorted(set.intersection(*(set(t) for t in tables)))
            if steps:
                y = [sum(t[s] for t in tables) / len(tables) for s in steps]
                metric = "mean(" + ", ".join(sorted(keys.values())) + ")"
                panel.lines.append(Line(run=run.label, run_index=idx, metric=metric, x=steps, y=y))
        if panel.lines:
            figures.append(
                FigureData(
                    name="val_average",
                    title=f"Validation accuracy: mean over {len(sources)} benchmarks",
                    panels=[panel],
                )
            )
    return figures


def _hist_figure(runs: list[RunLog], warnings: list[str]) -> FigureData | None:
    panel = Panel(
        title="low-probability tokens", ylabel="share of sampled tokens", xlabel="pi_old probability (bin centre)"
    )
    for idx, run in enumerate(runs):
        bins = []
        for name in run.metrics:
            m = LOW_PROB_HIST_PATTERN.match(name)
            if m:
                bins.append((int(m["i"]), (float(m["lo"]) + float(m["hi"])) / 2, name))
        if not bins:
            continue
        bins.sort()
        steps = sorted(set.intersection(*(set(run.metrics[b[2]]) for b in bins)))
        if not steps:
            continue
        for step in dict.fromkeys((steps[0], steps[-1])):  # first and last step (once if equal)
            panel.lines.append(
                Line(
                    run=run.label,
                    run_index=idx,
                    metric="lp_reg/low_prob_hist/*",
                    x=[b[1] for b in bins],
                    y=[run.metrics[b[2]][step] for b in bins],
                    label=f"{run.label} @ step {step}",
                )
            )
    if not panel.lines:
        warnings.append("no run has lp_reg/low_prob_hist/<bin>: low_prob_hist.png skipped")
        return None
    return FigureData(name="low_prob_hist", title="Probabilities of low-probability sampled tokens", panels=[panel])


def collect_figures(runs: list[RunLog]) -> tuple[list[FigureData], list[str]]:
    """Every figure that can be drawn from these runs, as data, plus warnings.

    Raises :class:`PlotError` when no figure can be drawn at all.
    """
    if not runs:
        raise PlotError("no runs to plot")
    warnings: list[str] = []
    figures: list[FigureData] = []
    for stem, title, panels in STEP_FIGURES[:1]:  # entropy first, then validation, then the rest
        figures += _step_figure(runs, stem, title, panels, warnings)
    figures += _val_figures(runs, warnings)
    for stem, title, panels in STEP_FIGURES[1:]:
        figures += _step_figure(runs, stem, title, panels, warnings)
    hist = _hist_figure(runs, warnings)
    if hist is not None:
        figures.append(hist)
    used: dict[str, int] = {}
    for fig in figures:  # two sources may sanitise to the same file name: number them
        used[fig.name] = used.get(fig.name, 0) + 1
        if used[fig.name] > 1:
            fig.name = f"{fig.name}_{used[fig.name]}"
    if not figures:
        wanted = sorted({n for names in METRICS.values() for n in names})
        raise PlotError(
            "none of the plotted metrics is in any log: looked for "
            + ", ".join(wanted)
            + ", val-core/<data_source>/acc/mean@N and lp_reg/low_prob_hist/<bin>"
        )
    return figures, warnings


def _step_figure(runs, stem, title, panels, warnings) -> list[FigureData]:
    built = [_step_panel(runs, t, key, ylabel, stem, warnings) for t, key, ylabel in panels]
    built = [p for p in built if p is not None]
    return [FigureData(name=stem, title=title, panels=built)] if built else []


# ---------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------
def render(figures: Sequence[FigureData], output: str | os.PathLike, *, dpi: int = 120) -> list[Path]:
    """Write one PNG per figure into ``output`` (created); returns the paths.

    Uses matplotlib's object API with the Agg canvas: no display, no global pyplot state.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotError(f"drawing needs matplotlib: pip install matplotlib ({e})") from e

    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = [f"C{i}" for i in range(10)]
    paths = []
    for fig_data in figures:
        n = len(fig_data.panels)
        fig = Figure(figsize=(6.4 * n, 4.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, n, squeeze=False)[0]
        for ax, panel in zip(axes, fig_data.panels, strict=True):
            seen_run: dict[int, int] = {}
            for line in panel.lines:
                k = seen_run.get(line.run_index, 0)
                seen_run[line.run_index] = k + 1
                ax.plot(
                    line.x,
                    line.y,
                    color=colours[line.run_index % len(colours)],
                    linestyle=("-", "--", ":", "-.")[k % 4],
                    marker="o" if len(line.x) <= 40 else None,
                    markersize=3,
                    linewidth=1.4,
                    label=line.label or line.run,
                )
            ax.set_title(fig_data.title if n == 1 else panel.title)
            ax.set_xlabel(panel.xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        if n > 1:
            fig.suptitle(fig_data.title)
        path = out_dir / f"{fig_data.name}.png"
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m verl_lpreg.plot",
        description="Draw the Lp-Reg paper's diagnostic figures from verl run logs "
        "(file-logger .jsonl, TensorBoard directory, or wandb .csv export).",
    )
    ap.add_argument("logs", nargs="+", metavar="LOG", help="run log: .jsonl file, TensorBoard directory or wandb .csv")
    ap.add_argument("--output", "-o", required=True, help="directory for the PNGs (created)")
    ap.add_argument("--labels", nargs="+", help="legend label per run, in order (default: run names)")
    ap.add_argument("--dpi", type=int, default=120)
    args = ap.parse_args(argv)
    try:
        runs, warnings = load_runs(args.logs, args.labels)
        figures, more = collect_figures(runs)
        warnings += more
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        paths = render(figures, args.output, dpi=args.dpi)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
