"""Tests of verl_lpreg.evaluate (docs/method.md §5): scoring fixture responses with known answers, and
generating with a tiny random Qwen2 on CPU (hf backend) in the paper's protocol."""

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from verl_lpreg.data_prep import DATASETS
from verl_lpreg.data_prep.core import PASSTHROUGH_CHAT_TEMPLATE, prepare

from verl_lpreg import evaluate
from verl_lpreg.evaluate import PROTOCOL, main, render_prompt_text, results_table, row_template

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _to_parquet(jsonl: Path, out: Path) -> str:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    pq.write_table(pa.Table.from_pylist(rows), out)
    return str(out)


def test_protocol_is_the_papers():
    assert PROTOCOL["aime24"] == PROTOCOL["aime25"] == evaluate.SamplingSpec(n=16, temperature=0.6, top_p=1.0)
    for name in ("math500", "minerva", "olympiadbench"):
        assert PROTOCOL[name] == evaluate.SamplingSpec(n=1, temperature=0.0, top_p=1.0)


def test_score_fixture_responses(tmp_path, capsys):
    files = [
        _to_parquet(FIXTURES / "evaluate" / f"{n}_responses.jsonl", tmp_path / f"{n}.parquet")
        for n in ("aime24", "math500", "olympiadbench")
    ]
    out = tmp_path / "results"
    assert main(["score", "--responses", *files, "--output", str(out), "--workers", "2"]) == 0
    summary = json.loads((out / "results.json").read_text())
    # aime24: problem 1 right in 2 of 4 samples (\frac{2}{2} = 1), problem 2 never: avg@4 25, pass@4 50
    assert summary["aime24"] == {
        "accuracy": 25.0,
        "n_problems": 2,
        "n_samples": 4,
        "n_responses": 8,
        "pass@4": 50.0,
        "timeouts": 0,
    }
    # math500: (3, pi/2) == \left( 3, \frac{\pi}{2} \right), 0.5 == \frac12, 5 != 4
    assert summary["math500"] == {
        "accuracy": pytest.approx(200 / 3, abs=1e-3),
        "n_problems": 3,
        "n_samples": 1,
        "n_responses": 3,
        "timeouts": 0,
    }
    # olympiadbench: "5, 3" matches the two-answer ground truth "3 ||| 5"; "(2,1)" is half of a set
    assert summary["olympiadbench"]["accuracy"] == 50.0 and "pass@1" not in summary["olympiadbench"]
    assert summary["average"] == pytest.approx((25.0 + 200 / 3 + 50.0) / 3, abs=1e-3)
    md = (out / "results.md").read_text()
    assert md.splitlines() == [
        "| AIME24 | AIME25 | MATH-500 | Minerva | Olympiad | Avg. |",
        "|---|---|---|---|---|---|",
        "| 25.00 | - | 66.67 | - | 50.00 | 47.22 |",
    ]
    captured = capsys.readouterr()
    assert md in captured.out and "scoring 13/13 responses" in captured.err


def test_results_table_appends_unknown_benchmarks():
    md = results_table({"aime24": {"accuracy": 10.0}, "gsm8k": {"accuracy": 90.0}, "average": 50.0})
    assert md.splitlines()[0] == "| AIME24 | AIME25 | MATH-500 | Minerva | Olympiad | gsm8k | Avg. |"
    assert md.splitlines()[2] == "| 10.00 | - | - | - | - | 90.00 | 50.00 |"


