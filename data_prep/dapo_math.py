"""DAPO-Math-17k, the training set of every paper run (docs/method.md §4, §5b).

Default source ``open-r1/DAPO-Math-17k-Processed`` (config ``all``, split ``train``): one row
per distinct prompt, ``prompt`` a string, answer in ``solution`` (and
``reward_model.ground_truth``), the original id in ``extra_info.index``. Also reads the
original ``BytedTsinghua-SIA/DAPO-Math-17k`` (~1.79M rows, each problem repeated; ``prompt``
a chat list, answer in ``reward_model.ground_truth``).

Every problem loses DAPO's instruction wrapper (:data:`DAPO_PREFIX` / :data:`DAPO_SUFFIX`,
which asks for an ``Answer:`` line; our prompts ask for ``\\boxed{}`` instead), then exact
duplicates of the stripped text are dropped, first occurrence kept, order unchanged: 17,398
problems from the processed set, as in the paper.
"""

from .core import DatasetSpec, Example, column

DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'


def strip_wrapper(text: str) -> str:
    """The bare problem: DAPO's prefix and suffix removed where present, whitespace trimmed."""
    return text.strip().removeprefix(DAPO_PREFIX.strip()).removesuffix(DAPO_SUFFIX.strip()).strip()


def _problem_text(prompt) -> str:
    """``prompt`` is a string (processed set) or a chat list (original set: last user turn)."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in (prompt or []) if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else ""


def convert(row: dict, config) -> Example:
    reward_model = row.get("reward_model") or {}
    answer = column(row, "solution")
    if answer is None:
        answer = reward_model.get("ground_truth")
    extra = row.get("extra_info") or {}
    source_id = extra.get("index") if isinstance(extra, dict) else None
    return Example(
        problem=strip_wrapper(_problem_text(row.get("prompt"))),
        answer=answer,
        source_id=source_id,
    )


SPEC = DatasetSpec(
    name="dapo-math-17k",
    data_source="dapo_math_17k",
    split="train",
    hub={
        "open-r1/DAPO-Math-17k-Processed": (("all",), "train"),
        "BytedTsinghua-SIA/DAPO-Math-17k": ((None,), "train"),
    },
    required=(("prompt",), ("solution", "reward_model")),
    convert=convert,
    dedup=True,
)
