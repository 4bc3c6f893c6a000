"""AIME 2024 (30 problems; docs/method.md §5, §5b): ``HuggingFaceH4/aime_2024``, split ``train``.

Columns used: ``problem``, ``answer``, ``id`` (kept as ``extra_info.source_id``); ``url`` and
``year`` go into ``metadata`` where present. Alternative sources with ``question`` instead of
``problem`` work too.
"""

from .core import DatasetSpec, Example, column


def convert(row: dict, config) -> Example:
    sid = column(row, "id", "ID", "problem_idx")
    return Example(
        problem=str(column(row, "problem", "question") or ""),
        answer=row.get("answer"),
        source_id=sid,
        metadata={k: row[k] for k in ("url", "year") if row.get(k) is not None},
    )


SPEC = DatasetSpec(
    name="aime24",
    data_source="aime24",
    split="test",
    hub={"HuggingFaceH4/aime_2024": ((None,), "train")},
    required=(("problem", "question"), ("answer",)),
    convert=convert,
)
