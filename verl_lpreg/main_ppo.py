"""``python -m verl_lpreg.main_ppo``: verl 0.9.1's ``main_ppo`` with the Lp-Reg config.

The hydra config ``verl_lpreg/config/lp_reg_trainer.yaml`` is verl's ``ppo_trainer`` plus our
keys; every verl override works as with ``python -m verl.trainer.main_ppo``, and hydra's own
flags too (``--cfg job`` prints the composed config and exits). Before any Ray process starts
the Lp-Reg settings are validated, so a bad value fails here with the key's name.
"""

from __future__ import annotations

import hydra

# Importing verl registers the Lp-Reg losses, engine, trainer and config resolvers (verl.plugins
# entry point); check_config names the reason when that failed. verl first: the registration
# imports our modules, and must not find one of them half imported.
import verl  # noqa: F401, I001

from verl_lpreg.integration.checks import check_config


@hydra.main(config_path="config", config_name="lp_reg_trainer", version_base=None)
def main(config) -> None:
    from verl.trainer.main_ppo import main as verl_main

    check_config(config)
    verl_main(config)


if __name__ == "__main__":
    main()
