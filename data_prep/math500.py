"""MATH-500 (500 problems; docs/method.md §5, §5b): ``HuggingFaceH4/MATH-500``, split ``test``.

Columns used: ``problem``, ``answer``, ``unique_id`` (``extra_info.source_id``); ``subject``
and ``level`` go into ``metadata``.
"""

from .core import DatasetSpec, Example


def convert(row: dict, config) -> Example:
    sid = row.get("unique_id")
    return Example(
        problem=str(row.get("problem") or ""),
        answer=row.get("answer"),
        source_id=sid,
        metadata={k: row[k] for k in ("subject", "level") if row.get(k) is not None},
    )


SPEC = DatasetSpec(
    name="math500",
    data_source="math500",
    split="test",
    hub={"HuggingFaceH4/MATH-500": ((None,), "test")},
    required=(("problem",), ("answer",)),
    convert=convert,
    default_split="test",
)
