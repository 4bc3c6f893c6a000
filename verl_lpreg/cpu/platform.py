"""A CPU platform for verl 0.9.1 (``verl/plugin/platform``).

verl 0.9.1 registers only ``nvidia``, ``npu`` and ``rocm`` and falls back to ``nvidia`` when no
accelerator is found. :class:`PlatformCPU` is registered as ``"cpu"`` and selected with
``VERL_PLATFORM=cpu``. Its :attr:`device_module` stands in for ``torch.cuda`` wherever verl calls
``get_torch_device().<fn>()`` (empty_cache, mem_get_info, memory stats, rng state, ...).
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry


def _meminfo() -> tuple[int, int]:
    """(available, total) host memory in bytes, from /proc/meminfo (no psutil in verl-core)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    free = total
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return free, total


def _zero(*_args, **_kwargs) -> int:
    return 0


def _noop(*_args, **_kwargs) -> None:
    return None


def _build_device_module() -> types.ModuleType:
    """``torch.cpu`` plus the ``torch.cuda`` functions verl 0.9.1 calls on ``get_torch_device()``.

    Checked with ``grep -rhoE "get_torch_device\\(\\)\\.[a-zA-Z_]+"`` over the installed wheel.
    """
    mod = types.ModuleType("verl_lpreg.cpu.device")
    for name in (
        "is_available",
        "synchronize",
        "current_stream",
        "stream",
        "Stream",
        "Event",
        "device_count",
        "set_device",
        "StreamContext",
    ):
        if hasattr(torch.cpu, name):
            setattr(mod, name, getattr(torch.cpu, name))
    mod.current_device = lambda: "cpu"
    mod.get_device_name = lambda *_a, **_k: "cpu"
    mod.empty_cache = _noop
    mod.ipc_collect = _noop
    mod.reset_peak_memory_stats = _noop
    mod.set_per_process_memory_fraction = _noop
    mod.mem_get_info = lambda *_a, **_k: _meminfo()
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated", "max_memory_reserved"):
        setattr(mod, name, _zero)
    mod.memory_stats = lambda *_a, **_k: {}
    mod.get_rng_state = lambda *_a, **_k: torch.get_rng_state()
    mod.set_rng_state = lambda state, *_a, **_k: torch.set_rng_state(state)
    mod.manual_seed = lambda seed: torch.manual_seed(seed)
    mod.manual_seed_all = lambda seed: torch.manual_seed(seed)
    mod.is_bf16_supported = lambda *_a, **_k: True
    mod.get_device_capability = lambda *_a, **_k: (None, None)
    return mod


DEVICE_MODULE = _build_device_module()


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """CPU-only platform: torch device ``cpu``, collectives over gloo, Ray resource ``CPU``.

    ``vendor_name`` is ``"cpu"`` so an engine can be registered under the key
    ``(VERL_ENGINE_DEVICE, "cpu")`` (verl/workers/engine/base.py ``EngineRegistry.get_engine_cls``).
    """

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: only VERL_PLATFORM=cpu selects it.
        return False

    def current_device(self):
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets no such variable for CPU resources; a name nobody else uses.
        return "VERL_LPREG_CPU_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "CPU"

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_cpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
