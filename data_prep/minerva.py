"""Minerva Math (272 problems; docs/method.md §5, §5b): ``math-ai/minervamath``, split ``test``.

Columns used: ``question`` (or ``problem``) and ``answer``. The source has no id column; an
``id``/``idx`` column is used if a source has one, else ``extra_info.source_id`` is empty and
``extra_info.index`` identifies the row.
"""

from .core import DatasetSpec, Example, column


def convert(row: dict, config) -> Example:
    sid = column(row, "id", "idx", "unique_id")
    return Example(
        problem=str(column(row, "question", "problem") or ""),
        answer=row.get("answer"),
        source_id=sid,
    )


SPEC = DatasetSpec(
    name="minerva",
    data_source="minerva",
    split="test",
    hub={"math-ai/minervamath": ((None,), "test")},
    required=(("question", "problem"), ("answer",)),
    convert=convert,
    default_split="test",
)
