"""Hand-built rollout rows in the layout verl's agent loop stores, for driving verl's engine worker
directly (tests, benchmarks, the GPU check) without a rollout."""

from __future__ import annotations

import torch


def rollout_row(prompt: torch.Tensor, response: torch.Tensor) -> dict[str, torch.Tensor]:
    """One sample's per-token tensors (every response token valid), as verl's jagged batch holds them."""
    input_ids = torch.cat([prompt, response])
    ones = torch.ones(len(response), dtype=torch.int64)
    return {
        "prompts": prompt,
        "responses": response,
        "response_mask": ones,
        "loss_mask": ones,
        "input_ids": input_ids,
        "position_ids": torch.arange(len(input_ids)),
        "attention_mask": torch.ones(len(input_ids), dtype=torch.int64),
    }


def set_update_settings(data, mini_batch_size: int) -> None:
    """The non-tensor settings verl's trainer gives ``update_actor``: one mini-batch of
    ``mini_batch_size`` samples, one epoch, no shuffling, temperature 1, no entropy."""
    from verl.utils import tensordict_utils as tu

    tu.assign_non_tensor(
        data,
        calculate_entropy=False,
        mini_batch_size=mini_batch_size,
        global_batch_size=mini_batch_size,
        epochs=1,
        seed=1,
        dataloader_kwargs={"shuffle": False},
        temperature=1.0,
    )
