"""AIME 2025 (30 problems, parts I and II; docs/method.md §5, §5b).

Default ``math-ai/aime25`` (split ``test``: ``problem``, ``answer``, ``id``). Known
alternatives: ``opencompass/AIME2025``, whose two halves are separate configs
(``AIME2025-I``, ``AIME2025-II``; split ``test``; ``question``, ``answer``) -- both are read,
in that order, and ``metadata.part`` says which half a row came from -- and
``yentinglin/aime_2025`` (split ``train``).
"""

from .core import DatasetSpec, Example, column

_PARTS = {"AIME2025-I": "I", "AIME2025-II": "II"}


def convert(row: dict, config) -> Example:
    sid = column(row, "id", "ID", "problem_idx")
    metadata = {k: row[k] for k in ("url", "year") if row.get(k) is not None}
    if config in _PARTS:
        metadata["part"] = _PARTS[config]
    return Example(
        problem=str(column(row, "problem", "question") or ""),
        answer=row.get("answer"),
        source_id=sid,
        metadata=metadata,
    )


SPEC = DatasetSpec(
    name="aime25",
    data_source="aime25",
    split="test",
    hub={
        "math-ai/aime25": ((None,), "test"),
        "opencompass/AIME2025": (("AIME2025-I", "AIME2025-II"), "test"),
        "yentinglin/aime_2025": ((None,), "train"),
    },
    required=(("problem", "question"), ("answer",)),
    convert=convert,
    default_split="test",
)