def test_score_errors_name_the_file_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"data_source": "aime24", "reward_model": {"ground_truth": "1"}}]), bad)
    assert main(["score", "--responses", str(bad), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad} has no column 'responses'; columns found: data_source, reward_model" in err
    assert main(["score", "--responses", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "r")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "r" / "results.json").exists()


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    return tiny_model_path


def test_prompts_are_rendered_as_in_training(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    r1, chat = tmp_path / "r1.parquet", tmp_path / "chat.parquet"
    prepare(DATASETS["math500"], str(r1), source=str(FIXTURES / "data_prep" / "math500.jsonl"), limit=1)
    prepare(
        DATASETS["math500"], str(chat), source=str(FIXTURES / "data_prep" / "math500.jsonl"), limit=1, template="chat"
    )
    r1_row, chat_row = pq.read_table(r1).to_pylist()[0], pq.read_table(chat).to_pylist()[0]
    assert row_template(r1_row, None) == "r1" and row_template(chat_row, None) == "chat"
    no_tag = {**r1_row, "extra_info": {}}
    assert row_template(no_tag, None) == "r1" and row_template(no_tag, "chat") == "chat"
    content = r1_row["prompt"][0]["content"]
    assert render_prompt_text(tok, r1_row["prompt"], "r1") == content  # verbatim, ends with <think>
    chat_text = chat_row["prompt"][0]["content"]
    assert render_prompt_text(tok, chat_row["prompt"], "chat") == (
        f"<|im_start|>user\n{chat_text}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tok.apply_chat_template(r1_row["prompt"], chat_template=PASSTHROUGH_CHAT_TEMPLATE, tokenize=False) == content


def test_generate_with_tiny_model_on_cpu_then_score(tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    aime = data / "aime24.parquet"
    math = data / "math500.parquet"
    prepare(DATASETS["aime24"], str(aime), source=str(FIXTURES / "data_prep" / "aime24.jsonl"))
    prepare(DATASETS["math500"], str(math), source=str(FIXTURES / "data_prep" / "math500.jsonl"), template="chat")
    gen = tmp_path / "gen"
    argv = [
        "generate",
        "--model",
        tiny_model,
        "--data",
        str(aime),
        str(math),
        "--output-dir",
        str(gen),
        "--backend",
        "hf",
        "--max-new-tokens",
        "6",
        "--limit",
        "2",
    ]
    assert main(argv) == 0

    aime_out = pq.read_table(gen / "aime24.parquet")
    rows = aime_out.to_pylist()
    assert len(rows) == 2 and aime_out.column_names[-1] == "responses"
    assert all(len(r["responses"]) == 16 and all(isinstance(t, str) for t in r["responses"]) for r in rows)
    assert len(set(rows[0]["responses"])) > 1  # sampled at temperature 0.6
    src = pq.read_table(aime).to_pylist()
    assert [{k: v for k, v in r.items() if k != "responses"} for r in rows] == src  # input rows kept
    meta = json.loads(aime_out.schema.metadata[evaluate.METADATA_KEY])
    assert meta["sampling"]["aime24"] == {"n": 16, "temperature": 0.6, "top_p": 1.0, "template": "r1"}
    assert meta["backend"] == "hf" and meta["max_new_tokens"] == 6

    math_rows = pq.read_table(gen / "math500.parquet").to_pylist()
    assert len(math_rows) == 2 and all(len(r["responses"]) == 1 for r in math_rows)
    meta = json.loads(pq.read_table(gen / "math500.parquet").schema.metadata[evaluate.METADATA_KEY])
    assert meta["sampling"]["math500"] == {"n": 1, "temperature": 0.0, "top_p": 1.0, "template": "chat"}

    again = tmp_path / "again"
    assert main(argv[:7] + [str(again)] + argv[8:]) == 0  # greedy is deterministic
    assert pq.read_table(again / "math500.parquet").to_pylist() == math_rows

    assert (
        main(
            [
                "score",
                "--responses",
                str(gen / "aime24.parquet"),
                str(gen / "math500.parquet"),
                "--output",
                str(tmp_path / "res"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "res" / "results.json").read_text())
    assert summary["aime24"]["n_samples"] == 16 and "pass@16" in summary["aime24"]
    assert summary["math500"]["n_problems"] == 2 and summary["math500"]["n_samples"] == 1
    assert os.path.exists(tmp_path / "res" / "results.md")


def test_generate_refuses_to_overwrite_its_input(tmp_path, tiny_model, capsys):
    data = tmp_path / "aime24.parquet"
    prepare(DATASETS["aime24"], str(data), source=str(FIXTURES / "data_prep" / "aime24.jsonl"))
    assert (
        main(["generate", "--model", tiny_model, "--data", str(data), "--output-dir", str(tmp_path), "--backend", "hf"])
        == 2
    )
    assert "would overwrite the input" in capsys.readouterr().err


def _response_rows(n=3, **changes):
    rows = [
        {
            "data_source": "math500",
            "reward_model": {"style": "rule", "ground_truth": str(i)},
            "extra_info": {"index": i},
            "responses": [f"\\boxed{{{i}}}"],
        }
        for i in range(n)
    ]
    for i, row_changes in changes.items():
        rows[int(i[1:])].update(row_changes)
    return rows


def test_score_refuses_a_string_responses_column(tmp_path, capsys):
    """Scored character by character it gave pass@61 from 3 problems; now an error naming the file."""
    bad = tmp_path / "strings.parquet"
    rows = [{**r, "responses": r["responses"][0] + " and some more text"} for r in _response_rows()]
    pq.write_table(pa.Table.from_pylist(rows), bad)
    assert main(["score", "--responses", str(bad), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: column 'responses' has type string in all 3 rows; it must be a list of strings per row" in err
    assert not (tmp_path / "r").exists()


def test_score_refuses_null_ground_truths_naming_the_rows(tmp_path, capsys):
    bad = tmp_path / "nogt.parquet"
    rows = _response_rows(4, r1={"reward_model": {"style": "rule", "ground_truth": None}}, r3={"reward_model": None})
    pq.write_table(pa.Table.from_pylist(rows), bad)
    assert main(["score", "--responses", str(bad), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: rows 1, 3 (of 4) have no ground truth (reward_model.ground_truth is null or empty)" in err


def test_score_names_the_problems_without_responses(tmp_path, capsys):
    bad = tmp_path / "noresp.parquet"
    pq.write_table(pa.Table.from_pylist(_response_rows(3, r2={"responses": []}, r0={"responses": None})), bad)
    assert main(["score", "--responses", str(bad), "--output", str(tmp_path / "r")]) == 2
    assert f"{bad}: rows 0, 2 (of 3) have no responses" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_score_refuses_an_invalid_timeout(tmp_path, capsys, timeout):
    good = tmp_path / "g.parquet"
    pq.write_table(pa.Table.from_pylist(_response_rows()), good)
    argv = ["score", "--responses", str(good), "--output", str(tmp_path / "r"), "--timeout", timeout]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "invalid reward setting timeout_s=" in err and "finite number of seconds > 0" in err


def test_score_output_under_a_file_is_an_error_and_outputs_get_umask_permissions(tmp_path, capsys):
    good = tmp_path / "g.parquet"
    pq.write_table(pa.Table.from_pylist(_response_rows()), good)
    (tmp_path / "afile").write_text("x")
    assert main(["score", "--responses", str(good), "--output", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert f"--output {tmp_path / 'afile'} is a file, not a directory" in err
    old = os.umask(0o022)
    try:
        assert main(["score", "--responses", str(good), "--output", str(tmp_path / "r"), "--workers", "1"]) == 0
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "r" / "results.json").st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path / "r")) == ["results.json", "results.md"]


def test_generate_with_a_missing_local_model_path_says_not_found(tmp_path, capsys):
    data = tmp_path / "aime24.parquet"
    prepare(DATASETS["aime24"], str(data), source=str(FIXTURES / "data_prep" / "aime24.jsonl"))
    missing = str(tmp_path / "ckpts" / "global_step_100" / "hf")
    assert main(["generate", "--model", missing, "--data", str(data), "--output-dir", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert f"--model {missing}: not found" in err and "Repo id" not in err


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_generate_with_a_hub_id_offline_fails_fast(tmp_path, env):
    """HF_HUB_OFFLINE=1 or an unreachable hub, the model not cached: a clear error, not a minute of retries."""
    import subprocess
    import sys

    data = tmp_path / "aime24.parquet"
    prepare(DATASETS["aime24"], str(data), source=str(FIXTURES / "data_prep" / "aime24.jsonl"))
    argv = ["generate", "--model", "nobody/no-such-model", "--data", str(data), "--output-dir", str(tmp_path / "g")]
    offline_vars = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")
    full_env = {k: v for k, v in os.environ.items() if k not in offline_vars}
    full_env.update(HF_HOME=str(tmp_path / "hf"), **env)
    proc = subprocess.run(
        [sys.executable, "-m", "verl_lpreg.evaluate", *argv], env=full_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    why = "offline (HF_HUB_OFFLINE=1" if "HF_HUB_OFFLINE" in env else "the hub (http://127.0.0.1:9) is unreachable"
    assert f"--model nobody/no-such-model: {why}" in proc.stderr and "not in the local cache" in proc.stderr
    assert "Traceback" not in proc.stderr
