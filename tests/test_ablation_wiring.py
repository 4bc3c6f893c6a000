"""The ablation options that touch the wiring, through verl 0.9.1's real engine worker on CPU
(docs/method.md §9.1, §9.5, §10): ``proxy_source=current`` (the current policy's proxy from the
update's own forward), ``proxy_source=ref`` (verl's reference log-prob as the target),
``rank_by=entropy`` (the current policy's entropy from the update's forward) and ``divergence``.

Built as tests/test_verl_integration.py builds it (one process, gloo, a tiny random Qwen2). The
update runs one optimizer step over two micro-batches at unchanged parameters, so its
``actor/pg_loss`` is the pure loss of each micro-batch at ratio 1, which is what the expected
values are computed from, with the targets computed here from the model's own logits.
"""

from functools import partial

import pytest
import torch
from test_verl_integration import (
    SAMPLES,
    _pad_rows,
    compose_config,
    compute_old_log_prob,
    full_sequence,
    hf_response_logits,
    rollout_batch,
    tiny_model,
    training_batch,
    worker,
)
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.utils.padding import response_from_nested

from verl_lpreg import lp_reg_policy_loss, min_p_proxy_log_prob
from verl_lpreg.config import LpRegConfig
from verl_lpreg.integration.engine import current_proxy_request
from verl_lpreg.integration.losses import extended_ppo_loss
from verl_lpreg.names import CURRENT_PROXY_NEG_FIELD, CURRENT_PROXY_POS_FIELD, PROXY_FIELD, REF_LOG_PROB_FIELD

__all__ = ["tiny_model", "worker"]  # the fixtures, shared with tests/test_verl_integration.py

LP = "actor_rollout_ref.actor.policy_loss.lp_reg"
# A filter loose enough that the flatter targets (T > 1) lie above some low-probability tokens.
CURRENT_MIN_P = 0.001


def expected_pg_loss(old_log_probs, targets, lp: LpRegConfig, entropy=None):
    """Sum over the two micro-batches of the pure loss at ratio 1, verl's token normalisation."""
    total_tokens = sum(resp_len for _, resp_len, _ in SAMPLES)
    total = 0.0
    for rows in ([0, 1], [2, 3]):
        old = _pad_rows([old_log_probs[r] for r in rows])
        loss, _ = lp_reg_policy_loss(
            old,
            old,
            _pad_rows([targets[r] for r in rows]),
            _pad_rows([torch.full((SAMPLES[r][1],), SAMPLES[r][2]) for r in rows]),
            _pad_rows([torch.ones(SAMPLES[r][1]) for r in rows]).bool(),
            neg_fraction=lp.neg_fraction,
            pos_fraction=lp.pos_fraction,
            kl_coef=lp.kl_coef,
            divergence=lp.divergence,
            rank_by=lp.rank_by,
            entropy=None if entropy is None else _pad_rows([entropy[r] for r in rows]),
            clip_ratio_low=1.0,
            clip_ratio_high=9.0,
            batch_num_tokens=total_tokens,
        )
        total += loss.item()
    return total


def update(worker, cfg, data):
    worker.set_loss_fn(partial(extended_ppo_loss, config=omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)))
    return worker.update_actor(data)["metrics"]


def lp_reg_of(cfg) -> LpRegConfig:
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor.policy_loss).lp_reg


def count_forwards(worker):
    calls = []
    handle = worker.actor.engine.module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_current_policy_proxy_comes_from_the_update_forward(worker, tiny_model):
    """``proxy_source=current``: separate positive / negative target temperatures, read from the
    logits of the update's own forward (no extra forward), as the reference's two extra forwards."""
    cfg = compose_config(
        tiny_model,
        f"{LP}.proxy_source=current",
        f"{LP}.pos_fraction=0.5",
        f"{LP}.min_p={CURRENT_MIN_P}",
        f"{LP}.pos_target_temperature=2.0",
        f"{LP}.neg_target_temperature=1.5",
    )
    lp = lp_reg_of(cfg)
    batch = rollout_batch(seed=7)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    old = response_from_nested(old_output["log_probs"], batch["response_mask"]).unbind()
    targets = []
    logits_and_responses = list(zip(hf_response_logits(tiny_model, batch), batch["responses"].unbind(), strict=True))
    for (logits, response), (_, _, adv) in zip(logits_and_responses, SAMPLES, strict=True):
        temperature = 2.0 if adv > 0 else 1.5
        targets.append(min_p_proxy_log_prob(logits, response, CURRENT_MIN_P, temperature=temperature))
    want = expected_pg_loss(old, targets, lp)

    data = training_batch(batch, old_output)
    request = current_proxy_request(lp, rollout_temperature=1.0)
    assert set(request[next(iter(request))]["temperatures"]) == {CURRENT_PROXY_NEG_FIELD, CURRENT_PROXY_POS_FIELD}
    tu.assign_non_tensor(data, **request)
    calls, handle = count_forwards(worker)
    try:
        metrics = update(worker, cfg, data)
    finally:
        handle.remove()
    assert sum(metrics["lp_reg/reg_count"]) > 0
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(want, rel=1e-4)
    # one forward per micro-batch, as without Lp-Reg: the targets cost no forward
    assert len(calls) == 2
    # the temperatures matter: pi_old's proxy at the rollout temperature gives another loss
    at_rollout_t = [min_p_proxy_log_prob(lg, r, CURRENT_MIN_P) for lg, r in logits_and_responses]
    assert want != pytest.approx(expected_pg_loss(old, at_rollout_t, lp), rel=1e-4)


