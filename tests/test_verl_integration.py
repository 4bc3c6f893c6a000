"""Lp-Reg through verl 0.9.1's real engine worker on CPU (docs/method.md §2-§3).

One process, gloo, fp32, eager attention, a tiny random Qwen2 built in-process; the config is
our hydra config composed over verl's ``ppo_trainer``. ``compute_log_prob`` then
``update_actor`` run on a hand-built rollout batch, exactly as the trainer calls them.
"""

from functools import partial

import pytest
import torch

pytest.importorskip("verl")


from verl_lpreg.testing.process_env import set_rank_env  # noqa: E402

set_rank_env()

from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.utils.config import omega_conf_to_dataclass  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402
from verl.workers.utils.padding import response_from_nested  # noqa: E402

import verl_lpreg.cpu  # noqa: E402,F401  (CPU platform, gloo)
from verl_lpreg import lp_reg_policy_loss, min_p_proxy_log_prob  # noqa: E402
from verl_lpreg.config import LpRegConfig  # noqa: E402
from verl_lpreg.cpu import CPU_OVERRIDES  # noqa: E402
from verl_lpreg.integration.engine import proxy_request  # noqa: E402
from verl_lpreg.integration.losses import extended_ppo_loss  # noqa: E402
from verl_lpreg.names import CANDIDATES_FIELD, HIGH_ENTROPY_MASK_FIELD, MARGIN_FIELD, PROXY_FIELD  # noqa: E402
from verl_lpreg.testing.tiny_model import build_tiny_model  # noqa: E402
from verl_lpreg.testing.trainer_config import compose_trainer_config  # noqa: E402
from verl_lpreg.testing.worker_batch import rollout_row, set_update_settings  # noqa: E402

MIN_P = 0.05
# (prompt length, response length, advantage) per sample
SAMPLES = [(5, 7, 1.0), (3, 9, -1.0), (6, 4, -1.0), (4, 8, 0.5)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Tiny Qwen2 whose logits are spread out, so the min-p filter removes some tokens."""
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(str(tmp_path_factory.mktemp("tiny")))
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    # An untied, scaled copy of the head: tied weights would be saved once and lost on reload.
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone() * 4.0)
    model.config.tie_word_embeddings = False
    model.save_pretrained(path)
    return path


def compose_config(model_path, *overrides):
    return compose_trainer_config(
        *CPU_OVERRIDES,
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.rollout.n=1",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.actor.clip_ratio_low=1.0",
        "actor_rollout_ref.actor.clip_ratio_high=9.0",
        f"actor_rollout_ref.actor.policy_loss.lp_reg.min_p={MIN_P}",
        "actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.5",
        *overrides,
    )


def build_worker(cfg):
    worker = ActorRolloutRefWorker(config=cfg.actor_rollout_ref, role="actor")
    worker.init_model()
    return worker


def rollout_batch(seed=0):
    """A batch in the layout verl's agent loop stores: nested per-sample tensors."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for prompt_len, response_len, _ in SAMPLES:
        prompt = torch.randint(3, 500, (prompt_len,), generator=gen)
        response = torch.randint(3, 500, (response_len,), generator=gen)
        rows.append(rollout_row(prompt, response))
    return tu.list_of_dict_to_tensordict(rows)


def compute_old_log_prob(worker, batch, *, proxy=True, margin=False):
    data = batch.clone()
    request = proxy_request(LpRegConfig(min_p=MIN_P), margin=margin) if proxy else {}
    tu.assign_non_tensor(data, temperature=1.0, calculate_entropy=True, compute_loss=False, **request)
    output = worker.compute_log_prob(data)
    output["response_mask"] = batch["response_mask"]
    return output


def response_fields(output, *names):
    """The engine's full-sequence outputs ``names`` cut to the response, as the trainer reads them."""
    return {name: response_from_nested(output[name], output["response_mask"]) for name in names}


def full_sequence(batch, response_values):
    """Per-sample response values laid out like the engine's full-sequence outputs (zeros elsewhere)."""
    rows = []
    for input_ids, values in zip(batch["input_ids"].unbind(), response_values, strict=True):
        row = torch.zeros(len(input_ids), dtype=values.dtype)
        row[len(input_ids) - len(values) - 1 : len(input_ids) - 1] = values
        rows.append(row)
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def hf_response_logits(model_path, batch):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32, attn_implementation="eager")
    logits = []
    for input_ids, response in zip(batch["input_ids"].unbind(), batch["responses"].unbind(), strict=True):
        with torch.no_grad():
            out = model(input_ids.unsqueeze(0)).logits[0]
        logits.append(out[len(input_ids) - len(response) - 1 : -1])
    return logits


