"""Lp-Reg in the layouts users run, through verl 0.9.1's real engine worker on CPU (docs/method.md §2-§3).

Each layout is one ``torch.multiprocessing.spawn`` job (as verl's own distributed CPU tests spawn
their ranks), gloo, FSDP2, remove-padding, a tiny random **Qwen3** at Qwen's vocabulary of
151,936 (hidden size 32). Every rank builds ``ActorRolloutRefWorker`` from our hydra config and
is handed the shard that verl's dispatch would give it (DP: a contiguous chunk per rank; SP: the
same data on both ranks of the group):

* ``single``: one rank, one micro-batch - the reference run for the loss and the gradients;
* ``dp2``: two FSDP2 ranks, dynamic batch size (several micro-batches of unequal length per rank)
  and one dp-balancing padding sample built by verl's own ``construct_minimal_padding_template``;
* ``sp2``: Ulysses sequence parallelism 2 (dp 1), dynamic batch size, the same padding sample;
* ``bf16``: one rank, bf16 parameters (FSDP mixed precision), dynamic batch size.

Asserted: the proxy of every response token equals ``min_p_proxy_log_prob`` of an independent
single-process forward of the same model on the same sequences (1e-5 in fp32); ``update_actor``'s
loss and gradients (one SGD step at lr 1: the parameter change is minus the gradient) equal the
single rank's where the selection does not depend on how tokens are split into micro-batches
(``selection=batch``; ``selection=micro_batch`` with rho 1), for ``dp2`` and for ``sp2``; the
padding sample (negative advantage, proxy above the policy, even marked as a candidate) changes
neither. verl's Ulysses does its all-to-all only inside flash attention; CPU runs use the harness's
attention ``verl_lpreg_ulysses_eager`` (verl_lpreg/cpu/ulysses_attention.py: eager attention, plus
verl's all-to-all and a varlen mask over the whole packed row when the SP group is larger than 1).
Under SP the log-probs and the proxy equal the single rank's (5e-5), and every rank's proxy slice,
recorded where the engine computes it, lands on its own token next to that token's log-prob.
"""

import os
from functools import partial

import pytest
import torch

from verl_lpreg.testing.process_env import free_port

pytest.importorskip("verl")

MIN_P = 0.05
HARD_FILL = -1e4
VOCAB = 151_936
# (prompt length, response length, advantage) of the real samples: unequal lengths, both signs.
SAMPLES = [(10, 30, 1.0), (6, 44, -1.0), (20, 12, -0.5), (8, 56, 0.7), (14, 22, -1.0), (5, 60, -0.3), (12, 16, 1.0)]
# max_token_len_per_gpu of the dynamic-batch layouts: verl's padding sample alone is 128 tokens.
MAX_TOKENS = 128
# name -> (world size, ulysses SP size, dynamic batch size, with the dp-balancing padding sample, dtype)
LAYOUTS = {
    "single": (1, 1, False, False, "fp32"),
    "dp2": (2, 1, True, True, "fp32"),
    "sp2": (2, 2, True, True, "fp32"),
    "bf16": (1, 1, True, False, "bf16"),
}
# loss variant -> the lp_reg overrides; both are independent of the micro-batch split
LOSS_VARIANTS = {
    "batch_selection": ("selection=batch", "neg_fraction=0.3"),
    "micro_batch_rho_1": ("selection=micro_batch", "neg_fraction=1.0"),
}


# --------------------------------------------------------------------------- inputs


def build_model(path):
    """A tiny Qwen3 at Qwen's vocabulary, untied head scaled so that the min-p filter removes tokens."""
    from transformers import AutoModelForCausalLM

    from verl_lpreg.testing.tiny_model import build_tiny_model

    build_tiny_model(path, architecture="qwen3", vocab_size=VOCAB, hidden_size=32, num_layers=2, head_dim=16, seed=0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.vocab_size == VOCAB
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 20.0)
    model.config.tie_word_embeddings = False
    model.save_pretrained(path)
    return path


