"""Compose the trainer config as ``python -m verl_lpreg.main_ppo`` would and run its start-up checks.

    python3 check_config.py OVERRIDE [OVERRIDE ...]   # exit 0, or 2 with the error on stderr

The quick-start runs it before building anything, so a typo'd key or a bad value fails in seconds
instead of after the model build and warm-up.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import verl_lpreg.main_ppo as entry

    config_dir = os.path.join(os.path.dirname(os.path.abspath(entry.__file__)), "config")
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            config = compose(config_name="lp_reg_trainer", overrides=argv)
        entry.check_config(config)
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, KeyError) as e:
        print(f"[config error] {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
