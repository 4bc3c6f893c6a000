"""Our trainer config, composed in-process as ``python -m verl_lpreg.main_ppo`` composes it."""

from __future__ import annotations

from pathlib import Path

#: The hydra config directory of the package (``lp_reg_trainer.yaml``: verl's ``ppo_trainer`` + our keys).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def compose_trainer_config(*overrides: str):
    """``lp_reg_trainer`` with hydra ``overrides`` (an OmegaConf ``DictConfig``, unresolved)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("lp_reg_trainer", overrides=list(overrides))
