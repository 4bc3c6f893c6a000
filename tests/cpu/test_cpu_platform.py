"""verl_lpreg.cpu: platform, process group, engine selection, registries, version guard.

Each check runs in a fresh interpreter: the module changes process-wide state (the platform
singleton, environment variables, a verl function).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("verl")
REPO = Path(__file__).resolve().parents[2]


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("VERL_PLATFORM", "VERL_ENGINE_"))}
    full_env.pop("VERL_USE_EXTERNAL_MODULES", None)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_platform_device_module_and_backend():
    out = _python(
        """
        import verl
        from verl.plugin.platform import get_platform
        from verl.utils.device import get_device_name, get_torch_device, get_nccl_backend, get_resource_name
        from verl.utils.device import get_vendor, get_device_id
        p = get_platform()
        assert type(p).__name__ == "PlatformCPU", p
        assert (get_device_name(), get_vendor(), get_nccl_backend(), get_resource_name()) == ("cpu", "cpu", "gloo", "CPU")
        assert get_device_id() == "cpu"
        d = get_torch_device()
        d.empty_cache(); d.ipc_collect(); d.synchronize(); d.set_per_process_memory_fraction(0.5)
        free, total = d.mem_get_info()
        assert 0 < free <= total
        assert d.memory_allocated() == 0 and d.max_memory_reserved() == 0
        assert d.current_device() == "cpu" and d.is_available()
        s = d.get_rng_state(); d.set_rng_state(s); d.manual_seed(1)
        import torch
        assert torch.zeros(1).to(get_device_id()).device.type == "cpu"
        print("OK")
        """,
        VERL_USE_EXTERNAL_MODULES="verl_lpreg.cpu",
    )
    assert "OK" in out.stdout


def test_process_group_engine_and_rollout_registries():
    out = _python(
        """
        import verl
        from verl_lpreg.testing.process_env import set_rank_env
        set_rank_env()
        from verl.workers import engine_workers
        engine_workers.initialize_global_process_group_ray(timeout_second=None)  # verl builds "cpu:gloo,cpu:gloo"
        import torch, torch.distributed as dist
        assert dist.get_backend() == "gloo"
        t = torch.ones(3); dist.all_reduce(t); assert t.tolist() == [1.0, 1.0, 1.0]
        from verl.workers.engine.base import EngineRegistry
        cls = EngineRegistry.get_engine_cls("language_model", "fsdp2")
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead
        assert issubclass(cls, FSDPEngineWithLMHead), cls
        assert cls.__name__ == "LpRegFSDPEngine", cls  # the harness registers it for its vendor "cpu"
        from verl.workers.rollout.replica import get_rollout_replica_class
        from verl.workers.rollout.base import get_rollout_class
        assert get_rollout_replica_class("hf").__name__ == "HFRolloutReplica"
        assert get_rollout_class("hf", "async").__name__ == "HFServerAdapter"
        from verl.utils.import_utils import load_extern_type
        rb = load_extern_type("pkg://verl_lpreg.cpu.replay_buffer", "FastPollReplayBuffer")
        from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
        assert issubclass(rb, ReplayBuffer)
        b = rb(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None, max_off_policy_strategy="drop",
               sampler_kwargs={"poll_interval": 0.01})
        assert b.poll_interval == 0.01
        from verl.workers.engine.fsdp import transformer_impl
        assert transformer_impl.CPUOffloadPolicy(pin_memory=True).pin_memory is False  # the ref model's policy
        dist.destroy_process_group()
        print("OK")
        """,
        VERL_USE_EXTERNAL_MODULES="verl_lpreg.cpu",
    )
    assert "OK" in out.stdout


def test_explicit_late_import_replaces_platform():
    out = _python(
        """
        import verl
        from verl.plugin.platform import get_platform
        get_platform()  # resolved before our module: falls back to nvidia on this machine
        import verl_lpreg.cpu
        from verl.utils.device import get_device_name
        assert get_device_name() == "cpu"
        print("OK")
        """
    )
    assert "OK" in out.stdout


def test_refuses_other_verl_versions():
    proc = subprocess.run(
        [sys.executable, "-c", "import verl; verl.__version__ = '0.9.0'; import verl_lpreg.cpu"],
        # a fresh process where nothing has imported verl_lpreg.cpu yet
        env={
            **{k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_USE_EXTERNAL_MODULES")},
            "PYTHONPATH": str(REPO),
        },
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert "supports verl 0.9.1 only" in proc.stderr
