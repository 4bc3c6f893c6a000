"""Tests of verl_lpreg.reward (docs/method.md §5, §5b): extraction, math-verify equality, timeouts,
thread safety, and a run through verl 0.9.1's own reward loop with the custom function."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from verl_lpreg import reward
from verl_lpreg.reward import compute_score, last_boxed

REWARD_FILE = os.path.abspath(reward.__file__)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the answer is \\boxed{42}.", "42"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one counts
        ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),  # nested braces
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not nest
        ("\\boxed 5.", "5"),
        ("$\\boxed 17$", "17"),
        ("\\fbox{7}", "7"),
        ("\\boxed{3} and finally \\fbox{4}", "4"),
        ("\\boxed { 8 }", "8"),
        ("no box here", None),
        ("\\boxed{1} then cut off \\boxed{\\frac{1}{", None),  # unclosed last box
        ("", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    "boxed, gold",
    [
        ("\\frac12", "0.5"),
        ("\\dfrac{1}{2}", "1/2"),
        ("0.5", "\\frac{1}{2}"),
        ("(1,2]", "(1, 2]"),
        ("\\{1,2\\}", "\\{2,1\\}"),
        ("x=3", "3"),
        ("3", "x = 3"),
        ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
        ("10\\%", "10"),
        ("2, 3", reward.encode_multi_answer(["3", "2"])),  # multiple answers, any order
        ("(2,1), (1,2)", reward.encode_multi_answer(["(1,2)", "(2,1)"])),
        ("\\frac{2}{4}; 2", reward.encode_multi_answer(["2", "0.5"])),
        ("(1,2),(2,1)", "(1,2),(2,1)"),
    ],
)
def test_equivalent_answers_score_one(boxed, gold):
    out = compute_score("math500", f"Thus the answer is $\\boxed{{{boxed}}}$.", gold)
    assert out == {"score": 1.0, "acc": 1.0, "pred": boxed, "reason": "correct", "timed_out": 0.0}


@pytest.mark.parametrize(
    "boxed, gold",
    [
        ("5", "6"),
        ("(1,2]", "(1,2)"),
        ("\\frac{1}{3}", "0.33"),
        ("2", reward.encode_multi_answer(["2", "3"])),  # only one of two answers
        ("2, 4", reward.encode_multi_answer(["2", "3"])),
        ("x^2", "2x"),
    ],
)
def test_different_answers_score_zero(boxed, gold):
    out = compute_score("math500", f"\\boxed{{{boxed}}}", gold)
    assert (out["score"], out["acc"], out["reason"]) == (0.0, 0.0, "mismatch")


def test_no_boxed_answer_scores_zero_even_if_text_contains_the_answer():
    out = compute_score("aime24", "The answer is 42. Answer: 42", "42")
    assert out == {"score": 0.0, "acc": 0.0, "pred": "", "reason": "no_boxed", "timed_out": 0.0}


def test_values_are_scalars_or_strings_and_bad_inputs_never_raise():
    for args in [("x", None, "1"), ("x", "\\boxed{1}", None), ("x", "\\boxed{1}", ""), (None, "\\boxed{1}", 1)]:
        out = compute_score(*args)
        assert set(out) == {"score", "acc", "pred", "reason", "timed_out"}
        assert all(isinstance(v, (float, str)) for v in out.values())
        assert out["reason"] in reward.REASONS
    assert compute_score("x", "\\boxed{1}", None)["reason"] == "error"
    assert compute_score(None, "\\boxed{1}", 1)["reason"] == "correct"  # non-string ground truth
    assert compute_score("x", "\\boxed{3, 5}", np.array(["5", "3"]))["reason"] == "correct"  # list of answers
    assert compute_score("x", "\\boxed{3}", [])["reason"] == "error"


def test_multi_answer_encoding_is_one_implementation_and_refuses_empty_answers():
    from verl_lpreg.data_prep import core as data_prep_core

    assert data_prep_core.MULTI_ANSWER_SEP is reward.MULTI_ANSWER_SEP
    assert reward.split_multi_answer(reward.encode_multi_answer(["(1,2)", "x=3"])) == ["(1,2)", "x=3"]
    assert reward.encode_multi_answer([3, " 5 "]) == "3 ||| 5"  # numbers are text, whitespace stripped
    assert reward.split_multi_answer("7") == ["7"]
    for bad in (["1", ""], ["1", None], ["  "], []):  # dropping one would make a different problem
        with pytest.raises(ValueError, match="every answer must be a non-empty string"):
            reward.encode_multi_answer(bad)
    assert compute_score("x", "\\boxed{1}", ["1", ""])["reason"] == "error"  # not "correct"


def test_concurrent_calls_from_worker_threads():
    """verl calls the function from executor threads; math-verify's signal timeouts would break."""
    jobs = [(f"\\boxed{{\\frac{{{i}}}{{2}}}}", str(i / 2)) for i in range(24)] + [("\\boxed{1}", "2")] * 8
    with ThreadPoolExecutor(max_workers=8) as ex:
        outs = list(ex.map(lambda j: compute_score("math500", j[0], j[1]), jobs))
    assert [o["reason"] for o in outs] == ["correct"] * 24 + ["mismatch"] * 8

    seen = {}
    t = threading.Thread(target=lambda: seen.update(compute_score("x", "\\boxed{x=2}", "2")))
    t.start()
    t.join(30)
    assert seen["reason"] == "correct"


