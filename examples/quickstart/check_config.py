"""Compose the trainer config as ``python -m verl_lpreg.main_ppo`` would and run its start-up checks.

    python3 check_config.py OVERRIDE [OVERRIDE ...]   # exit 0, or 2 with the error on stderr

The quick-start runs it before building anything, so a typo'd key or a bad value fails in seconds
instead of after the model build and warm-up.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import verl_lpreg.main_ppo as entry
    from verl_lpreg.testing.trainer_config import compose_trainer_config

    try:
        entry.check_config(compose_trainer_config(*argv))
    except (HydraException, OmegaConfBaseException, ValueError, TypeError, KeyError) as e:
        print(f"[config error] {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
