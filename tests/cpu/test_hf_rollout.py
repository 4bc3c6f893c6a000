"""The "hf" rollout server (verl_lpreg.cpu.rollout) used directly, without Ray."""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("verl")

import torch  # noqa: E402


@pytest.fixture(scope="module")
def server_cls():
    """Import verl_lpreg.cpu (the server needs no platform) and undo its process-wide effects
    (environment, platform singleton) afterwards so that later tests in this process see none."""
    from verl.plugin.platform import platform_manager

    env = {k: os.environ.get(k) for k in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")}
    platform = platform_manager._current_platform
    from verl_lpreg.cpu.rollout import HFRolloutServer

    yield HFRolloutServer
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    platform_manager._current_platform = platform


@pytest.fixture(scope="module")
def model_dir(tiny_model_path):
    return tiny_model_path


@pytest.fixture()
def server(model_dir, server_cls):
    HFRolloutServer = server_cls
    from verl.workers.config import HFModelConfig, RolloutConfig

    cfg = RolloutConfig(name="hf", prompt_length=32, response_length=12, tensor_model_parallel_size=1, seed=3)
    return HFRolloutServer(cfg, HFModelConfig(path=model_dir), replica_rank=0)


def _prompts(model_dir, texts):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return [
        tok.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False)
        for t in texts
    ], tok


def test_batched_generate_logprobs_match_teacher_forcing(server, model_dir):
    texts, tok = _prompts(model_dir, ["What is 1 + 2?", "What is 10 - 3? Put the final answer in \\boxed{}.", "Hi"])
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]

    async def run():
        sp = {"temperature": 0.7, "top_p": 1.0, "top_k": -1, "logprobs": True}
        return await asyncio.gather(
            *[server.generate(request_id=str(i), prompt_ids=p, sampling_params=dict(sp)) for i, p in enumerate(ids)]
        )

    outs = asyncio.run(run())
    model = server.model
    for p, out in zip(ids, outs, strict=True):
        assert 1 <= len(out.token_ids) <= 12
        assert len(out.log_probs) == len(out.token_ids)
        assert out.stop_reason == "completed"
        if server.eos_ids and out.token_ids[-1] in server.eos_ids:
            assert not set(out.token_ids[:-1]) & set(server.eos_ids)
        # the returned log-probs are those of the sampled tokens at T=0.7, as the actor computes them
        full = torch.tensor([p + out.token_ids])
        with torch.no_grad():
            logits = model(full).logits[0, len(p) - 1 : -1] / 0.7
        ref = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(out.log_probs), ref, atol=1e-4, rtol=1e-4)


def test_greedy_is_deterministic_and_weights_update(server, model_dir):
    texts, tok = _prompts(model_dir, ["What is 4 + 4?"])
    p = tok(texts[0], add_special_tokens=False)["input_ids"]
    greedy = {"temperature": 0, "top_p": 1.0, "top_k": -1, "logprobs": False}

    async def gen():
        return await server.generate(request_id="g", prompt_ids=p, sampling_params=dict(greedy))

    a, b = asyncio.run(gen()), asyncio.run(gen())
    assert a.token_ids == b.token_ids and a.log_probs is None
    # greedy = argmax of teacher-forced logits
    with torch.no_grad():
        logits = server.model(torch.tensor([p + a.token_ids])).logits[0, len(p) - 1 : -1]
    assert logits.argmax(-1).tolist() == a.token_ids

    before = asyncio.run(server.get_weights_checksum())
    new_state = {k: v + 0.01 for k, v in server.model.state_dict().items() if v.is_floating_point()}
    n = asyncio.run(server.update_weights(new_state, global_steps=7))
    assert n == len(new_state)
    assert asyncio.run(server.get_weights_checksum()) != before
    out = asyncio.run(gen())
    assert out.extra_fields["global_steps"] == 7


def test_max_tokens_and_ignore_eos(server, model_dir):
    texts, tok = _prompts(model_dir, ["What is 2 + 2?"])
    p = tok(texts[0], add_special_tokens=False)["input_ids"]
    out = asyncio.run(
        server.generate(
            request_id="x", prompt_ids=p, sampling_params={"temperature": 1.0, "max_tokens": 5, "ignore_eos": True}
        )
    )
    assert len(out.token_ids) == 5
