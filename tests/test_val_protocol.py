"""The paper's validation protocol inside training (verl_lpreg.val_protocol, docs/method.md §8).

Unit tests on verl's real config and dataset, then one run of verl's real trainer on CPU
(examples/quickstart/run_cpu.sh, one step of the 80/20 baseline) whose validation files are
written by data_prep from the fixtures: AIME24 rows get 16 sampled responses, MATH-500 rows one
greedy response, under verl's own metric names. About 2 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from verl_lpreg.data_prep import DATASETS
from verl_lpreg.data_prep.core import prepare

from verl_lpreg.evaluate import PROTOCOL, SamplingSpec
from verl_lpreg.testing.trainer_config import compose_trainer_config
from verl_lpreg.val_protocol import AGENT_NAME, ValidationProtocol, annotate_val_dataset

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "data_prep"


def _compose(*overrides):
    from verl_lpreg.integration.registry import register_resolvers

    register_resolvers()
    return compose_trainer_config(*overrides)


@pytest.fixture(scope="module")
def val_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("val")
    paths = {}
    for name in ("aime24", "math500"):
        paths[name] = out / f"{name}.parquet"
        prepare(DATASETS[name], str(paths[name]), source=str(FIXTURES / f"{name}.jsonl"))
    return paths


def test_default_is_the_papers_protocol_and_the_yaml_shows_it():
    assert ValidationProtocol().benchmarks == PROTOCOL
    assert PROTOCOL["aime24"] == PROTOCOL["aime25"] == SamplingSpec(n=16, temperature=0.6, top_p=1.0)
    assert {PROTOCOL[s] for s in ("math500", "minerva", "olympiadbench")} == {SamplingSpec(1, 0.0, 1.0)}
    cfg = _compose()
    assert ValidationProtocol.from_config(cfg.lp_reg_validation) == ValidationProtocol()
    assert ValidationProtocol.from_config(None) == ValidationProtocol()  # stock verl config: the default


@pytest.mark.parametrize(
    "override, message",
    [
        ("lp_reg_validation.benchmarks.aime24.n=0", "lp_reg_validation.benchmarks.aime24.n=0 is not allowed"),
        ("lp_reg_validation.benchmarks.math500.temperature=-0.1", "benchmarks.math500.temperature=-0.1"),
        ("lp_reg_validation.benchmarks.minerva.top_p=0", "lp_reg_validation.benchmarks.minerva.top_p=0"),
        ("lp_reg_validation.enable=maybe", "lp_reg_validation.enable must be true or false"),
        ("+lp_reg_validation.benchmarks.aime24.top_k=5", "benchmarks.aime24: unknown key(s) ['top_k']"),
        ("+lp_reg_validation.n=4", "unknown key(s) ['n'] in lp_reg_validation"),
    ],
)
def test_invalid_settings_fail_at_start_up_naming_the_key(override, message):
    from verl_lpreg.integration.checks import check_config

    cfg = _compose(override)
    with pytest.raises(ValueError) as err:
        check_config(cfg)
    assert message in str(err.value)


def _dataset(cfg, files, tokenizer):
    from verl.trainer.ppo.utils import create_rl_dataset

    return create_rl_dataset([str(f) for f in files], cfg.data, tokenizer, None, is_train=False)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def test_rows_carry_their_benchmarks_n_and_agent_loop(val_files, tokenizer):
    """One file per benchmark or one file with both: each row gets its data_source's setting."""
    cfg = _compose("actor_rollout_ref.rollout.val_kwargs.n=3", "data.max_prompt_length=4096")
    ds = _dataset(cfg, [val_files["aime24"], val_files["math500"]], tokenizer)
    applied = annotate_val_dataset(ds, cfg)
    assert applied == {"aime24": PROTOCOL["aime24"], "math500": PROTOCOL["math500"]}
    rows = [ds[i] for i in range(len(ds))]
    by_source = {(r["data_source"], r["__rollout_n__"], r["agent_name"]) for r in rows}
    assert by_source == {("aime24", 16, AGENT_NAME), ("math500", 1, AGENT_NAME)}
    assert len(rows) == 5  # 2 + 3 fixture problems

    # a benchmark outside the protocol keeps verl's val_kwargs and default agent loop
    cfg = _compose(
        "actor_rollout_ref.rollout.val_kwargs.n=3",
        "data.max_prompt_length=4096",
        "~lp_reg_validation.benchmarks.math500",
    )
    ds = _dataset(cfg, [val_files["math500"]], tokenizer)
    assert annotate_val_dataset(ds, cfg) == {}
    assert {(ds[i]["__rollout_n__"], ds[i]["agent_name"]) for i in range(len(ds))} == {(3, "single_turn_agent")}

    # switched off: the rows are verl's own
    cfg = _compose("lp_reg_validation.enable=false", "data.max_prompt_length=4096")
    ds = _dataset(cfg, [val_files["aime24"]], tokenizer)
    assert annotate_val_dataset(ds, cfg) == {}
    assert "__rollout_n__" not in ds[0] and "agent_name" not in ds[0]


