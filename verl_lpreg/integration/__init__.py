"""Lp-Reg wired into verl 0.9.1 through its public extension points, one module per concern.

* :mod:`~verl_lpreg.integration.engine`: the FSDP engine that returns the proxy (engine registry);
* :mod:`~verl_lpreg.integration.losses`: the ``lp_reg``/``high_entropy`` losses and the actor loss
  that hands them their extra inputs (policy-loss registry);
* :mod:`~verl_lpreg.integration.trainer`: ``trainer.v1.trainer_mode=lp_reg`` (trainer registry);
* :mod:`~verl_lpreg.integration.checks`: start-up checks of a composed config;
* :mod:`~verl_lpreg.integration.registry`: the registration itself.

Importing a submodule imports verl's engine or trainer code. This ``__init__`` imports verl first,
so that the registration that ``import verl`` runs never meets one of these modules half imported.
"""

import verl  # noqa: F401
