"""Registration of Lp-Reg with verl's registries (policy losses, engines, v1 trainers), idempotent.

It runs inside ``import verl`` (the ``verl.plugins`` entry point), which the first import of any of
our modules that needs verl triggers, while that module is still half imported. So the modules
imported here (engine, losses, trainer) import, at their top, only verl, torch and our modules that
do not need verl (:mod:`verl_lpreg.names`, :mod:`verl_lpreg.proxy`); the rest they import where
they use it.
"""

from __future__ import annotations

import importlib.util

#: Vendors whose FSDP engine verl-lpreg replaces. Keys of verl's ``EngineRegistry`` are
#: (device, vendor), and a vendor-specific entry wins over verl's device-only one. Elsewhere verl's
#: engine runs and the trainer stops at the first step with a clear error (no silent fallback to
#: the vanilla loss).
ENGINE_VENDORS = {"cuda": ["nvidia"], "npu": ["huawei"]}


def register_losses() -> None:
    """Add ``lp_reg`` and ``high_entropy`` to verl's policy-loss registry."""
    from verl.trainer.ppo.core_algos import register_policy_loss

    from verl_lpreg.integration.losses import compute_policy_loss_high_entropy, compute_policy_loss_lp_reg

    register_policy_loss("lp_reg")(compute_policy_loss_lp_reg)
    register_policy_loss("high_entropy")(compute_policy_loss_high_entropy)


def register_engine(vendors: dict[str, list[str]] = ENGINE_VENDORS) -> type:
    """Register :class:`~verl_lpreg.integration.engine.LpRegFSDPEngine` for verl's ``fsdp`` and
    ``fsdp2`` backends under ``{device: [vendor, ...]}`` (keys already held by it are skipped)."""
    from verl.workers.engine.base import EngineRegistry

    from verl_lpreg.integration.engine import LpRegFSDPEngine

    registry = EngineRegistry._engines.get("language_model", {})
    for device, device_vendors in vendors.items():
        for vendor in device_vendors:
            if all(registry.get(backend, {}).get((device, vendor)) is LpRegFSDPEngine for backend in ("fsdp", "fsdp2")):
                continue
            EngineRegistry.register(
                model_type="language_model", backend=["fsdp", "fsdp2"], device=device, vendor=vendor
            )(LpRegFSDPEngine)
    return LpRegFSDPEngine


def register_trainer() -> type:
    """Register :class:`~verl_lpreg.integration.trainer.LpRegTrainer` as ``trainer.v1.trainer_mode=lp_reg``."""
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
    from verl.trainer.ppo.v1.trainer_base import register_trainer as verl_register_trainer

    from verl_lpreg.integration.trainer import LpRegTrainer
    from verl_lpreg.names import TRAINER_MODE

    if TRAINER_REGISTRY.get(TRAINER_MODE) is LpRegTrainer:
        return LpRegTrainer
    return verl_register_trainer(TRAINER_MODE)(LpRegTrainer)


def _module_file(module: str) -> str:
    """Path of an importable module's source file, without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"${{lpreg_module_file:{module}}}: module {module!r} cannot be found")
    return spec.origin


def register_resolvers() -> None:
    """OmegaConf resolvers used by ``lp_reg_trainer.yaml``."""
    from omegaconf import OmegaConf

    from verl_lpreg.names import PASSTHROUGH_CHAT_TEMPLATE

    OmegaConf.register_new_resolver("lpreg_module_file", _module_file, replace=True)
    OmegaConf.register_new_resolver("lpreg_passthrough_chat_template", lambda: PASSTHROUGH_CHAT_TEMPLATE, replace=True)


def register_all() -> None:
    """Everything verl needs for ``loss_mode=lp_reg`` / ``high_entropy`` and ``trainer_mode=lp_reg``."""
    register_resolvers()
    register_losses()
    register_engine()
    register_trainer()
