"""Build verl parquet files for Lp-Reg's training set and benchmarks (docs/method.md §4, §5, §5b).

``python -m verl_lpreg.data_prep <dataset> --output FILE`` or ``python -m verl_lpreg.data_prep all --output-dir DIR``;
see ``data_prep/README.md``. :data:`DATASETS` maps the CLI names to their specs.
"""

from . import aime24, aime25, dapo_math, math500, minerva, olympiadbench
from .core import PASSTHROUGH_CHAT_TEMPLATE, DataPrepError, prepare

#: CLI name -> :class:`data_prep.core.DatasetSpec`, in the order ``all`` builds them.
DATASETS = {m.SPEC.name: m.SPEC for m in (dapo_math, aime24, aime25, math500, minerva, olympiadbench)}

__all__ = ["DATASETS", "PASSTHROUGH_CHAT_TEMPLATE", "DataPrepError", "prepare"]