@pytest.fixture(scope="module")
def worker(tiny_model):
    return build_worker(compose_config(tiny_model))


def test_the_engine_is_ours(worker):
    assert type(worker.actor.engine).__name__ == "LpRegFSDPEngine"


@pytest.mark.parametrize("use_remove_padding", [True, False])
def test_proxy_is_computed_in_the_old_log_prob_forward(tiny_model, worker, use_remove_padding):
    if not use_remove_padding:
        worker = build_worker(compose_config(tiny_model, "actor_rollout_ref.model.use_remove_padding=false"))
    batch = rollout_batch()
    output = compute_old_log_prob(worker, batch, margin=True)
    fields = response_fields(output, PROXY_FIELD, MARGIN_FIELD)
    old_log_probs = response_from_nested(output["log_probs"], batch["response_mask"])
    removed = 0
    for i, logits in enumerate(hf_response_logits(tiny_model, batch)):
        response = batch["responses"][i]
        want = min_p_proxy_log_prob(logits, response, MIN_P)
        torch.testing.assert_close(old_log_probs[i], torch.log_softmax(logits, -1).gather(-1, response[:, None])[:, 0])
        torch.testing.assert_close(fields[PROXY_FIELD][i], want, rtol=1e-4, atol=1e-3)
        removed += int((fields[MARGIN_FIELD][i] > 0).sum())
    # the spread-out logits make the filter bite: some sampled tokens are outside the support
    assert 0 < removed < sum(len(r) for r in batch["responses"].unbind())


def test_no_proxy_unless_asked(worker):
    output = compute_old_log_prob(worker, rollout_batch(), proxy=False)
    assert set(output.keys()) >= {"log_probs", "entropy"}
    assert not {PROXY_FIELD, MARGIN_FIELD} & set(output.keys())


def test_margin_only_when_asked(worker):
    output = compute_old_log_prob(worker, rollout_batch())
    assert PROXY_FIELD in output.keys()
    assert MARGIN_FIELD not in output.keys()


def training_batch(batch, old_output, **extra):
    data = batch.clone()
    data["old_log_probs"] = response_from_nested(old_output["log_probs"], batch["response_mask"])
    advantages = [torch.full((resp_len,), adv) for _, resp_len, adv in SAMPLES]
    data["advantages"] = torch.nested.as_nested_tensor(advantages, layout=torch.jagged)
    for key, value in extra.items():
        data[key] = value
    set_update_settings(data, len(SAMPLES))
    return data


def _pad_rows(seqs):
    width = max(len(s) for s in seqs)
    return torch.stack([torch.nn.functional.pad(s, (0, width - len(s))) for s in seqs])


def expected_lp_reg_pg_loss(old_log_probs, proxy, cfg, candidates=None):
    """Sum over the two micro-batches of the pure loss at the unchanged parameters (ratio 1),
    normalised by the mini-batch's token count as verl does (``candidates``: per-sample masks
    of a batch-wide selection)."""
    lp = cfg.actor_rollout_ref.actor.policy_loss.lp_reg
    total_tokens = sum(resp_len for _, resp_len, _ in SAMPLES)
    total = 0.0
    for rows in ([0, 1], [2, 3]):
        old = _pad_rows([old_log_probs[r] for r in rows])
        prox = _pad_rows([proxy[r] for r in rows])
        adv = _pad_rows([torch.full((SAMPLES[r][1],), SAMPLES[r][2]) for r in rows])
        mask = _pad_rows([torch.ones(SAMPLES[r][1]) for r in rows]).bool()
        cand = None if candidates is None else _pad_rows([candidates[r].float() for r in rows]).bool()
        loss, _ = lp_reg_policy_loss(
            old,
            old,
            prox,
            adv,
            mask,
            neg_fraction=lp.neg_fraction,
            kl_coef=lp.kl_coef,
            clip_ratio_low=1.0,
            clip_ratio_high=9.0,
            batch_num_tokens=total_tokens,
            candidates=cand,
        )
        total += loss.item()
    return total