def test_unknown_benchmark_name_fails_naming_the_key(val_files, tokenizer):
    cfg = _compose("+lp_reg_validation.benchmarks.aime_24={n: 16, temperature: 0.6, top_p: 1.0}")
    ds = _dataset(cfg, [val_files["aime24"]], tokenizer)
    with pytest.raises(ValueError, match=r"lp_reg_validation.benchmarks.aime_24: unknown benchmark.*aime24"):
        annotate_val_dataset(ds, cfg)
    # a data source of the validation files is a known name, even if data_prep does not write it
    ValidationProtocol(benchmarks={"my_bench": {"n": 2, "temperature": 1.0, "top_p": 1.0}}).check_names({"my_bench"})


def test_rows_that_already_choose_their_agent_loop_are_refused(tmp_path, val_files, tokenizer):
    import pyarrow.parquet as pq

    table = pq.read_table(val_files["math500"])
    table = table.append_column("agent_name", [["tool_agent"] * table.num_rows])
    pq.write_table(table, tmp_path / "own.parquet")
    cfg = _compose()
    ds = _dataset(cfg, [tmp_path / "own.parquet"], tokenizer)
    with pytest.raises(ValueError, match="already set agent_name; set lp_reg_validation.enable=false"):
        annotate_val_dataset(ds, cfg)


class RecordingAgentLoop:
    """A registered agent loop (verl's registry, hydra instantiation) that returns what it was given."""

    def __init__(self, trainer_config, **kwargs):
        self.kwargs = kwargs

    async def run(self, sampling_params, **kwargs):
        return {"sampling_params": sampling_params, "row": kwargs, "init": sorted(self.kwargs)}


def test_agent_loop_runs_the_default_loop_with_the_benchmarks_sampling():
    import asyncio

    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, _agent_loop_registry, register

    import verl_lpreg.integration.registry as registry

    registry.register_agent_loop()
    assert _agent_loop_registry[AGENT_NAME] == {"_target_": "verl_lpreg.val_protocol.ValidationProtocolAgentLoop"}
    register("lp_reg_test_recording")(RecordingAgentLoop)
    cfg = _compose("actor_rollout_ref.rollout.agent.default_agent_loop=lp_reg_test_recording")
    import hydra

    loop = hydra.utils.instantiate(
        _agent_loop_registry[AGENT_NAME], trainer_config=DictConfigWrap(cfg), server_manager=None, tokenizer=None
    )
    val_params = {"temperature": 1.0, "top_p": 0.9, "top_k": 7, "logprobs": False}
    for source, temperature in (("aime24", 0.6), ("math500", 0.0)):
        got = asyncio.run(loop.run(dict(val_params), data_source=source, raw_prompt=["p"]))
        assert got["sampling_params"] == {**val_params, "temperature": temperature, "top_p": 1.0}
        assert got["row"] == {"data_source": source, "raw_prompt": ["p"]}
        assert got["init"] == ["server_manager", "tokenizer"]  # the default loop gets the same arguments


# --------------------------------------------------------------------------- through the trainer


@pytest.mark.e2e
def test_protocol_through_verls_trainer(tmp_path, val_files):
    """AIME24: 16 sampled responses a problem (mean@16); MATH-500: one greedy response (mean@1),
    although verl's global val_kwargs ask for 2 responses at temperature 1. One step of the 80/20
    baseline with its default (current entropy per micro-batch) runs in the same trainer."""
    pytest.importorskip("ray")
    out, dump = tmp_path / "run", tmp_path / "val_dump"
    env = dict(os.environ)
    env.update(STEPS="1", OUT_DIR=str(out), PYTHON=sys.executable, WARMUP_STEPS="20", BATCH="8", N="4")
    env["LOSS_MODE"] = "high_entropy"
    overrides = [
        f"data.val_files=[{val_files['aime24']},{val_files['math500']}]",
        "data.max_prompt_length=1024",
        "actor_rollout_ref.rollout.val_kwargs.n=2",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
        f"trainer.validation_data_dir={dump}",
    ]
    script = REPO / "examples" / "quickstart" / "run_cpu.sh"
    proc = subprocess.run(
        ["bash", str(script), *overrides], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    log = out / "train.log"
    tail = log.read_text()[-6000:] if log.exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + tail
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = {r["step"]: r["data"] for r in records if any(k.startswith("val-core/") for k in r["data"])}
    assert sorted(val) == [0, 1]
    for data in val.values():
        core = {k for k in data if k.startswith("val-core/") and "/mean@" in k}
        assert core == {"val-core/aime24/acc/mean@16", "val-core/math500/acc/mean@1"}, core
    # the dumped generations: 16 per AIME problem, sampled (not all the same); one per MATH-500 problem
    lines = [json.loads(line) for line in (dump / "0.jsonl").read_text().splitlines() if line.strip()]
    per_prompt: dict[str, list[str]] = {}
    for line in lines:
        per_prompt.setdefault(line["input"], []).append(line["output"])
    assert sorted(len(o) for o in per_prompt.values()) == [1, 1, 1, 16, 16]
    assert all(len(set(o)) > 1 for o in per_prompt.values() if len(o) == 16), "AIME responses are not sampled"
    # the 80/20 default ranked the update's entropy in each micro-batch: about a fifth of the tokens
    train = [r["data"] for r in records if "actor/high_entropy_token_frac" in r["data"]]
    assert train and 0.15 <= train[0]["actor/high_entropy_token_frac"] <= 0.2
