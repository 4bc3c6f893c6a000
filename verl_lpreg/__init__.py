"""verl-lpreg: Lp-Reg (Low-probability Regularisation, arXiv 2510.03222) for verl 0.9.1.

``import verl_lpreg`` imports nothing heavy. With the package installed, ``import verl``
registers ``loss_mode=lp_reg``/``high_entropy`` and ``trainer.v1.trainer_mode=lp_reg`` through
the ``verl.plugins`` entry point (:mod:`verl_lpreg.plugin`); :func:`register_all` does the same
explicitly. The names below are loaded on first use.
"""

from importlib import import_module

_EXPORTS = {
    "lp_reg_policy_loss": "verl_lpreg.loss",
    "min_p_proxy_log_prob": "verl_lpreg.proxy",
    "register_all": "verl_lpreg.integration.registry",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'verl_lpreg' has no attribute {name!r}")
