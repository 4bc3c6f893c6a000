"""Entry point of the ``verl.plugins`` group: ``import verl`` in any process (Ray workers
included) registers the ``lp_reg`` and ``high_entropy`` losses, the Lp-Reg engine and the
``lp_reg`` v1 trainer.

verl logs a failed plugin import at DEBUG level and carries on; a failure here is logged as
a warning instead, and the error is kept in :data:`REGISTRATION_ERROR` so that a config asking
for ``lp_reg`` can say why it is missing.

Registration imports verl's engine code, which resolves the platform (``VERL_PLATFORM``). When
that platform is not registered yet, its module is still being imported (``verl_lpreg.cpu``
imports verl, which loads this plugin, before it can register "cpu"): registration waits, and
``import verl_lpreg`` (which that module triggers) completes it once the platform exists.
"""

from __future__ import annotations

import logging
import os
import traceback

REGISTRATION_ERROR: str | None = None
REGISTERED = False


def _platform_pending() -> bool:
    from verl.plugin.platform.platform_manager import PlatformRegistry

    requested = os.environ.get("VERL_PLATFORM", "").strip().lower()
    return bool(requested) and PlatformRegistry.get(requested) is None


def register() -> None:
    """Register everything with verl (idempotent); never raises."""
    global REGISTRATION_ERROR, REGISTERED
    if REGISTERED:
        return
    try:
        if _platform_pending():
            REGISTRATION_ERROR = f"platform {os.environ['VERL_PLATFORM']!r} (VERL_PLATFORM) is not registered yet"
            return
        from verl_lpreg.verl_integration import register_all

        register_all()
        REGISTRATION_ERROR = None
        REGISTERED = True
    except Exception as exc:  # a broken plugin must not break `import verl`; say why, loudly
        REGISTRATION_ERROR = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        logging.getLogger("verl_lpreg").warning(
            "verl-lpreg could not register lp_reg with verl (%s); loss_mode=lp_reg will be unavailable.\n%s",
            REGISTRATION_ERROR,
            traceback.format_exc(),
        )


register()