def real_rows(model_path, seed=0):
    """Random prompts; responses decoded from the model, every third token greedy (inside the
    proxy's support) and the others uniform (mostly outside it: the filter has work to do)."""
    from transformers import AutoModelForCausalLM

    from verl_lpreg.testing.worker_batch import rollout_row

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager")
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for prompt_len, response_len, _ in SAMPLES:
        prompt = torch.randint(3, VOCAB, (prompt_len,), generator=gen)
        input_ids = prompt
        for t in range(response_len):
            if t % 3 == 0:
                with torch.no_grad():
                    token = model(input_ids.unsqueeze(0)).logits[0, -1].argmax()
            else:
                token = torch.randint(3, VOCAB, (), generator=gen)
            input_ids = torch.cat([input_ids, token.reshape(1)])
        rows.append(rollout_row(prompt, input_ids[prompt_len:]))
    return rows


def padding_row(template_row):
    """verl's synthetic dp-balancing sample (trainer/ppo/padding_utils.py), keys of our rows only."""
    from verl.trainer.ppo.padding_utils import construct_minimal_padding_template

    sample, tag = construct_minimal_padding_template(template_row, {}, eos_token_id=2)
    assert tag["is_padding"] and int(sample["response_mask"].sum()) == 0
    return {key: sample[key] for key in template_row}


def hf_response_logits(model_path, rows, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="eager")
    out = []
    for row in rows:
        with torch.no_grad():
            logits = model(row["input_ids"].unsqueeze(0)).logits[0]
        out.append(logits[len(row["prompts"]) - 1 : -1])
    return out


# --------------------------------------------------------------------------- one rank