def test_update_actor_with_lp_reg(worker, tiny_model):
    cfg = compose_config(tiny_model)
    batch = rollout_batch(seed=3)
    old_output = compute_old_log_prob(worker, batch)
    fields = response_fields(old_output, PROXY_FIELD)
    # the update receives the engine's full-sequence proxy, as the trainer stores it
    data = training_batch(batch, old_output, **{PROXY_FIELD: old_output[PROXY_FIELD]})
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    before = [p.detach().clone() for p in worker.actor.engine.module.parameters()]
    metrics = worker.update_actor(data)["metrics"]
    after = list(worker.actor.engine.module.parameters())

    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, after, strict=True))
    for key in ("lp_reg/reg_fraction", "lp_reg/reg_count", "lp_reg/gap_mean", "lp_reg/k3_mean", "actor/pg_loss"):
        assert key in metrics, key
    flat = [v for vs in metrics.values() if isinstance(vs, list) for v in vs]
    assert all(torch.isfinite(torch.tensor(float(v))) for v in flat)
    assert sum(metrics["lp_reg/reg_count"]) > 0

    old_log_probs = data["old_log_probs"].unbind()
    pg_loss = sum(metrics["actor/pg_loss"])
    vanilla = -sum(adv * resp_len for _, resp_len, adv in SAMPLES) / sum(resp_len for _, resp_len, _ in SAMPLES)
    assert pg_loss == pytest.approx(expected_lp_reg_pg_loss(old_log_probs, fields[PROXY_FIELD].unbind(), cfg), rel=1e-4)
    assert pg_loss != pytest.approx(vanilla, rel=1e-3)


def test_batch_wide_selection_reaches_every_micro_batch(worker, tiny_model):
    """``lp_reg.selection=batch``: the candidates chosen over the whole batch (as the trainer does)
    are used by each micro-batch's loss instead of a per-micro-batch quantile."""
    from verl_lpreg.loss import select_candidates

    cfg = compose_config(
        tiny_model,
        "actor_rollout_ref.actor.policy_loss.lp_reg.selection=batch",
        "actor_rollout_ref.actor.policy_loss.lp_reg.neg_fraction=0.3",
    )
    batch = rollout_batch(seed=6)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    old = response_from_nested(old_output["log_probs"], batch["response_mask"]).unbind()
    # a proxy above the policy everywhere, by varying amounts: every candidate is regularised with
    # its own k3, so a different candidate set gives a different loss
    gen = torch.Generator().manual_seed(0)
    lifted = [o + 0.5 + 1.5 * torch.rand(len(o), generator=gen) for o in old]
    proxy = full_sequence(batch, lifted)
    padded_old = _pad_rows(list(old))
    advantages = _pad_rows([torch.full((resp_len,), adv) for _, resp_len, adv in SAMPLES])
    valid = _pad_rows([torch.ones(resp_len) for _, resp_len, _ in SAMPLES]).bool()
    # rho 0.3: 3 of the batch's 13 negative tokens; per micro-batch (9 and 4 negatives) only the
    # first would get any (int(2.7) = 2; int(1.2) = 1 is no step)
    chosen = select_candidates(padded_old, advantages, valid, 0.3, 0.0)
    per_sample = [chosen[i, :resp_len] for i, (_, resp_len, _) in enumerate(SAMPLES)]
    nested = torch.nested.as_nested_tensor([c.float() for c in per_sample], layout=torch.jagged)
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    metrics = worker.update_actor(training_batch(batch, old_output, **{PROXY_FIELD: proxy, CANDIDATES_FIELD: nested}))[
        "metrics"
    ]
    want = expected_lp_reg_pg_loss(old, lifted, cfg, candidates=per_sample)
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(want, rel=1e-4)
    # and it is not what a per-micro-batch selection gives on this batch
    assert want != pytest.approx(expected_lp_reg_pg_loss(old, lifted, cfg), rel=1e-4)

    # without the trainer's candidates the loss refuses to guess
    with pytest.raises(RuntimeError, match=CANDIDATES_FIELD):
        worker.update_actor(training_batch(batch, old_output, **{PROXY_FIELD: proxy}))


