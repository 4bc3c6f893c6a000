"""OlympiadBench, English text-only open-ended maths (675 problems; docs/method.md §5, §5b).

Default ``Hothan/OlympiadBench`` config ``OE_TO_maths_en_COMP`` (split ``train``), which is
exactly that subset; ``math-ai/olympiadbench`` (split ``test``) is a known alternative.
Columns used: ``question`` (a non-empty ``context`` is put before it), ``final_answer`` (a
list of strings such as ``["$\\frac{1}{2}$"]``; a plain string or number is accepted) and ``id``;
``is_multiple_answer``, ``answer_type``, ``unit``, ``subfield`` and the raw ``final_answer`` go
into ``metadata``.

Ground truth: the ``$`` math delimiters are removed from each answer; one answer is written
as is (a comma list inside it, e.g. ``(1,8,19), (2,7,13)``, is compared as a set by
math-verify); several answers are joined by ``" ||| "`` (:func:`verl_lpreg.reward.encode_multi_answer`),
which ``verl_lpreg.reward`` splits again and matches as a set. A list with an empty or null answer
among others is an error naming the row (dropping it would change the problem); an empty list is a
row without an answer (skipped and reported).
"""

import re

from verl_lpreg.reward import encode_multi_answer

from .core import DatasetSpec, Example, column

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def strip_dollars(answer: str) -> str:
    """``"$x=1$ or $x=2$"`` -> ``"x=1 or x=2"`` (an escaped ``\\$`` is kept)."""
    return _UNESCAPED_DOLLAR.sub("", answer).strip()


def convert(row: dict, config) -> Example:
    raw = column(row, "final_answer", "answer")
    answers = list(raw) if isinstance(raw, list | tuple) else ([] if raw is None else [raw])
    problem = str(row.get("question") or column(row, "problem") or "")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        problem = f"{context.strip()}\n\n{problem}"
    sid = row.get("id")
    metadata = {k: row[k] for k in ("is_multiple_answer", "answer_type", "unit", "subfield") if row.get(k) is not None}
    metadata["final_answer"] = answers
    return Example(
        problem=problem,
        answer=encode_multi_answer([None if a is None else strip_dollars(str(a)) for a in answers]) if answers else "",
        source_id=sid,
        metadata=metadata,
    )


SPEC = DatasetSpec(
    name="olympiadbench",
    data_source="olympiadbench",
    split="test",
    hub={
        "Hothan/OlympiadBench": (("OE_TO_maths_en_COMP",), "train"),
        "math-ai/olympiadbench": ((None,), "test"),
    },
    required=(("question", "problem"), ("final_answer", "answer")),
    convert=convert,
    default_split="test",
)