def _rank_main(rank, world, port, layout, model_path, inputs, out_dir):
    """Body of one spawned rank: build the worker, compute_log_prob, update_actor per loss variant."""
    from verl_lpreg.testing.process_env import set_rank_env

    set_rank_env(rank, world, port)
    torch.set_num_threads(1)
    import verl_lpreg.cpu  # noqa: F401  (CPU platform, gloo): before verl's engine code resolves the platform

    sp = LAYOUTS[layout][1]
    from verl.utils import tensordict_utils as tu
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    from verl_lpreg.config import LpRegConfig
    from verl_lpreg.integration.engine import proxy_request
    from verl_lpreg.integration.losses import extended_ppo_loss
    from verl_lpreg.names import CANDIDATES_FIELD, PROXY_FIELD
    from verl_lpreg.testing.worker_batch import set_update_settings

    cfg = compose_config(model_path, layout)
    worker = ActorRolloutRefWorker(config=cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    assert type(worker.actor.engine).__name__ == "LpRegFSDPEngine"
    calls = _record_proxy_inputs(type(worker.actor.engine))

    dp_size = world // sp
    dp_rank = rank // sp
    rows = inputs["rows"]
    n_local = len(rows) // dp_size
    local = slice(dp_rank * n_local, (dp_rank + 1) * n_local)
    batch = tu.list_of_dict_to_tensordict(rows[local])

    data = batch.clone()
    tu.assign_non_tensor(
        data, temperature=1.0, calculate_entropy=True, compute_loss=False, **proxy_request(LpRegConfig(min_p=MIN_P))
    )
    output = worker.compute_log_prob(data)
    result = {"layout": layout, "rank": rank, "local": (local.start, local.stop)}
    if output is not None:  # SP: only the first rank of the group returns outputs
        output["response_mask"] = batch["response_mask"]
        for key, field in (("proxy", PROXY_FIELD), ("log_probs", "log_probs")):
            result[key] = [t.clone() for t in response_from_nested(output[field], batch["response_mask"]).unbind()]
    result["calls"] = list(calls)  # the old-log-prob forward's micro-batches only

    params = list(worker.actor.engine.module.parameters())
    start = [p.detach().to_local().clone() if hasattr(p, "to_local") else p.detach().clone() for p in params]
    names = [name for name, _ in worker.actor.engine.module.named_parameters()]
    for variant, extra in LOSS_VARIANTS.items():
        train = batch.clone()
        for key in ("old_log_probs", "advantages", PROXY_FIELD, CANDIDATES_FIELD):
            train[key] = torch.nested.as_nested_tensor(list(inputs[key][local]), layout=torch.jagged)
        set_update_settings(train, len(rows))
        actor_cfg = compose_config(
            model_path, layout, *(f"actor_rollout_ref.actor.policy_loss.lp_reg.{o}" for o in extra)
        )
        worker.set_loss_fn(
            partial(extended_ppo_loss, config=omega_conf_to_dataclass(actor_cfg.actor_rollout_ref.actor))
        )
        update = worker.update_actor(train)  # None on the ranks of an SP group that return nothing
        worker_metrics = None if update is None else {k: update["metrics"][k] for k in ("loss", "grad_norm")}
        # SGD at lr 1 without weight decay or clipping: the change of each parameter is -gradient.
        grads = {}
        for name, p, p0 in zip(names, params, start, strict=True):
            full_now = _full(p)
            with torch.no_grad():
                (p.to_local() if hasattr(p, "to_local") else p).copy_(p0)
            grads[name] = _full(p) - full_now
        result[variant] = {"metrics": worker_metrics, "grads": grads if rank == 0 else None}
    torch.save(result, os.path.join(out_dir, f"{layout}_rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _record_proxy_inputs(engine_cls):
    """Record, per micro-batch, what this rank's engine hands the proxy (its slice of the packed
    logits) as per-position float64 references: the proxy by its definition and the log-prob.
    With the micro-batch's sequences, the SP padding and the ranks' slices, the test puts them
    back in batch order: an independent check of how the proxy is gathered and aligned."""
    calls = []
    real = engine_cls._proxy_outputs

    def recording(self, output, output_args, micro_batch, request, **kwargs):
        logits = output.logits
        logits = (logits.full_tensor() if hasattr(logits, "full_tensor") else logits).detach().squeeze(0)
        labels = output_args["input_ids_rmpad_rolled"]
        calls.append(
            {
                "dtype": logits.dtype,
                "proxy": fp64_proxy(logits, labels, request["min_p"], output_args["temperature_rmpad"]),
                "log_prob": torch.log_softmax(logits.double(), -1).gather(-1, labels[:, None])[:, 0],
                "pad_size": int(output_args["pad_size"]),
                "input_ids": micro_batch["input_ids"].values().clone(),
                "offsets": micro_batch["input_ids"].offsets().clone(),
            }
        )
        return real(self, output, output_args, micro_batch, request, **kwargs)

    engine_cls._proxy_outputs = recording
    return calls


def _full(param):
    """A float32 copy of the whole parameter (FSDP2 shards it as a DTensor)."""
    value = param.detach()
    return (value.full_tensor() if hasattr(value, "full_tensor") else value).float().clone()


def compose_config(model_path, layout, *overrides):
    from verl_lpreg.cpu import CPU_OVERRIDES
    from verl_lpreg.testing.trainer_config import compose_trainer_config

    world, sp, dynamic, _, dtype = LAYOUTS[layout]
    n_rows = len(SAMPLES) + (1 if LAYOUTS[layout][3] else 0)
    layout_overrides = [
        f"trainer.n_gpus_per_node={world}",
        f"actor_rollout_ref.actor.ulysses_sequence_parallel_size={sp}",
        f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic}",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={MAX_TOKENS}",
        f"actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu={MAX_TOKENS}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={n_rows}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={n_rows}",
    ]
    if dtype == "bf16":
        layout_overrides += [
            "actor_rollout_ref.actor.fsdp_config.model_dtype=bf16",
            "++actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=bf16",
        ]
    return compose_trainer_config(
        *CPU_OVERRIDES,
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.model.use_remove_padding=true",
        "actor_rollout_ref.rollout.n=1",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={n_rows}",
        "actor_rollout_ref.actor.optim.optimizer=SGD",
        "actor_rollout_ref.actor.optim.lr=1.0",
        "actor_rollout_ref.actor.optim.weight_decay=0.0",
        "actor_rollout_ref.actor.optim.clip_grad=1e9",
        "actor_rollout_ref.actor.clip_ratio_low=1.0",
        "actor_rollout_ref.actor.clip_ratio_high=9.0",
        "actor_rollout_ref.actor.policy_loss.loss_mode=lp_reg",
        f"actor_rollout_ref.actor.policy_loss.lp_reg.min_p={MIN_P}",
        *layout_overrides,
        *overrides,
    )


# --------------------------------------------------------------------------- the layouts


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_model(str(tmp_path_factory.mktemp("qwen3_151936")))


@pytest.fixture(scope="module")
def reference(model_path):
    """Single-process forward of the same model on the same sequences: log-probs, proxy, fields."""
    from verl_lpreg import min_p_proxy_log_prob
    from verl_lpreg.loss import select_candidates

    rows = real_rows(model_path)
    logits = hf_response_logits(model_path, rows)
    old = [
        torch.log_softmax(z, -1).gather(-1, r["responses"][:, None])[:, 0] for z, r in zip(logits, rows, strict=True)
    ]
    proxy = [min_p_proxy_log_prob(z, r["responses"], MIN_P) for z, r in zip(logits, rows, strict=True)]
    advantages = [torch.full((resp_len,), adv) for _, resp_len, adv in SAMPLES]
    width = max(len(o) for o in old)
    pad = lambda seqs: torch.stack([torch.nn.functional.pad(s, (0, width - len(s))) for s in seqs])  # noqa: E731
    valid = pad([torch.ones(len(o)) for o in old]).bool()
    chosen = select_candidates(pad(old), pad(advantages), valid, 0.3, 0.0)
    candidates = [chosen[i, : len(o)].float() for i, o in enumerate(old)]
    return {
        "rows": rows,
        "logits": logits,
        "old_log_probs": old,
        "proxy": proxy,
        "advantages": advantages,
        "candidates": candidates,
    }


def layout_inputs(reference, layout):
    from verl_lpreg.names import CANDIDATES_FIELD, PROXY_FIELD

    rows = list(reference["rows"])
    fields = {
        "old_log_probs": list(reference["old_log_probs"]),
        "advantages": list(reference["advantages"]),
        PROXY_FIELD: list(reference["proxy"]),
        CANDIDATES_FIELD: list(reference["candidates"]),
    }
    if LAYOUTS[layout][3]:
        # The worst case for a padding sample: negative advantage, proxy far above the policy,
        # even marked a candidate; only its zero response/loss mask keeps it out.
        rows.append(padding_row(rows[0]))
        fields["old_log_probs"].append(torch.tensor([-5.0]))
        fields["advantages"].append(torch.tensor([-1.0]))
        fields[PROXY_FIELD].append(torch.tensor([-0.1]))
        fields[CANDIDATES_FIELD].append(torch.tensor([1.0]))
    # the proxy travels in the engine's layout (full sequences, like log_probs); the rest per response
    fields[PROXY_FIELD] = [full_sequence(row, values) for row, values in zip(rows, fields[PROXY_FIELD], strict=True)]
    return {"rows": rows, **fields}


def full_sequence(row, response_values):
    """Response values laid out like the engine's full-sequence outputs: the value predicting token
    t sits at position t - 1 (``response_values`` of length 1 fills every position: padding)."""
    if len(response_values) == 1:
        return response_values.expand(len(row["input_ids"])).clone()
    out = torch.zeros(len(row["input_ids"]), dtype=response_values.dtype)
    out[len(row["prompts"]) - 1 : -1] = response_values
    return out


_RESULTS = {}


def run_layout(layout, model_path, reference, tmp_path_factory):
    if layout not in _RESULTS:
        import torch.multiprocessing as mp

        out_dir = str(tmp_path_factory.mktemp(f"layout_{layout}"))
        world = LAYOUTS[layout][0]
        inputs = layout_inputs(reference, layout)
        mp.spawn(_rank_main, args=(world, free_port(), layout, model_path, inputs, out_dir), nprocs=world, join=True)
        _RESULTS[layout] = [
            torch.load(os.path.join(out_dir, f"{layout}_rank{r}.pt"), weights_only=False) for r in range(world)
        ]
    return _RESULTS[layout]


def gathered(results, key):
    """Per-sample outputs of the ranks that return them, in batch order."""
    out = []
    for r in sorted((r for r in results if key in r), key=lambda r: r["local"][0]):
        out.extend(r[key])
    return out


@pytest.mark.parametrize("layout", ["single", "dp2", "sp2"])
def test_proxy_of_every_response_token(layout, model_path, reference, tmp_path_factory):
    results = run_layout(layout, model_path, reference, tmp_path_factory)
    proxy, log_probs = gathered(results, "proxy"), gathered(results, "log_probs")
    assert len(proxy) == len(SAMPLES) + (1 if LAYOUTS[layout][3] else 0)
    removed = 0
    for i, want in enumerate(reference["proxy"]):
        want_old = reference["old_log_probs"][i]
        # verl's log-prob is a 151,936-term logsumexp, summed in a different float32 order by the
        # packed engine forward and the padded reference forward (5.3e-5 apart on one CPU); the
        # proxy normalises over its few kept tokens and holds 1e-5.
        torch.testing.assert_close(log_probs[i], want_old, rtol=0, atol=1e-4)
        kept = want > HARD_FILL / 2
        torch.testing.assert_close(proxy[i][kept], want[kept], rtol=0, atol=1e-5)
        # removed tokens sit at -1e4 - log Z, where float32's spacing is ~1e-3
        torch.testing.assert_close(proxy[i][~kept], want[~kept], rtol=1e-7, atol=0)
        removed += int((~kept).sum())
    # the filter bites: some sampled tokens are outside the proxy's support, most inside
    n_tokens = sum(resp_len for _, resp_len, _ in SAMPLES)
    assert 0 < removed < n_tokens


@pytest.mark.parametrize("layout", ["dp2", "sp2"])
@pytest.mark.parametrize("variant", list(LOSS_VARIANTS))
def test_update_matches_the_single_rank(layout, variant, model_path, reference, tmp_path_factory):
    single = run_layout("single", model_path, reference, tmp_path_factory)[0][variant]
    other = run_layout(layout, model_path, reference, tmp_path_factory)[0][variant]
    # loss: verl sums the micro-batches' losses (each normalised by the global token count)
    assert other["metrics"]["loss"] == pytest.approx(single["metrics"]["loss"], rel=1e-5, abs=1e-7)
    assert other["metrics"]["grad_norm"] == pytest.approx(single["metrics"]["grad_norm"], rel=1e-4)
    assert set(other["grads"]) == set(single["grads"])
    for name, want in single["grads"].items():
        torch.testing.assert_close(other["grads"][name], want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-9)
    assert any(float(g.abs().max()) > 0 for g in single["grads"].values())


def fp64_proxy(logits, token_ids, min_p, temperature):
    """The proxy by its definition (docs/method.md §2), in float64: mask, fill -1e4, log_softmax."""
    z = logits.double()
    keep = z >= z.amax(-1, keepdim=True) + torch.log(torch.tensor(min_p, dtype=torch.float64))
    filtered = torch.where(keep, z, torch.full_like(z, HARD_FILL))
    log_p = torch.log_softmax(filtered / temperature.double().reshape(-1, 1), -1)
    return log_p.gather(-1, token_ids[:, None])[:, 0]


def engine_view(results, rows):
    """Per real sample, the float64 references of the positions the engine computed, put back in
    batch order from the recorded micro-batches (SP: the ranks' slices joined, padding dropped)."""
    by_rank = sorted(results, key=lambda r: r["rank"])
    found = {}
    for k, first in enumerate(by_rank[0]["calls"]):
        joined = {key: torch.cat([r["calls"][k][key] for r in by_rank]) for key in ("proxy", "log_prob")}
        n_valid = int(first["offsets"][-1])
        assert len(joined["proxy"]) == n_valid + first["pad_size"]
        for start, stop in zip(first["offsets"][:-1].tolist(), first["offsets"][1:].tolist(), strict=True):
            ids = first["input_ids"][start:stop]
            (index,) = [i for i, row in enumerate(rows) if torch.equal(row["input_ids"], ids)]
            begin = start + len(rows[index]["prompts"]) - 1
            found[index] = {key: value[begin : stop - 1] for key, value in joined.items()}
    return found


def test_sp2_proxy_is_gathered_in_place(model_path, reference, tmp_path_factory):
    """Ulysses SP 2: each rank's proxy slice lands on its tokens, next to their log-probs."""
    results = run_layout("sp2", model_path, reference, tmp_path_factory)
    (src,) = [r for r in results if "proxy" in r]
    view = engine_view(results, layout_inputs(reference, "sp2")["rows"])
    assert sorted(view) == list(range(len(SAMPLES) + 1))
    assert len(results[0]["calls"]) >= 2  # dynamic batch size: several micro-batches
    for i, want in view.items():
        torch.testing.assert_close(src["proxy"][i].double(), want["proxy"], rtol=1e-7, atol=1e-5)
        torch.testing.assert_close(src["log_probs"][i].double(), want["log_prob"], rtol=0, atol=1e-5)


def test_sp2_logits_equal_a_single_process_forward(model_path, reference, tmp_path_factory):
    """Ulysses SP 2 on CPU (attention ``verl_lpreg_ulysses_eager``, verl_lpreg/cpu/ulysses_attention.py)
    computes the log-probs and the proxy of the single-rank run of the same engine."""
    single = run_layout("single", model_path, reference, tmp_path_factory)
    results = run_layout("sp2", model_path, reference, tmp_path_factory)
    for key in ("log_probs", "proxy"):
        got, want = gathered(results, key), gathered(single, key)
        assert len(got) == len(want) + 1  # sp2 has the padding sample last
        for g, w in zip(got, want, strict=False):
            # rtol: a removed token's proxy sits at -1e4 - log Z, where float32's spacing is ~1e-3
            torch.testing.assert_close(g, w, rtol=1e-7 if key == "proxy" else 0, atol=5e-5)


def test_bf16_logits_proxy_in_fp32(model_path, reference, tmp_path_factory):
    """bf16 parameters: the engine hands the proxy bf16 logits; its threshold and sums are still
    float32 (equal to a float64 computation on the same bf16 logits, to 1e-5)."""
    results = run_layout("bf16", model_path, reference, tmp_path_factory)
    calls = results[0]["calls"]
    assert len(calls) >= 2 and all(c["dtype"] == torch.bfloat16 for c in calls)
    view = engine_view(results, reference["rows"])
    for i, want in view.items():
        assert results[0]["proxy"][i].dtype == torch.float32
        torch.testing.assert_close(results[0]["proxy"][i].double(), want["proxy"], rtol=1e-7, atol=1e-5)
    # and the model computes what an independent bf16 forward gives, to bf16's precision
    bf16_logits = hf_response_logits(model_path, reference["rows"], torch.bfloat16)
    for got, z, row in zip(gathered(results, "log_probs"), bf16_logits, reference["rows"], strict=True):
        want = torch.log_softmax(z.float(), -1).gather(-1, row["responses"][:, None])[:, 0]
        assert float((got - want).abs().median()) < 0.1
