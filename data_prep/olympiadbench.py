"""OlympiadBench, English text-only open-ended maths (675 problems; docs/method.md §5, §5b).

Default ``Hothan/OlympiadBench`` config ``OE_TO_maths_en_COMP`` (split ``train``), which is
exactly that subset; ``math-ai/olympiadbench`` (split ``test``) is a known alternative.
Columns used: ``question`` (a non-empty ``context`` is put before it), ``final_answer`` (a
list of strings such as ``["$\\frac{1}{2}$"]``; a plain string is accepted) and ``id``;
``is_multiple_answer``, ``answer_type``, ``unit``, ``subfield`` and the raw ``final_answer`` go
into ``metadata``.

Ground truth: the ``$`` math delimiters are removed from each answer; one answer is written
as is (a comma list inside it, e.g. ``(1,8,19), (2,7,13)``, is compared as a set by
math-verify); several answers are joined by ``" ||| "`` (:func:`data_prep.core.encode_answers`),
which ``verl_lpreg.reward`` splits again and matches as a set.
"""

import re

from .core import DatasetSpec, Example, column, encode_answers

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")


def strip_dollars(answer: str) -> str:
    """``"$x=1$ or $x=2$"`` -> ``"x=1 or x=2"`` (an escaped ``\\$`` is kept)."""
    return _UNESCAPED_DOLLAR.sub("", answer).strip()


def convert(row: dict, config) -> Example:
    raw = column(row, "final_answer", "answer")
    answers = [raw] if isinstance(raw, str) else list(raw or [])
    problem = str(row.get("question") or column(row, "problem") or "")
    context = row.get("context")
    if isinstance(context, str) and context.strip():
        problem = f"{context.strip()}\n\n{problem}"
    sid = row.get("id")
    metadata = {k: row[k] for k in ("is_multiple_answer", "answer_type", "unit", "subfield") if row.get(k) is not None}
    metadata["final_answer"] = answers
    return Example(
        problem=problem,
        answer=encode_answers(strip_dollars(str(a)) for a in answers if a is not None),
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
