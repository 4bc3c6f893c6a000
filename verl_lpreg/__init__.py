"""verl-lpreg: Lp-Reg (Low-probability Regularisation, arXiv 2510.03222) for verl 0.9.1.

``import verl_lpreg`` (or ``import verl`` with this package installed, through the
``verl.plugins`` entry point) registers ``loss_mode=lp_reg`` and ``loss_mode=high_entropy``
with verl; registration is idempotent.
"""

import os

# Our CPU platform (opt-in, VERL_PLATFORM=cpu) must exist before the registration below
# imports verl's engine code, which resolves the platform.
if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
    import verl_lpreg.cpu  # noqa: F401

# verl first: its plugin loader imports verl_lpreg.plugin, which registers everything; importing
# our modules before verl would re-enter them half-initialised through that loader.
import verl  # noqa: F401,E402

from verl_lpreg import plugin as _plugin  # noqa: E402

_plugin.register()  # idempotent: a no-op when verl's plugin loader already registered everything
from verl_lpreg.loss import lp_reg_policy_loss  # noqa: E402
from verl_lpreg.proxy import min_p_proxy_log_prob  # noqa: E402

__all__ = ["lp_reg_policy_loss", "min_p_proxy_log_prob"]
__version__ = "0.1.0"
