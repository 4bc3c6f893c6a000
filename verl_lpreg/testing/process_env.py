"""The environment of one torch.distributed rank, for driving verl's workers without a launcher."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_rank_env(rank: int = 0, world_size: int = 1, port: int | None = None) -> None:
    """What ``torchrun`` would set for ``rank`` of ``world_size`` on this machine (a free port unless
    ``port`` is given: every rank of one group must get the same one)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port() if port is None else port),
    )