def test_current_policy_proxy_without_the_request_fails_loudly(worker, tiny_model):
    cfg = compose_config(tiny_model, f"{LP}.proxy_source=current")
    batch = rollout_batch(seed=8)
    data = training_batch(batch, compute_old_log_prob(worker, batch, proxy=False))
    with pytest.raises(RuntimeError, match=CURRENT_PROXY_NEG_FIELD):
        update(worker, cfg, data)


def test_reference_model_log_prob_is_the_target(worker, tiny_model):
    """``proxy_source=ref``: verl's ``ref_log_prob`` (response-aligned, as verl's trainer stores it) is
    the target, unfiltered; pi_old's proxy is neither needed nor read."""
    cfg = compose_config(tiny_model, f"{LP}.proxy_source=ref", f"{LP}.min_p=0", f"{LP}.neg_fraction=0.3")
    batch = rollout_batch(seed=9)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    old = response_from_nested(old_output["log_probs"], batch["response_mask"]).unbind()
    gen = torch.Generator().manual_seed(1)
    ref = [o + 2.0 * torch.rand(len(o), generator=gen) - 0.5 for o in old]
    nested_ref = torch.nested.as_nested_tensor(ref, layout=torch.jagged)
    # a wrong pi_old proxy in the batch must not be read
    wrong_proxy = full_sequence(batch, [o - 5.0 for o in old])
    fields = {REF_LOG_PROB_FIELD: nested_ref, PROXY_FIELD: wrong_proxy}
    metrics = update(worker, cfg, training_batch(batch, old_output, **fields))
    assert sum(metrics["lp_reg/reg_count"]) > 0
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(expected_pg_loss(old, ref, lp_reg_of(cfg)), rel=1e-4)
    with pytest.raises(RuntimeError, match=REF_LOG_PROB_FIELD):
        update(worker, cfg, training_batch(batch, old_output))


def test_entropy_ranking_uses_the_update_forwards_entropy(worker, tiny_model):
    """``rank_by=entropy`` per micro-batch: the current policy's entropy, which verl computes in the
    update's forward when ``calculate_entropy`` is on (the trainer turns it on)."""
    cfg = compose_config(tiny_model, f"{LP}.rank_by=entropy", f"{LP}.neg_fraction=0.4")
    batch = rollout_batch(seed=10)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    old = response_from_nested(old_output["log_probs"], batch["response_mask"]).unbind()
    entropy = [
        -(torch.softmax(lg, -1) * torch.log_softmax(lg, -1)).sum(-1) for lg in hf_response_logits(tiny_model, batch)
    ]
    gen = torch.Generator().manual_seed(2)
    lifted = [o + 0.5 + 1.5 * torch.rand(len(o), generator=gen) for o in old]

    def data(calculate_entropy: bool):
        built = training_batch(batch, old_output, **{PROXY_FIELD: full_sequence(batch, lifted)})
        tu.assign_non_tensor(built, calculate_entropy=calculate_entropy)
        return built

    metrics = update(worker, cfg, data(True))
    want = expected_pg_loss(old, lifted, lp_reg_of(cfg), entropy=entropy)
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(want, rel=1e-4)
    by_log_prob = expected_pg_loss(old, lifted, lp_reg_of(compose_config(tiny_model, f"{LP}.neg_fraction=0.4")))
    assert want != pytest.approx(by_log_prob, rel=1e-4)

    with pytest.raises(RuntimeError, match="entropy"):
        update(worker, cfg, data(False))


@pytest.mark.parametrize("divergence", ["kl", "abs", "mse"])
def test_divergence_reaches_the_loss(worker, tiny_model, divergence):
    cfg = compose_config(tiny_model, f"{LP}.divergence={divergence}", f"{LP}.neg_fraction=0.4")
    batch = rollout_batch(seed=11)
    old_output = compute_old_log_prob(worker, batch, proxy=False)
    old = response_from_nested(old_output["log_probs"], batch["response_mask"]).unbind()
    lifted = [o + 3.0 for o in old]
    metrics = update(worker, cfg, training_batch(batch, old_output, **{PROXY_FIELD: full_sequence(batch, lifted)}))
    want = expected_pg_loss(old, lifted, lp_reg_of(cfg))
    assert sum(metrics["actor/pg_loss"]) == pytest.approx(want, rel=1e-4)
    assert want != pytest.approx(expected_pg_loss(old, lifted, LpRegConfig(neg_fraction=0.4)), rel=1e-4)
