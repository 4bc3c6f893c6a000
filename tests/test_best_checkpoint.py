"""``python -m verl_lpreg.evaluate best``: Table 1 from hand-built validation logs (jsonl, TensorBoard, wandb CSV)."""

from __future__ import annotations

import csv
import json

import pytest

from verl_lpreg import evaluate
from verl_lpreg.best_checkpoint import best_from_logs
from verl_lpreg.evaluate import EvaluateError

FIVE = ("aime24", "aime25", "math500", "minerva", "olympiadbench")
N = {"aime24": 16, "aime25": 16, "math500": 1, "minerva": 1, "olympiadbench": 1}
# step -> accuracies (fractions, as verl logs them). Averages: step 8: 0.40, 16: 0.52, 24: 0.48.
# Per-benchmark maxima fall on other steps than 16: aime24 at 24, minerva at 8.
VAL = {
    8: {"aime24": 0.10, "aime25": 0.20, "math500": 0.80, "minerva": 0.60, "olympiadbench": 0.30},
    16: {"aime24": 0.30, "aime25": 0.40, "math500": 0.90, "minerva": 0.50, "olympiadbench": 0.50},
    24: {"aime24": 0.40, "aime25": 0.30, "math500": 0.85, "minerva": 0.40, "olympiadbench": 0.45},
}


def _key(source: str) -> str:
    return f"val-core/{source}/acc/mean@{N[source]}"