def test_missing_proxy_fails_loudly(worker, tiny_model):
    cfg = compose_config(tiny_model)
    batch = rollout_batch(seed=4)
    data = training_batch(batch, compute_old_log_prob(worker, batch, proxy=False))
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    with pytest.raises(RuntimeError, match="proxy_log_probs"):
        worker.update_actor(data)


def test_update_actor_with_high_entropy_batch_selection(worker, tiny_model):
    """80/20, ``selection=batch``: the loss is the token-mean over the selected tokens only (the
    trainer sets ``loss_mask`` to them, so verl's token count is theirs)."""
    cfg = compose_config(
        tiny_model,
        "actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy",
        "actor_rollout_ref.actor.policy_loss.high_entropy.selection=batch",
    )
    batch = rollout_batch(seed=5)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    entropy = response_from_nested(old_output["entropy"], batch["response_mask"]).unbind()
    top = torch.cat(entropy).quantile(0.8)
    selected = [(e >= top) for e in entropy]
    data = training_batch(
        batch,
        old_output,
        **{
            HIGH_ENTROPY_MASK_FIELD: torch.nested.as_nested_tensor([m.float() for m in selected], layout=torch.jagged),
            "loss_mask": torch.nested.as_nested_tensor([m.long() for m in selected], layout=torch.jagged),
        },
    )
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    metrics = worker.update_actor(data)["metrics"]
    # parameters unchanged during the mini-batch: ratio 1, so each selected token contributes -A
    n_selected = sum(int(m.sum()) for m in selected)
    expected = -sum(adv * int(m.sum()) for (_, _, adv), m in zip(SAMPLES, selected, strict=True)) / n_selected
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(expected, rel=1e-5)


def test_update_actor_with_high_entropy_micro_batch_default(worker, tiny_model):
    """80/20 by default (the authors'): each micro-batch of the update ranks the current policy's
    entropy (verl computes it in the update forward when asked) and averages over its own
    selected tokens; verl's token normalisation weights the micro-batches by their tokens."""
    from verl_lpreg.high_entropy import num_selected_tokens

    cfg = compose_config(tiny_model, "actor_rollout_ref.actor.policy_loss.loss_mode=high_entropy")
    batch = rollout_batch(seed=6)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    entropy = response_from_nested(old_output["entropy"], batch["response_mask"]).unbind()
    data = training_batch(batch, old_output)
    tu.assign_non_tensor(data, calculate_entropy=True)
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    metrics = worker.update_actor(data)["metrics"]
    # parameters unchanged during the mini-batch: the update's entropy is the old forward's, ratio 1
    n_total = sum(resp_len for _, resp_len, _ in SAMPLES)
    expected = 0.0
    for mb in (slice(0, 2), slice(2, 4)):  # ppo_micro_batch_size_per_gpu=2, in order
        ents = torch.cat(entropy[mb])
        advs = torch.cat([torch.full((r,), a) for _, r, a in SAMPLES[mb]])
        top = torch.topk(ents, num_selected_tokens(len(ents), 0.2)).indices
        expected += float(-advs[top].mean()) * len(ents) / n_total
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(expected, rel=1e-5)

    # without the update forward's entropy the loss refuses to guess
    with pytest.raises(RuntimeError, match="'entropy'"):
        worker.update_actor(training_batch(batch, old_output))


@pytest.mark.parametrize("max_response_len", [None, 70])
def test_response_part_equals_verls_no_padding_2_padding(max_response_len):
    """The loss's batched slice of a full-sequence field is verl's own, value for value."""
    from verl.workers.utils.padding import no_padding_2_padding

    from verl_lpreg.integration.losses import _response_part

    gen = torch.Generator().manual_seed(3)
    rows = []
    for _ in range(9):
        prompt_len, response_len = (int(torch.randint(1, n, (1,), generator=gen)) for n in (30, 60))
        ids = torch.randint(3, 100, (prompt_len + response_len,), generator=gen)
        rows.append(rollout_row(ids[:prompt_len], ids[prompt_len:]))
    data = tu.list_of_dict_to_tensordict(rows)
    if max_response_len is not None:
        tu.assign_non_tensor(data, max_response_len=max_response_len)
    offsets = data["input_ids"].offsets()
    field = torch.nested.nested_tensor_from_jagged(torch.randn(int(offsets[-1]), generator=gen), offsets)
    want = no_padding_2_padding(field, data)
    got = _response_part(field, data)
    assert got.shape == want.shape and torch.equal(got, want)
