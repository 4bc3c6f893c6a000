"""Run verl 0.9.1 on a machine without an accelerator (tests, the CPU quick-start).

Load it in every process of a run — the driver and all Ray workers — with::

    VERL_USE_EXTERNAL_MODULES=verl_lpreg.cpu      # imported by verl/__init__.py at `import verl`

(or ``import verl_lpreg.cpu`` before anything calls ``verl.plugin.platform.get_platform()``).
It is never imported by the GPU code path. What it does:

1. registers :class:`~verl_lpreg.cpu.platform.PlatformCPU` as platform ``"cpu"`` and sets
   ``VERL_PLATFORM=cpu`` (verl/plugin/platform/platform_manager.py);
2. sets ``VERL_ENGINE_DEVICE=cuda`` so ``EngineRegistry`` (verl/workers/engine/base.py) picks the
   FSDP engine, which is registered for cuda/npu only but runs unchanged on CPU tensors;
3. registers the ``"hf"`` rollout (transformers ``generate``) in ``RolloutReplicaRegistry``
   (verl/workers/rollout/replica.py) and ``_ROLLOUT_REGISTRY`` (verl/workers/rollout/base.py);
4. registers the Lp-Reg engine for the vendor of this platform (``"cpu"``), as the product does for
   nvidia and huawei (:data:`verl_lpreg.integration.registry.ENGINE_VENDORS`);
5. patches two verl internals: the process-group backend string (:func:`_patch_process_group_backend`)
   and the pinned CPU offload of forward-only FSDP2 engines (:func:`_patch_fsdp2_offload_pinning`);
6. registers the attention implementation ``verl_lpreg_ulysses_eager``
   (:mod:`verl_lpreg.cpu.ulysses_attention`) in transformers' ``AttentionInterface``: eager
   attention, plus Ulysses' all-to-all when the SP group is larger than 1 (verl does that only
   inside flash attention).

The hydra overrides a CPU run needs are in :data:`CPU_OVERRIDES` (and examples/quickstart/run_cpu.sh).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import verl

SUPPORTED_VERL_VERSION = "0.9.1"
if verl.__version__ != SUPPORTED_VERL_VERSION:
    raise ImportError(
        f"verl_lpreg.cpu supports verl {SUPPORTED_VERL_VERSION} only (it registers a platform, a rollout backend "
        f"and patches verl.utils.distributed); found verl {verl.__version__}."
    )

os.environ.setdefault("VERL_PLATFORM", "cpu")
os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")

# Register the platform before importing anything that may resolve it (verl/workers/** calls
# get_platform() at import time, e.g. verl/workers/engine/fsdp/transformer_impl.py:89).
from verl.plugin.platform import platform_manager as _pm  # noqa: E402

from .platform import PlatformCPU  # noqa: E402  (registers "cpu")

# If some code resolved the platform before we were imported (explicit late import), replace it.
# verl/plugin/platform/platform_manager.py: _current_platform is the cached singleton.
# Modules that cache ``device_name = get_device_name()`` at import time get the new name too.
_DEVICE_NAME_CACHES = (
    "verl.workers.engine.fsdp.transformer_impl",
    "verl.workers.engine.torchtitan.transformer_impl",
    "verl.experimental.separation.engine_workers",
    "verl.utils.megatron.router_replay_utils",
)
if _pm._current_platform is not None and os.environ.get("VERL_PLATFORM") == "cpu":
    if not isinstance(_pm._current_platform, PlatformCPU):
        _pm.set_platform(PlatformCPU())
        for _name in _DEVICE_NAME_CACHES:
            _mod = sys.modules.get(_name)
            if _mod is not None and isinstance(getattr(_mod, "device_name", None), str):
                _mod.device_name = "cpu"

from verl.workers.rollout import base as _rollout_base  # noqa: E402
from verl.workers.rollout.replica import RolloutReplicaRegistry  # noqa: E402


def _load_hf_replica():
    from .rollout import HFRolloutReplica

    return HFRolloutReplica


RolloutReplicaRegistry.register("hf", _load_hf_replica)
_rollout_base._ROLLOUT_REGISTRY[("hf", "async")] = "verl_lpreg.cpu.rollout.HFServerAdapter"


def _patch_process_group_backend() -> None:
    """verl/utils/distributed.py ``initialize_global_process_group_ray`` builds the backend string
    ``f"cpu:gloo,{device}:{backend}"`` = ``"cpu:gloo,cpu:gloo"`` on CPU, which torch rejects
    ("Duplicate device type cpu"). Collapse a CPU-only string to ``"gloo"``.

    Its importers bind the name at import time (verl/workers/engine_workers.py,
    verl/checkpoint_engine/base.py), so the patched function is also set there when they are
    already loaded; loading this module at ``import verl`` (VERL_USE_EXTERNAL_MODULES) happens
    before both.
    """
    from verl.utils import distributed as _dist

    original = _dist.initialize_global_process_group_ray
    if getattr(original, "_verl_lpreg_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        parts = [p for p in (backend or "cpu:gloo,cpu:gloo").split(",") if p]
        if all(p.split(":")[0] == "cpu" or ":" not in p for p in parts):
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    initialize_global_process_group_ray._verl_lpreg_cpu = True
    _dist.initialize_global_process_group_ray = initialize_global_process_group_ray
    for mod_name in ("verl.workers.engine_workers", "verl.checkpoint_engine.base"):
        mod = sys.modules.get(mod_name)
        if mod is not None and hasattr(mod, "initialize_global_process_group_ray"):
            mod.initialize_global_process_group_ray = initialize_global_process_group_ray


_patch_process_group_backend()


def _patch_fsdp2_offload_pinning() -> None:
    """verl/workers/engine/fsdp/transformer_impl.py ``_build_fsdp_module`` gives every forward-only
    FSDP2 engine (the reference policy of a KL loss) ``CPUOffloadPolicy(pin_memory=True)``; pinning
    needs an accelerator ("Cannot access accelerator device when none is available"). On CPU the
    offload is a no-op anyway: build the same policy without pinning."""
    from verl.workers.engine.fsdp import transformer_impl as _ti

    policy_cls = _ti.CPUOffloadPolicy
    if policy_cls is None or getattr(policy_cls, "_verl_lpreg_cpu", False):
        return

    def CPUOffloadPolicy(pin_memory: bool = True, **kwargs):  # noqa: N802 (stands in for the class)
        return policy_cls(pin_memory=False, **kwargs)

    CPUOffloadPolicy._verl_lpreg_cpu = True
    _ti.CPUOffloadPolicy = CPUOffloadPolicy


_patch_fsdp2_offload_pinning()  # after the platform exists: the module resolves it at import

from verl_lpreg.integration.registry import register_engine  # noqa: E402

register_engine({"cuda": ["cpu"]})

from .ulysses_attention import register as _register_attention  # noqa: E402

_register_attention()


#: Hydra overrides for verl's ``ppo_trainer`` config that a CPU run needs (one process, one "GPU"),
#: kept in ``overrides.txt`` beside this file, which the quick-start script reads too.
CPU_OVERRIDES: list[str] = [
    line.strip()
    for line in (Path(__file__).with_name("overrides.txt")).read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]

__all__ = ["PlatformCPU", "CPU_OVERRIDES", "SUPPORTED_VERL_VERSION"]