def test_pathological_answer_times_out_and_pool_recovers():
    """9^(9^(9^9)) makes sympy run for ever; the call must come back within its timeout."""
    compute_score("x", "\\boxed{1}", "1.0")  # make sure a worker is up (start-up is not timed)
    before = reward.reward_stats()
    t0 = time.monotonic()
    out = compute_score("x", "\\boxed{9^{9^{9^{9}}}}", "1", timeout_s=1.0)
    elapsed = time.monotonic() - t0
    assert out["reason"] == "timeout" and out["score"] == 0.0 and out["timed_out"] == 1.0
    assert elapsed < 3.0
    after = reward.reward_stats()
    assert after["timeout"] == before["timeout"] + 1
    assert after["worker_restarts"] >= before["worker_restarts"] + 1
    assert compute_score("x", "\\boxed{\\frac{6}{4}}", "1.5")["reason"] == "correct"


def test_worker_killed_from_outside_is_replaced_without_losing_the_score():
    compute_score("x", "\\boxed{1}", "1.0")
    pool = reward._get_pool(None)
    idle = list(pool._idle)
    for w in idle:
        os.kill(w.proc.pid, signal.SIGKILL)
    for w in idle:
        w.proc.wait()
    outs = [compute_score("x", f"\\boxed{{{i}/4}}", str(i / 4)) for i in range(len(idle) + 1)]
    assert all(o["reason"] == "correct" for o in outs)


