"""Tests of data_prep (docs/method.md §4, §5b) on the committed fixtures (tests/fixtures/data_prep/),
which follow each source's real schema."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from verl_lpreg.data_prep import DATASETS
from verl_lpreg.data_prep.__main__ import main
from verl_lpreg.data_prep.core import (
    BOXED_INSTRUCTION,
    DATA_SOURCES,
    PASSTHROUGH_CHAT_TEMPLATE,
    R1_PREFIX,
    R1_SUFFIX,
    DataPrepError,
    prepare,
)
from verl_lpreg.data_prep.dapo_math import DAPO_PREFIX, DAPO_SUFFIX

from verl_lpreg import data_prep

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data_prep"
REPO = Path(__file__).resolve().parents[2]


def _rows(path):
    return pq.read_table(path).to_pylist()


def _jsonl(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def test_registry_names_and_data_sources():
    assert list(DATASETS) == ["dapo-math-17k", "aime24", "aime25", "math500", "minerva", "olympiadbench"]
    assert [s.data_source for s in DATASETS.values()] == list(DATA_SOURCES)
    assert data_prep.PASSTHROUGH_CHAT_TEMPLATE is PASSTHROUGH_CHAT_TEMPLATE


@pytest.mark.parametrize(
    "name, fixture, n, gts",
    [
        ("aime24", "aime24.jsonl", 2, ["1", "9"]),
        ("aime25", "aime25.jsonl", 2, ["70", "24"]),
        ("math500", "math500.jsonl", 3, ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\frac{1}{2}", "4"]),
        ("minerva", "minerva.jsonl", 2, ["1.6", "2000"]),
        ("olympiadbench", "olympiadbench.jsonl", 4, ["\\frac{1}{2}", "(1,2),(2,1)", "3 ||| 5", "16"]),
    ],
)
def test_benchmarks_in_verl_layout(tmp_path, name, fixture, n, gts):
    out = tmp_path / f"{name}.parquet"
    report = prepare(DATASETS[name], str(out), source=str(FIXTURES / fixture))
    rows = _rows(out)
    assert report.written == len(rows) == n
    assert [r["reward_model"] for r in rows] == [{"style": "rule", "ground_truth": g} for g in gts]
    source_rows = [r for r in _jsonl(fixture) if r.get("final_answer", [1])]
    for i, (row, src) in enumerate(zip(rows, source_rows, strict=True)):
        assert list(row) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        assert row["data_source"] == DATASETS[name].data_source and row["ability"] == "math"
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
        info = row["extra_info"]
        assert (info["split"], info["index"], info["template"]) == ("test", i, "r1")
        problem = src.get("problem") or src.get("question")
        assert info["problem"].endswith(problem)
        content = row["prompt"][0]["content"]
        assert content == f"{R1_PREFIX}{info['problem']}\n{BOXED_INSTRUCTION}{R1_SUFFIX}"
        json.loads(info["metadata"])
    if name == "math500":
        assert rows[0]["extra_info"]["source_id"] == "test/precalculus/807.json"
        assert json.loads(rows[0]["extra_info"]["metadata"]) == {"level": 2, "subject": "Precalculus"}
    if name == "aime24":
        assert [r["extra_info"]["source_id"] for r in rows] == ["60", "61"]


def test_r1_prompt_is_the_reference_text_and_chat_prompt_is_plain(tmp_path):
    r1, chat = tmp_path / "r1.parquet", tmp_path / "chat.parquet"
    prepare(DATASETS["aime24"], str(r1), source=str(FIXTURES / "aime24.jsonl"))
    prepare(DATASETS["aime24"], str(chat), source=str(FIXTURES / "aime24.jsonl"), template="chat")
    problem = _jsonl("aime24.jsonl")[0]["problem"]
    r1_text = _rows(r1)[0]["prompt"][0]["content"]
    assert r1_text.startswith(
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it."
    )
    assert f"User: {problem}\n" in r1_text and "\\boxed{}" in r1_text
    assert r1_text.endswith("Assistant: Let me solve this step by step.\n<think>")
    chat_rows = _rows(chat)
    assert chat_rows[0]["prompt"][0]["content"] == f"{problem}\n\n{BOXED_INSTRUCTION}."
    assert chat_rows[0]["extra_info"]["template"] == "chat"


def test_passthrough_chat_template_renders_the_content_verbatim(tmp_path, tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    out = tmp_path / "a.parquet"
    prepare(DATASETS["aime24"], str(out), source=str(FIXTURES / "aime24.jsonl"))
    messages = _rows(out)[0]["prompt"]
    text = tok.apply_chat_template(
        messages, chat_template=PASSTHROUGH_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert text == messages[0]["content"]
    assert tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) != text  # ChatML differs


def test_dapo_raw_strips_wrapper_and_dedups_stably(tmp_path, capsys):
    out = tmp_path / "dapo.parquet"
    report = prepare(DATASETS["dapo-math-17k"], str(out), source=str(FIXTURES / "dapo_raw.jsonl"))
    raw = _jsonl("dapo_raw.jsonl")
    rows = _rows(out)
    assert (report.read, report.duplicates, report.written) == (6, 3, 3)
    assert "3 duplicate problems dropped (3 unique)" in report.summary()
    first_seen = []
    for r in raw:
        text = r["prompt"][0]["content"]
        assert text.startswith(DAPO_PREFIX) and text.endswith(DAPO_SUFFIX)
        bare = text[len(DAPO_PREFIX) : -len(DAPO_SUFFIX)]
        if bare not in [b for b, _, _ in first_seen]:
            first_seen.append((bare, r["reward_model"]["ground_truth"], r["extra_info"]["index"]))
    assert [
        (r["extra_info"]["problem"], r["reward_model"]["ground_truth"], r["extra_info"]["source_id"]) for r in rows
    ] == first_seen
    for r in rows:
        content = r["prompt"][0]["content"]
        assert "Answer: $Answer" not in content and "Remember to put your answer" not in content
        assert r["data_source"] == "dapo_math_17k" and r["extra_info"]["split"] == "train"


def test_dapo_processed_schema_gives_the_same_problems(tmp_path):
    a, b = tmp_path / "raw.parquet", tmp_path / "processed.parquet"
    prepare(DATASETS["dapo-math-17k"], str(a), source=str(FIXTURES / "dapo_raw.jsonl"))
    prepare(DATASETS["dapo-math-17k"], str(b), source=str(FIXTURES / "dapo_processed.jsonl"))
    assert _rows(a) == _rows(b)


def test_parquet_source_limit_and_deterministic_output(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(pa.Table.from_pylist(_jsonl("dapo_raw.jsonl")), src)
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    prepare(DATASETS["dapo-math-17k"], str(one), source=str(src), limit=2)
    prepare(DATASETS["dapo-math-17k"], str(two), source=str(src), limit=2)
    assert one.read_bytes() == two.read_bytes()
    assert len(_rows(one)) == 2


def test_empty_answers_are_skipped_and_reported(tmp_path, capsys):
    out = tmp_path / "o.parquet"
    report = prepare(DATASETS["olympiadbench"], str(out), source=str(FIXTURES / "olympiadbench.jsonl"))
    assert report.skipped_no_answer == ["2003"]
    assert "skipped 1 rows without an answer (ids: 2003)" in capsys.readouterr().err
    assert "2003" not in [r["extra_info"]["source_id"] for r in _rows(out)]


def test_no_usable_row_is_an_error_and_writes_nothing(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"problem": "What is 1+1?", "answer": ""}) + "\n")
    out = tmp_path / "o.parquet"
    with pytest.raises(DataPrepError, match="no usable row"):
        prepare(DATASETS["aime24"], str(out), source=str(src))
    assert not out.exists()


def test_hub_sources_use_the_spec_ids_configs_and_both_aime25_halves(tmp_path, monkeypatch):
    """`all` loads each default Hub id with the config/split of docs/method.md §5b (datasets is faked)."""
    import datasets

    files = {
        ("open-r1/DAPO-Math-17k-Processed", "all", "train"): "dapo_processed.jsonl",
        ("HuggingFaceH4/aime_2024", None, "train"): "aime24.jsonl",
        ("math-ai/aime25", None, "test"): "aime25.jsonl",
        ("HuggingFaceH4/MATH-500", None, "test"): "math500.jsonl",
        ("math-ai/minervamath", None, "test"): "minerva.jsonl",
        ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"): "olympiadbench.jsonl",
        ("opencompass/AIME2025", "AIME2025-I", "test"): "aime25_opencompass_I.jsonl",
        ("opencompass/AIME2025", "AIME2025-II", "test"): "aime25_opencompass_II.jsonl",
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return datasets.Dataset.from_list(_jsonl(files[(path, name, split)]))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert main(["all", "--output-dir", str(tmp_path / "all"), "--limit", "2"]) == 0
    assert calls == list(files)[:6]
    assert sorted(os.listdir(tmp_path / "all")) == sorted(f"{s}.parquet" for s in DATA_SOURCES)
    assert len(_rows(tmp_path / "all" / "math500.parquet")) == 2

    out = tmp_path / "aime25_oc.parquet"
    assert main(["aime25", "--source", "opencompass/AIME2025", "--output", str(out)]) == 0
    rows = _rows(out)
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["12", "11", "99"]
    assert [json.loads(r["extra_info"]["metadata"])["part"] for r in rows] == ["I", "II", "II"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "o.parquet"
    out.write_bytes(b"previous good file")

    def broken_write(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        prepare(DATASETS["aime24"], str(out), source=str(FIXTURES / "aime24.jsonl"))
    assert out.read_bytes() == b"previous good file"
    assert os.listdir(tmp_path) == ["o.parquet"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["gsm8k", "--output", "X"],
            "unknown dataset 'gsm8k'; allowed: dapo-math-17k, aime24, aime25, math500, minerva, olympiadbench, all",
        ),
        (["aime24", "--source", "MISSING.jsonl", "--output", "X"], "source file not found: MISSING.jsonl"),
        (["aime24", "--source", "EMPTY.jsonl", "--output", "X"], "has no rows"),
        (["aime24", "--source", "GARBAGE.jsonl", "--output", "X"], "line 1 is not valid JSON"),
        (["aime24", "--source", "GARBAGE.parquet", "--output", "X"], "cannot read source"),
        (
            ["math500", "--source", "@minerva", "--output", "X"],
            "has no column 'problem' (needed by math500); columns found: question, answer",
        ),
        (
            ["dapo-math-17k", "--source", "@math500", "--output", "X"],
            "has no column 'prompt' (needed by dapo-math-17k); columns found: problem, solution, answer, subject, level, unique_id",
        ),
        (["aime24", "--source", "@aime24", "--output", "X", "--limit", "0"], "--limit must be >= 1"),
        (["all", "--output", "X"], "'all' takes --output-dir DIR"),
    ],
)
def test_cli_errors_name_the_problem_and_exit_nonzero(tmp_path, capsys, argv, message):
    (tmp_path / "EMPTY.jsonl").write_text("\n")
    (tmp_path / "GARBAGE.jsonl").write_text("{not json\n")
    (tmp_path / "GARBAGE.parquet").write_bytes(b"not a parquet file")
    subs = {
        "MISSING.jsonl": str(tmp_path / "MISSING.jsonl"),
        "EMPTY.jsonl": str(tmp_path / "EMPTY.jsonl"),
        "GARBAGE.jsonl": str(tmp_path / "GARBAGE.jsonl"),
        "GARBAGE.parquet": str(tmp_path / "GARBAGE.parquet"),
        "@math500": str(FIXTURES / "math500.jsonl"),
        "@minerva": str(FIXTURES / "minerva.jsonl"),
        "@aime24": str(FIXTURES / "aime24.jsonl"),
        "X": str(tmp_path / "out.parquet"),
    }
    argv = [subs.get(a, a) for a in argv]
    message = message.replace("MISSING.jsonl", subs["MISSING.jsonl"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("module", ["verl_lpreg.data_prep", "data_prep"])  # installed; in a clone
def test_cli_end_to_end_prints_the_row_count(tmp_path, module):
    out = tmp_path / "m.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            "math500",
            "--source",
            str(FIXTURES / "math500.jsonl"),
            "--output",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"math500: wrote 3 rows to {out}" in proc.stdout
    assert len(_rows(out)) == 3


def _olympiad_row(rid, final_answer):
    return {"id": rid, "question": f"Question {rid}?", "final_answer": final_answer, "context": None}


def test_integer_olympiad_answer_is_accepted_and_an_empty_one_among_several_is_an_error(tmp_path, capsys):
    src = tmp_path / "o.jsonl"
    rows = [_olympiad_row(1, 7), _olympiad_row(2, [3, "$5$"]), _olympiad_row(3, 2.5), _olympiad_row(4, [])]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.parquet"
    prepare(DATASETS["olympiadbench"], str(out), source=str(src))
    assert [r["reward_model"]["ground_truth"] for r in _rows(out)] == ["7", "3 ||| 5", "2.5"]
    assert "without an answer (ids: 4)" in capsys.readouterr().err

    src.write_text(json.dumps(_olympiad_row(9, ["$3$", ""])) + "\n" + json.dumps(_olympiad_row(10, ["1", None])) + "\n")
    assert main(["olympiadbench", "--source", str(src), "--output", str(tmp_path / "bad.parquet")]) == 2
    err = capsys.readouterr().err
    assert "row 0" in err and "every answer must be a non-empty string" in err
    assert not (tmp_path / "bad.parquet").exists()


def test_lone_surrogate_in_the_source_is_a_clear_error(tmp_path, capsys):
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": 1, "problem": "What is \\ud800 1+1?", "answer": "2"}\n')  # valid JSON, invalid text
    assert main(["aime24", "--source", str(src), "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "row 1: the problem holds '\\\\ud800'" in err and "lone surrogate" in err
    assert "Traceback" not in err and not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("where", ["dir", "under_file"])
def test_output_naming_a_directory_or_under_a_file_is_a_clear_error(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("keep")
    output = tmp_path if where == "dir" else tmp_path / "afile" / "o.parquet"
    assert main(["aime24", "--source", str(FIXTURES / "aime24.jsonl"), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    expected = "is a directory; give a file name" if where == "dir" else "afile is a file, not a directory"
    assert err.startswith("error: --output ") and expected in err
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize("source", ["aime24.parqet", "data/aime24.jsonl", "./aime", "a/b/c"])
def test_typod_relative_source_that_looks_like_a_file_is_a_missing_file_not_a_hub_id(
    tmp_path, capsys, monkeypatch, source
):
    import datasets

    def no_hub(*a, **k):
        raise AssertionError("the Hub must not be tried")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    monkeypatch.chdir(tmp_path)
    assert main(["aime24", "--source", source, "--output", "o.parquet"]) == 2
    err = capsys.readouterr().err
    assert f"source file not found: {source} (" in err and "not looked up on the Hub" in err


def test_output_permissions_follow_the_umask_and_the_replaced_file(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.parquet"
        prepare(DATASETS["aime24"], str(out), source=str(FIXTURES / "aime24.jsonl"))
        assert os.stat(out).st_mode & 0o777 == 0o644
        os.chmod(out, 0o664)
        prepare(DATASETS["aime24"], str(out), source=str(FIXTURES / "aime24.jsonl"))
        assert os.stat(out).st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