def _jsonl(path, val, train_steps=()):
    lines = [json.dumps({"step": s, "data": {"actor/entropy": 0.5, "critic/score/mean": 0.1}}) for s in train_steps]
    for step, accs in val.items():
        data = {_key(s): a for s, a in accs.items()}
        data.update({f"val-aux/{s}/acc/mean@1": 0.99 for s in accs})  # never read: only val-core
        data["val-core/aime24/acc/maj@16/mean"] = 0.99  # not a mean@N key
        lines.append(json.dumps({"step": step, "data": data}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_best_average_step_is_one_checkpoint_in_percent(tmp_path):
    log = _jsonl(tmp_path / "metrics.jsonl", VAL, train_steps=range(1, 25))
    out = tmp_path / "results"
    assert evaluate.main(["best", "--log", log, "--output", str(out)]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["step"] == 16 and summary["selection"] == "best_average" and summary["missing"] == []
    for s in FIVE:
        assert summary[s]["accuracy"] == pytest.approx(100 * VAL[16][s])
        assert summary[s]["step"] == 16 and summary[s]["n_samples"] == N[s] and summary[s]["metric"] == _key(s)
    assert summary["average"] == pytest.approx(52.0)
    md = (out / "results.md").read_text()
    assert "step 16" in md
    assert "| AIME24 | AIME25 | MATH-500 | Minerva | Olympiad | Avg. |" in md
    assert "| 30.00 | 40.00 | 90.00 | 50.00 | 50.00 | 52.00 |" in md


def test_per_benchmark_max(tmp_path):
    log = _jsonl(tmp_path / "metrics.jsonl", VAL)
    summary, warnings = best_from_logs([log], per_benchmark_max=True)
    assert warnings == []
    assert summary["step"] is None and summary["selection"] == "per_benchmark_max"
    want = {"aime24": (40.0, 24), "aime25": (40.0, 16), "math500": (90.0, 16), "minerva": (60.0, 8),
            "olympiadbench": (50.0, 16)}  # fmt: skip
    assert {s: (summary[s]["accuracy"], summary[s]["step"]) for s in FIVE} == want  # rounded to 4 decimals
    assert summary["average"] == pytest.approx(sum(a for a, _ in want.values()) / 5)
    out = tmp_path / "o"
    assert evaluate.main(["best", "--log", log, "--output", str(out), "--per-benchmark-max"]) == 0
    assert "minerva step 8" in (out / "results.md").read_text()


def test_several_logs_merge_by_step_later_wins(tmp_path):
    first = _jsonl(tmp_path / "metrics.until_step16.jsonl", {8: VAL[8], 16: VAL[16]})
    resumed = {16: dict.fromkeys(FIVE, 0.0), 24: VAL[24]}  # the resumed run's step 16 replaces the first's
    second = _jsonl(tmp_path / "metrics.jsonl", resumed)
    summary, _ = best_from_logs([first, second])
    assert summary["step"] == 24 and summary["math500"]["accuracy"] == pytest.approx(85.0)
    out = tmp_path / "o"
    assert evaluate.main(["best", "--log", first, "--log", second, "--output", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["step"] == 24


def test_missing_benchmark_is_a_dash_and_a_warning(tmp_path, capsys):
    val = {s: {k: v for k, v in accs.items() if k != "minerva"} for s, accs in VAL.items()}
    log = _jsonl(tmp_path / "m.jsonl", val)
    out = tmp_path / "o"
    assert evaluate.main(["best", "--log", log, "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "minerva" in err and "not Table 1's five" in err
    summary = json.loads((out / "results.json").read_text())
    assert summary["missing"] == ["minerva"] and "minerva" not in summary
    assert summary["step"] == 16 and summary["average"] == pytest.approx(100 * (0.3 + 0.4 + 0.9 + 0.5) / 4)
    assert "| 30.00 | 40.00 | 90.00 | - | 50.00 | 52.50 |" in (out / "results.md").read_text()


def test_other_benchmarks_are_extra_columns(tmp_path):
    log = tmp_path / "qs.jsonl"
    log.write_text(
        "\n".join(
            json.dumps({"step": s, "data": {"val-core/synthetic_arith/acc/mean@1": a}})
            for s, a in ((0, 0.25), (5, 0.5), (10, 0.125))
        )  # fmt: skip
    )
    summary, warnings = best_from_logs([str(log)])
    assert summary["step"] == 5 and summary["synthetic_arith"]["accuracy"] == pytest.approx(50.0)
    assert summary["missing"] == list(FIVE) and len(warnings) == 1


def test_no_validation_metric_is_an_error(tmp_path, capsys):
    log = tmp_path / "train_only.jsonl"
    log.write_text(json.dumps({"step": 1, "data": {"actor/entropy": 0.4}}) + "\n")
    with pytest.raises(EvaluateError, match=r"no validation metric .*train_only.jsonl.*test_freq"):
        best_from_logs([str(log)])
    assert evaluate.main(["best", "--log", str(log), "--output", str(tmp_path / "o")]) == 2
    assert "error: no validation metric" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert evaluate.main(["best", "--log", str(tmp_path / "absent.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "log not found" in capsys.readouterr().err


def test_no_step_with_every_benchmark_is_an_error(tmp_path):
    log = tmp_path / "m.jsonl"
    log.write_text(
        json.dumps({"step": 8, "data": {_key("aime24"): 0.1}})
        + "\n"
        + json.dumps({"step": 16, "data": {_key("math500"): 0.5}})
        + "\n"
    )
    with pytest.raises(EvaluateError, match=r"no step at which every benchmark.*aime24: \[8\].*math500: \[16\]"):
        best_from_logs([str(log)])
    summary, _ = best_from_logs([str(log)], per_benchmark_max=True)  # each its own step: fine
    assert summary["aime24"]["step"] == 8 and summary["math500"]["step"] == 16


def test_tensorboard_and_wandb_csv_give_the_jsonl_result(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    want, _ = best_from_logs([_jsonl(tmp_path / "m.jsonl", VAL)])
    tb = tmp_path / "tensorboard_log" / "proj" / "exp"
    writer = SummaryWriter(str(tb))
    for step, accs in VAL.items():
        for s, a in accs.items():
            writer.add_scalar(_key(s), a, step)
    writer.close()
    got_tb, _ = best_from_logs([str(tb)])

    history = tmp_path / "wandb_history.csv"
    with history.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["_step", "_runtime", *map(_key, FIVE)])
        for step, accs in VAL.items():
            w.writerow([step, 1.0, *(accs[s] for s in FIVE)])
    got_csv, _ = best_from_logs([str(history)])
    for got in (got_tb, got_csv):
        assert got["step"] == want["step"] == 16
        assert {s: got[s]["accuracy"] for s in FIVE} == pytest.approx({s: want[s]["accuracy"] for s in FIVE})

    panel = tmp_path / "panel.csv"  # a wandb panel export with two runs: which one is meant?
    panel.write_text(f"Step,run_a - {_key('aime24')},run_b - {_key('aime24')}\n8,0.1,0.2\n")
    with pytest.raises(EvaluateError, match=r"holds 2 runs \(run_a, run_b\)"):
        best_from_logs([str(panel)])