def test_verl_reward_loop_calls_the_custom_function(tmp_path, tiny_model_path):
    """verl 0.9.1's RewardLoopWorker (the reward path of the trainer) loads this file by path
    from reward.custom_reward_function and scores a tiny DataProto; no verl code is mocked."""
    import torch
    import verl
    from omegaconf import OmegaConf, open_dict
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.metric_utils import process_validation_metrics
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    model_dir = tiny_model_path
    config = OmegaConf.load(os.path.join(os.path.dirname(verl.__file__), "trainer/config/_generated_ppo_trainer.yaml"))
    with open_dict(config):
        config.actor_rollout_ref.model.path = model_dir
        config.reward.custom_reward_function.path = REWARD_FILE
        config.reward.custom_reward_function.name = "compute_score"
        config.reward.custom_reward_function.reward_kwargs = {"timeout_s": 5.0}
    worker = RewardLoopWorker(config)
    assert type(worker.reward_manager).__name__ == "NaiveRewardManager"

    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = ["so \\boxed{\\frac12}", "hence \\boxed{3}", "no box at all", "\\boxed{x = 4}"]
    gts = ["0.5", "4", "1", "4"]
    sources = ["math500", "math500", "olympiadbench", "olympiadbench"]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    plen, rlen = 3, max(map(len, ids)) + 2
    responses = torch.full((len(ids), rlen), tok.pad_token_id)
    attention = torch.zeros(len(ids), plen + rlen, dtype=torch.long)
    attention[:, :plen] = 1
    for i, seq in enumerate(ids):
        responses[i, : len(seq)] = torch.tensor(seq)
        attention[i, plen : plen + len(seq)] = 1
    data = DataProto.from_dict(
        tensors={
            "prompts": torch.zeros(len(ids), plen, dtype=torch.long),
            "responses": responses,
            "attention_mask": attention,
        },
        non_tensors={
            "data_source": np.array(sources, dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": g} for g in gts], dtype=object),
            "extra_info": np.array([{} for _ in gts], dtype=object),
        },
    )
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    assert [o["reward_score"] for o in outputs] == [1.0, 0.0, 0.0, 1.0]
    assert [o["reward_extra_info"]["reason"] for o in outputs] == ["correct", "mismatch", "no_boxed", "correct"]

    rm_scores = resolve_reward_manager_cls(config).assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    assert rm_scores.sum(dim=1).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert rm_scores[0, len(ids[0]) - 1] == 1.0  # on the last response token

    infos = {k: [o["reward_extra_info"][k] for o in outputs] for k in outputs[0]["reward_extra_info"]}
    metrics = process_validation_metrics(sources, ["a", "b", "c", "d"], infos)
    assert metrics["math500"]["acc"]["mean@1"] == 0.5
    assert metrics["olympiadbench"]["timed_out"]["mean@1"] == 0.0
    assert "reason" not in metrics["math500"]  # strings are skipped by verl, not averaged


@pytest.mark.parametrize(
    "kwargs, env, name",
    [
        ({"timeout_s": 0}, {}, "timeout_s=0"),
        ({"timeout_s": -1.0}, {}, "timeout_s=-1.0"),
        ({"timeout_s": "abc"}, {}, "timeout_s='abc'"),
        ({"timeout_s": float("nan")}, {}, "timeout_s=nan"),
        ({"timeout_s": float("inf")}, {}, "timeout_s=inf"),
        ({}, {"VERL_LPREG_REWARD_TIMEOUT": "abc"}, "VERL_LPREG_REWARD_TIMEOUT='abc'"),
        ({}, {"VERL_LPREG_REWARD_TIMEOUT": "0"}, "VERL_LPREG_REWARD_TIMEOUT='0'"),
        ({}, {"VERL_LPREG_REWARD_WORKERS": "abc"}, "VERL_LPREG_REWARD_WORKERS='abc'"),
        ({}, {"VERL_LPREG_REWARD_WORKERS": "0"}, "VERL_LPREG_REWARD_WORKERS='0'"),
        ({"num_workers": 2.5}, {}, "num_workers=2.5"),
        ({"num_workers": -3}, {}, "num_workers=-3"),
    ],
)
def test_invalid_settings_fail_loudly_at_the_first_call(monkeypatch, kwargs, env, name):
    """Instead of scoring every response 0 ('timeout'/'error') with a warning per call."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="invalid reward setting " + re.escape(name) + ": allowed: "):
        compute_score("x", "\\boxed{1}", "2", **kwargs)
    with pytest.raises(ValueError, match="allowed: "):  # also for answers that need no worker
        compute_score("x", "no box", "2", **kwargs)


def test_valid_settings_from_keywords_and_environment(monkeypatch):
    assert reward.resolve_settings() == (reward.DEFAULT_TIMEOUT_S, None)
    monkeypatch.setenv("VERL_LPREG_REWARD_TIMEOUT", " 2.5 ")
    monkeypatch.setenv("VERL_LPREG_REWARD_WORKERS", "3")
    assert reward.resolve_settings() == (2.5, 3)
    assert reward.resolve_settings(timeout_s="7", num_workers=2) == (7.0, 2)  # the keyword wins
    monkeypatch.setenv("VERL_LPREG_REWARD_WORKERS", "")
    assert reward.resolve_settings() == (2.5, None)  # empty = default


def test_a_normal_answer_does_not_wait_behind_pathological_ones():
    """With more pathological calls in flight than base workers, a normal answer still gets a
    worker: it returns correct while every pathological call is still running."""
    compute_score("x", "\\boxed{1}", "1.0")
    pool = reward._get_pool(None)
    n_bad = pool.size + 3
    done = []
    lock = threading.Lock()

    def bad(i):
        text = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{1000000!}", "\\boxed{" + "9" * 1_000_000 + "}"][i % 3]
        out = compute_score("x", text, "7", timeout_s=30.0)
        with lock:
            done.append(("bad", out["reason"]))

    threads = [threading.Thread(target=bad, args=(i,)) for i in range(n_bad)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # the pathological calls hold their workers
    out = compute_score("x", "\\boxed{\\frac{6}{4}}", "1.5", timeout_s=30.0)
    with lock:
        done.append(("normal", out["reason"]))
    for t in threads:
        t.join(120)
    assert done[0] == ("normal", "correct"), done
    assert pool._n_workers <= pool.max_size
    reward.shutdown()  # drop the grown pool


def test_workers_exit_when_the_parent_is_sigkilled(tmp_path):
    script = (
        "import importlib.util, threading, time\n"
        f"spec = importlib.util.spec_from_file_location('r', {REWARD_FILE!r})\n"  # by path, as verl loads it
        "reward = importlib.util.module_from_spec(spec); spec.loader.exec_module(reward)\n"
        "reward.compute_score('x', '\\\\boxed{1}', '1.0')\n"
        "threading.Thread(target=reward.compute_score, args=('x', '\\\\boxed{9^{9^{9^{9}}}}', '1'),\n"
        "                 kwargs={'timeout_s': 60}, daemon=True).start()\n"
        "time.sleep(1.0)\n"
        "print('busy', flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "busy"
    children = [p for p in _pids() if _ppid(p) == parent.pid]
    assert len(children) >= 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10.0  # generous: they get SIGKILL from the kernel at once
    while time.monotonic() < deadline and any(_running(p) for p in children):
        time.sleep(0.1)
    assert not any(_running(p) for p in children)


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _ppid(pid):
    st = _stat(pid)
    return int(st[1]) if st else None


def _running(pid):
    st = _stat(pid)
    return st is not None and st[0] != "Z"
