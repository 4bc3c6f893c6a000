"""Tests of verl_lpreg.plot: reading logs, the plotted series (data, not pixels), the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from verl_lpreg import plot as P

FIXTURES = Path(__file__).parent / "fixtures" / "plot"
GRPO = FIXTURES / "grpo.jsonl"
LPREG = FIXTURES / "lp_reg.jsonl"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_jsonl(path: Path) -> dict[str, dict[int, float]]:
    """Independent reader of a verl file-logger log: metric -> {step: value}."""
    series: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        for k, v in rec["data"].items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                series.setdefault(k, {})[rec["step"]] = float(v)
    return series


def sorted_xy(table: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(table)
    return steps, [table[s] for s in steps]


def figures_by_name(paths, labels=None):
    runs, load_warnings = P.load_runs(paths, labels)
    figs, warnings = P.collect_figures(runs)
    return {f.name: f for f in figs}, load_warnings + warnings


# ---------------------------------------------------------------------------------------
# the fixture (2 runs, verl FileLogger format)
# ---------------------------------------------------------------------------------------
def test_cli_writes_nonempty_pngs(tmp_path, capsys):
    rc = P.main([str(GRPO), str(LPREG), "--output", str(tmp_path / "figs")])
    assert rc == 0
    cap = capsys.readouterr()
    expected = {
        "entropy",
        "val_aime24",
        "val_math500",
        "val_average",
        "spark_noise_freq",
        "spark_noise_prob",
        "reg_fraction",
        "low_prob",
        "low_prob_hist",
    }
    written = {p.stem for p in (tmp_path / "figs").glob("*.png")}
    assert written == expected
    for stem in expected:
        data = (tmp_path / "figs" / f"{stem}.png").read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC), stem
    assert {Path(line).stem for line in cap.out.splitlines()} == expected  # one written path per line
    # the min-p threshold is in neither log: skipped, named
    assert "lp_reg/minp_threshold_mean" in cap.err and "minp_threshold.png skipped" in cap.err
    # the truncated last line of grpo.jsonl is reported, not fatal
    assert "grpo.jsonl:7: not valid JSON" in cap.err


def test_series_equal_the_log_values():
    figs, _ = figures_by_name([GRPO, LPREG])
    logs = {"grpo": read_jsonl(GRPO), "lp_reg": read_jsonl(LPREG)}

    def lines(fig, panel=0):
        return {ln.run: ln for ln in figs[fig].panels[panel].lines}

    for run, log in logs.items():
        ln = lines("entropy")[run]
        assert ln.metric == "actor/entropy"
        assert (ln.x, ln.y) == sorted_xy(log["actor/entropy"])
        for panel, key in ((0, "lp_reg/spark_per_1k"), (1, "lp_reg/noise_per_1k")):
            ln = lines("spark_noise_freq", panel)[run]
            assert ln.metric == key and (ln.x, ln.y) == sorted_xy(log[key])
        for panel, key in ((0, "lp_reg/spark_prob_mean"), (1, "lp_reg/noise_prob_mean")):
            ln = lines("spark_noise_prob", panel)[run]
            assert (ln.x, ln.y) == sorted_xy(log[key])
        ln = lines("low_prob")[run]
        assert (ln.x, ln.y) == sorted_xy(log["lp_reg/low_prob_fraction"])
        # validation: the core mean@N, not val-aux nor maj@N
        ln = lines("val_aime24")[run]
        assert ln.metric == "val-core/aime24/acc/mean@16"
        assert (ln.x, ln.y) == sorted_xy(log["val-core/aime24/acc/mean@16"])
        ln = lines("val_math500")[run]
        assert (ln.x, ln.y) == sorted_xy(log["val-core/math500/acc/mean@1"])
        ln = lines("val_average")[run]
        a, m = log["val-core/aime24/acc/mean@16"], log["val-core/math500/acc/mean@1"]
        assert ln.x == sorted(a)
        assert ln.y == pytest.approx([(a[s] + m[s]) / 2 for s in sorted(a)])

    # reg_fraction: only the Lp-Reg run has it, under the actor/ name
    reg = lines("reg_fraction")
    assert set(reg) == {"lp_reg"}
    assert reg["lp_reg"].metric == "actor/lp_reg/reg_fraction"
    assert (reg["lp_reg"].x, reg["lp_reg"].y) == sorted_xy(logs["lp_reg"]["actor/lp_reg/reg_fraction"])


def test_runs_of_different_lengths_are_drawn_as_far_as_they_go():
    figs, _ = figures_by_name([GRPO, LPREG])
    ent = {ln.run: ln for ln in figs["entropy"].panels[0].lines}
    assert ent["grpo"].x == [1, 2, 3, 4, 5]  # step 6 was cut mid-line
    assert ent["lp_reg"].x == list(range(1, 9))
    # the colour index follows the run's position, in every figure
    assert {ln.run: ln.run_index for ln in figs["val_aime24"].panels[0].lines} == {"grpo": 0, "lp_reg": 1}


def test_low_prob_hist_first_and_last_step():
    figs, _ = figures_by_name([GRPO, LPREG])
    log = read_jsonl(LPREG)
    bins = sorted(k for k in log if k.startswith("lp_reg/low_prob_hist/"))
    assert len(bins) == 5
    lines = [ln for ln in figs["low_prob_hist"].panels[0].lines if ln.run == "lp_reg"]
    assert [ln.label for ln in lines] == ["lp_reg @ step 1", "lp_reg @ step 8"]
    assert lines[0].x == pytest.approx([0.01, 0.03, 0.05, 0.07, 0.09])
    assert lines[0].y == [log[b][1] for b in bins]
    assert lines[1].y == [log[b][8] for b in bins]


def test_labels_option_and_mismatch(tmp_path):
    figs, _ = figures_by_name([GRPO, LPREG], labels=["GRPO", "Lp-Reg"])
    assert [ln.run for ln in figs["entropy"].panels[0].lines] == ["GRPO", "Lp-Reg"]
    with pytest.raises(P.PlotError, match="--labels has 1 label"):
        P.load_runs([GRPO, LPREG], ["only-one"])


def test_same_file_name_twice_gets_parent_dir_in_label(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.jsonl").write_bytes(LPREG.read_bytes())
    runs, _ = P.load_runs([tmp_path / "a" / "metrics.jsonl", tmp_path / "b" / "metrics.jsonl"])
    assert [r.label for r in runs] == ["a/metrics", "b/metrics"]


# ---------------------------------------------------------------------------------------
# errors and warnings
# ---------------------------------------------------------------------------------------
def test_missing_file_is_an_error(tmp_path, capsys):
    rc = P.main([str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: log not found") and "nope.jsonl" in err
    with pytest.raises(P.PlotError, match="log not found: .*nope.jsonl"):
        P.load_runs([tmp_path / "nope.jsonl"])


def test_log_without_any_needed_metric_is_an_error(tmp_path, capsys):
    log = tmp_path / "other.jsonl"
    log.write_text('{"step": 1, "data": {"foo": 1.0}}\n{"step": 2, "data": {"foo": 2.0}}\n')
    rc = P.main([str(log), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "actor/entropy" in err and "lp_reg/spark_per_1k" in err and "val-core/" in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.png"))


def test_log_with_some_metrics_draws_those_and_warns(tmp_path):
    log = tmp_path / "entropy_only.jsonl"
    log.write_text("".join(json.dumps({"step": s, "data": {"actor/entropy": 1.0 / s}}) + "\n" for s in (1, 2, 3)))
    figs, warnings = figures_by_name([log])
    assert set(figs) == {"entropy"}
    text = "\n".join(warnings)
    assert "lp_reg/spark_per_1k" in text and "spark_noise_freq.png skipped" in text
    assert "actor/lp_reg/reg_fraction or lp_reg/reg_fraction" in text
    assert "val-core/<data_source>/acc/mean@N" in text
    paths = P.render(list(figs.values()), tmp_path / "o")
    assert [p.name for p in paths] == ["entropy.png"]


def test_not_a_file_logger_log(tmp_path):
    log = tmp_path / "x.jsonl"
    log.write_text('{"epoch": 1, "loss": 2}\n')
    with pytest.raises(P.PlotError, match="not a verl file-logger record"):
        P.load_runs([log])
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(P.PlotError, match="no records"):
        P.load_runs([tmp_path / "empty.jsonl"])


def test_reward_variant_acc_preferred_largest_n_and_source_with_slash(tmp_path):
    log = tmp_path / "r.jsonl"
    recs = [
        {
            "step": 0,
            "data": {"val-core/minerva/reward/mean@1": 0.2, "val-core/HuggingFaceH4/aime_2024/acc/mean@16": 0.3},
        },
        {
            "step": 8,
            "data": {
                "val-core/minerva/reward/mean@1": 0.25,
                "val-core/HuggingFaceH4/aime_2024/acc/mean@16": 0.35,
                "val-core/HuggingFaceH4/aime_2024/acc/mean@4": 0.9,
                "val-core/HuggingFaceH4/aime_2024/reward/mean@16": 0.8,
            },
        },
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    figs, _ = figures_by_name([log])
    ln = figs["val_minerva"].panels[0].lines[0]
    assert ln.metric == "val-core/minerva/reward/mean@1" and ln.y == [0.2, 0.25]
    ln = figs["val_HuggingFaceH4_aime_2024"].panels[0].lines[0]
    assert ln.metric == "val-core/HuggingFaceH4/aime_2024/acc/mean@16" and ln.y == [0.3, 0.35]
    assert figs["val_HuggingFaceH4_aime_2024"].title.endswith("HuggingFaceH4/aime_2024")


def test_reg_fraction_short_name_accepted(tmp_path):
    log = tmp_path / "r.jsonl"
    log.write_text("".join(json.dumps({"step": s, "data": {"lp_reg/reg_fraction": 0.01 * s}}) + "\n" for s in (1, 2)))
    figs, _ = figures_by_name([log])
    ln = figs["reg_fraction"].panels[0].lines[0]
    assert ln.metric == "lp_reg/reg_fraction" and ln.y == [0.01, 0.02]


# ---------------------------------------------------------------------------------------
# other log formats
# ---------------------------------------------------------------------------------------
def test_tensorboard_directory_written_by_verl(tmp_path, monkeypatch):
    from verl.utils.tracking import _TensorboardAdapter

    run_dir = tmp_path / "tensorboard_log" / "proj" / "exp1"
    monkeypatch.setenv("TENSORBOARD_DIR", str(run_dir))
    tb = _TensorboardAdapter("proj", "exp1")
    log = read_jsonl(LPREG)
    for step in range(1, 9):
        tb.log({k: v[step] for k, v in log.items() if step in v}, step=step)
    tb.finish()
    figs, _ = figures_by_name([run_dir])
    ln = figs["entropy"].panels[0].lines[0]
    assert ln.run == "exp1"
    steps, values = sorted_xy(log["actor/entropy"])
    assert ln.x == steps and ln.y == pytest.approx(values, rel=1e-6)  # TensorBoard stores float32
    ln = figs["reg_fraction"].panels[0].lines[0]
    assert ln.y == pytest.approx(sorted_xy(log["actor/lp_reg/reg_fraction"])[1], rel=1e-6)
    # the project directory holds no events itself but one run below it: fine; two runs: error
    monkeypatch.setenv("TENSORBOARD_DIR", str(run_dir.parent / "exp2"))
    tb = _TensorboardAdapter("proj", "exp2")
    tb.log({"actor/entropy": 1.0}, step=1)
    tb.finish()
    with pytest.raises(P.PlotError, match="several TensorBoard runs"):
        P.load_runs([run_dir.parent])
    with pytest.raises(P.PlotError, match="without TensorBoard event files"):
        (tmp_path / "emptydir").mkdir()
        P.load_runs([tmp_path / "emptydir"])


def test_wandb_history_csv(tmp_path):
    path = tmp_path / "my-run.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["_step", "_runtime", "actor/entropy", "lp_reg/spark_per_1k", "val-core/aime24/acc/mean@16"])
        w.writerow([1, 10.0, 0.9, 3.5, ""])
        w.writerow([2, 20.0, 0.8, 3.1, 0.25])
        w.writerow([3, 30.0, 0.7, "", ""])
    figs, _ = figures_by_name([path])
    assert figs["entropy"].panels[0].lines[0].run == "my-run"
    assert figs["entropy"].panels[0].lines[0].y == [0.9, 0.8, 0.7]
    assert figs["spark_noise_freq"].panels[0].lines[0].x == [1, 2]
    assert figs["val_aime24"].panels[0].lines[0].x == [2]


def test_wandb_panel_csv_with_two_runs(tmp_path):
    path = tmp_path / "panel.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "Step",
                "grpo - actor/entropy",
                "grpo - actor/entropy__MIN",
                "grpo - actor/entropy__MAX",
                "lpreg - actor/entropy",
                "lpreg - actor/entropy__MIN",
                "lpreg - actor/entropy__MAX",
            ]
        )
        w.writerow([1, 0.5, 0.4, 0.6, 0.55, 0.5, 0.6])
        w.writerow([2, 0.3, 0.2, 0.4, "", "", ""])
    runs, _ = P.load_runs([path], labels=None)
    assert [r.label for r in runs] == ["grpo", "lpreg"]
    figs, _ = P.collect_figures(runs)
    lines = {ln.run: ln for ln in figs[0].panels[0].lines}
    assert lines["grpo"].y == [0.5, 0.3] and lines["lpreg"].x == [1]
    with pytest.raises(P.PlotError, match="no step column"):
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        P.load_runs([bad])


def test_mixed_formats_overlay(tmp_path):
    path = tmp_path / "csvrun.csv"
    path.write_text("_step,actor/entropy\n1,0.1\n2,0.2\n")
    figs, _ = figures_by_name([LPREG, path])
    assert [ln.run for ln in figs["entropy"].panels[0].lines] == ["lp_reg", "csvrun"]


@pytest.mark.parametrize("step", ['"3"', "null", '"abc"', "1.5", "true"])
def test_non_integer_step_is_a_clear_error(tmp_path, capsys, step):
    log = tmp_path / "s.jsonl"
    log.write_text('{"step": 1, "data": {"actor/entropy": 1}}\n{"step": ' + step + ', "data": {"actor/entropy": 2}}\n')
    assert P.main([str(log), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {log}:2: step ") and "is not an integer" in err


@pytest.mark.parametrize(
    "name, content",
    [("x.jsonl", PNG_MAGIC + b"\x00\x00binary"), ("x.jsonl", b"\xff\xfe{}"), ("x.csv", b"\xff\xfe\x00a,b")],
)
def test_binary_file_is_a_clear_error(tmp_path, capsys, name, content):
    log = tmp_path / name
    log.write_bytes(content)
    assert P.main([str(log), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {log}")
    assert "binary data" in err or "not UTF-8" in err or "not a CSV text file" in err
    assert "Traceback" not in err


def test_resumed_run_is_one_run(tmp_path):
    """First part logged steps 0-3 but checkpointed at 2; the resume re-validates step 2 and goes on."""
    log = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "data": {"actor/entropy": 10.0 + s}} for s in range(4)]
    lines[2]["data"]["val-core/aime24/acc/mean@1"] = 0.25
    lines += [{"resumed_from": 2}, {"step": 2, "data": {"val-core/aime24/acc/mean@1": 0.25}}]
    lines += [{"step": s, "data": {"actor/entropy": 20.0 + s}} for s in (3, 4, 5)]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    history = P.read_history(log)
    assert [s for s, _ in history] == [0, 1, 2, 3, 4, 5]  # one row per step
    assert history[2][1] == {"actor/entropy": 12.0, "val-core/aime24/acc/mean@1": 0.25}
    figs, _ = figures_by_name([log])
    (line,) = figs["entropy"].panels[0].lines
    assert line.x == [0, 1, 2, 3, 4, 5] and line.y == [10.0, 11.0, 12.0, 23.0, 24.0, 25.0]
