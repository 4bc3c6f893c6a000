"""verl 0.9.1's sync ``ReplayBuffer`` with a configurable poll interval.

verl/trainer/ppo/v1/replay_buffer.py polls TransferQueue every ``poll_interval`` seconds while it
waits for a batch, and verl/trainer/ppo/v1/trainer_base.py ``_build_replay_buffer`` never passes
that argument, so it is always 2.0 s: with a tiny model every step and every validation pays
~2 s of sleep. verl's documented knob for a different sampler is::

    trainer.v1.sampler.custom_sampler.path=pkg://verl_lpreg.cpu.replay_buffer
    trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer
    +trainer.v1.sampler.sampler_kwargs.poll_interval=0.05

Only the wait changes; sampling is verl's sync ``ReplayBuffer`` (no DAPO group filtering: verl
hands a custom sampler neither ``filter_groups_metric`` nor the batch sizes it needs).
"""

from __future__ import annotations

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

DEFAULT_POLL_INTERVAL = 0.05


class FastPollReplayBuffer(ReplayBuffer):
    def __init__(self, *args, sampler_kwargs=None, poll_interval: float | None = None, **kwargs):
        if poll_interval is None:
            poll_interval = float((sampler_kwargs or {}).get("poll_interval", DEFAULT_POLL_INTERVAL))
        super().__init__(*args, sampler_kwargs=sampler_kwargs, poll_interval=poll_interval, **kwargs)
