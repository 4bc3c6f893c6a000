"""Entry point of the ``verl.plugins`` group: ``import verl`` in any process (Ray workers
included) registers the ``lp_reg`` and ``high_entropy`` losses, the Lp-Reg engine and the
``lp_reg`` v1 trainer (:func:`verl_lpreg.integration.registry.register_all`).

verl logs a failed plugin import at DEBUG level and carries on; a failure here is logged as
a warning instead, and the error is kept in :data:`REGISTRATION_ERROR` so that a config asking
for ``lp_reg`` can say why it is missing.
"""

from __future__ import annotations

import logging
import traceback

REGISTRATION_ERROR: str | None = None


def register() -> None:
    """Register everything with verl (idempotent); never raises."""
    global REGISTRATION_ERROR
    try:
        from verl_lpreg.integration.registry import register_all

        register_all()
        REGISTRATION_ERROR = None
    except Exception as exc:  # a broken plugin must not break `import verl`; say why, loudly
        REGISTRATION_ERROR = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        logging.getLogger("verl_lpreg").warning(
            "verl-lpreg could not register lp_reg with verl (%s); loss_mode=lp_reg will be unavailable.\n%s",
            REGISTRATION_ERROR,
            traceback.format_exc(),
        )


register()
