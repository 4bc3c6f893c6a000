"""Shared machinery of ``python -m data_prep``: read a source, build verl rows, write parquet.

Each dataset module (``dapo_math``, ``aime24``, ...) declares a :class:`DatasetSpec`: where
the data lives on the Hub (docs/method.md §5b), which columns it needs, and how one source row becomes
an :class:`Example` (problem text, ground truth, the source's id). This module does the rest
the same way for all of them:

* read the source: a Hub id through ``datasets.load_dataset`` (config/split from the spec)
  or a local ``.parquet`` / ``.jsonl`` / ``.json`` file in the same schema (works offline);
* check the columns up front, drop exact duplicate problems where the spec asks for it
  (DAPO), skip rows without a problem or an answer (*skip-and-report*: the count and the
  first ids go to stderr; no row left is an error);
* render the prompt (``r1`` or ``chat`` template, below) and write verl's row layout
  (docs/method.md §5b) to parquet atomically: a temporary file in the target directory, then
  ``os.replace``; a failed run leaves no partial file. Output is deterministic.

Prompt templates (docs/method.md §5b). ``r1`` (default): the user message holds the complete
R1-Zero style text of the reference code with the problem and a ``\\boxed{}`` instruction
inserted; the model must then see that text verbatim, so training and evaluation render it
with :data:`PASSTHROUGH_CHAT_TEMPLATE` (the trainer sets
``actor_rollout_ref.model.custom_chat_template`` to it). ``chat``: the user message is the
problem plus the ``\\boxed{}`` instruction, rendered with the model's own chat template
(``custom_chat_template=null``). ``extra_info.template`` records which one a row uses.

Row layout: ``data_source`` (one of :data:`DATA_SOURCES`), ``prompt`` (one user message),
``ability`` ``"math"``, ``reward_model`` ``{style: "rule", ground_truth}``, ``extra_info``
``{split, index, source_id, problem, template, metadata}``. ``extra_info`` has the same fields
for every dataset (dataset-specific ones go into the JSON string ``metadata``) so that verl
can concatenate several benchmark files into one validation set.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from verl_lpreg.atomic_io import OutputPathError, check_output_path, write_atomic
from verl_lpreg.names import MULTI_ANSWER_SEP, PASSTHROUGH_CHAT_TEMPLATE

__all__ = [
    "BOXED_INSTRUCTION",
    "DATA_SOURCES",
    "MULTI_ANSWER_SEP",
    "OUTPUT_SCHEMA_FIELDS",
    "PASSTHROUGH_CHAT_TEMPLATE",
    "R1_PREFIX",
    "R1_SUFFIX",
    "TEMPLATES",
    "DataPrepError",
    "DatasetSpec",
    "Example",
    "prepare",
    "render_prompt",
]

#: ``data_source`` values written by data_prep (stable: metrics are keyed by them).
DATA_SOURCES = ("dapo_math_17k", "aime24", "aime25", "math500", "minerva", "olympiadbench")

#: Answer-format instruction appended to every problem (both templates).
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}"

#: The reference code's R1-Zero text (its ``zero_temp``) around ``{prompt}``.
R1_PREFIX = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: "
)
R1_SUFFIX = ".\nAssistant: Let me solve this step by step.\n<think>"

TEMPLATES = ("r1", "chat")

OUTPUT_SCHEMA_FIELDS = ("data_source", "prompt", "ability", "reward_model", "extra_info")

_LOCAL_SUFFIXES = (".parquet", ".jsonl", ".json")


class DataPrepError(Exception):
    """A user-facing error: bad name, unreadable source, missing column, nothing to write."""


@dataclass(frozen=True)
class Example:
    """One problem as a dataset module extracts it from a source row."""

    problem: str
    answer: str  #: the ground truth, already encoded (``verl_lpreg.reward.encode_multi_answer``)
    source_id: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        # A source value may be missing (None) or not a string (ints, numpy scalars): the
        # answer and the id are text here, empty when missing.
        for name in ("answer", "source_id"):
            value = getattr(self, name)
            object.__setattr__(self, name, "" if value is None else str(value))


@dataclass(frozen=True)
class DatasetSpec:
    """What one dataset module declares; see the module docstring.

    ``hub`` maps a Hub id to ``(configs, split)``; the first entry is the default source and
    the others are known alternatives. A Hub id not listed is loaded with no config and
    ``default_split``. ``required`` lists columns as tuples of alternatives (any one of a
    tuple must be present). ``convert(row, config)`` returns an :class:`Example` (its problem
    or answer may be empty: such rows are skipped and reported).
    """

    name: str
    data_source: str
    split: str
    hub: dict
    required: tuple
    convert: Callable[[dict, str | None], Example]
    default_split: str = "train"
    dedup: bool = False

    @property
    def default_source(self) -> str:
        return next(iter(self.hub))


def render_prompt(problem: str, template: str) -> list[dict]:
    """The one-message chat list for ``problem`` under ``template`` (``r1`` or ``chat``)."""
    problem = problem.strip()
    if template == "r1":
        content = f"{R1_PREFIX}{problem}\n{BOXED_INSTRUCTION}{R1_SUFFIX}"
    elif template == "chat":
        content = f"{problem}\n\n{BOXED_INSTRUCTION}."
    else:
        raise DataPrepError(f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}")
    return [{"role": "user", "content": content}]


def column(row: dict, *names: str):
    """The value of the first of ``names`` present in ``row`` (None if none is)."""
    for n in names:
        if n in row:
            return row[n]
    return None


# --------------------------------------------------------------------------------------
# Reading sources
# --------------------------------------------------------------------------------------


def looks_like_path(name: str) -> bool:
    """True for a name that is a file path rather than a Hub id (``owner/name``).

    Exists, or starts with ``.``, ``/`` or ``~``, or holds a backslash or more than one ``/``,
    or ends in a file suffix (``.parquet``, ``.jsonl``, a typo such as ``.parqet``). Such a name
    that does not exist is reported as a missing file instead of being tried on the Hub.
    """
    return (
        os.path.exists(name)
        or name.startswith((".", "/", "~"))
        or "\\" in name
        or name.count("/") > 1
        or re.search(r"\.[A-Za-z][A-Za-z0-9]{0,9}$", name) is not None
    )


def _read_local(path: str) -> tuple[list[str], Iterator[dict]]:
    """(columns, rows) of a local parquet / jsonl / json file."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise DataPrepError(f"source {path} is a directory; give a {'/'.join(_LOCAL_SUFFIXES)} file")
        raise DataPrepError(
            f"source file not found: {path} (a --source with a file suffix or a path is read as a local file, "
            "not looked up on the Hub)"
        )
    lower = path.lower()
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            columns = list(pf.schema_arrow.names)
            if pf.metadata.num_rows == 0:
                raise DataPrepError(f"source {path} has no rows")

            def batches():
                try:
                    for batch in pf.iter_batches(batch_size=4096):
                        yield from batch.to_pylist()
                except Exception as e:
                    raise DataPrepError(f"cannot read source {path}: {type(e).__name__}: {e}") from None

            return columns, batches()
        if lower.endswith(".jsonl"):
            records = _iter_jsonl(path)
            first = next(records, None)
            if first is None:
                raise DataPrepError(f"source {path} has no rows")
            return list(first), itertools.chain([first], records)
        if lower.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                try:
                    records = json.load(f)
                except ValueError as e:
                    raise DataPrepError(f"source {path} is not valid JSON: {e}") from None
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise DataPrepError(f"source {path} must hold a JSON array of objects (one per row)")
            if not records:
                raise DataPrepError(f"source {path} has no rows")
            return list(records[0]), iter(records)
        raise DataPrepError(f"source {path}: unsupported file type; use one of {', '.join(_LOCAL_SUFFIXES)}")
    except DataPrepError:
        raise
    except (OSError, UnicodeDecodeError) as e:
        raise DataPrepError(f"cannot read source {path}: {e}") from None
    except Exception as e:  # pyarrow's errors for a corrupt file have no common base class
        raise DataPrepError(f"cannot read source {path}: {type(e).__name__}: {e}") from None


def _iter_jsonl(path: str) -> Iterator[dict]:
    """The objects of a JSON-lines file, one per non-blank line (streamed)."""
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise DataPrepError(f"source {path} line {lineno} is not valid JSON: {e}") from None
                if not isinstance(rec, dict):
                    raise DataPrepError(f"source {path} line {lineno} is not a JSON object")
                yield rec
    except (OSError, UnicodeDecodeError) as e:
        raise DataPrepError(f"cannot read source {path}: {e}") from None


def _read_hub(source: str, spec: DatasetSpec) -> tuple[list[str], Iterator[tuple[str | None, dict]]]:
    """(columns, (config, row) pairs) of a Hub dataset, over all the configs the spec lists."""
    configs, split = spec.hub.get(source, ((None,), spec.default_split))
    try:
        import datasets
    except ImportError as e:
        raise DataPrepError(f"reading {source} from the Hub needs the 'datasets' package: {e}") from None
    loaded = []
    for config in configs:
        try:
            ds = datasets.load_dataset(source, config, split=split)
        except Exception as e:
            where = f"{source}" + (f" (config {config!r}" if config else " (") + f", split {split!r})"
            raise DataPrepError(
                f"cannot load {where} from the Hub: {type(e).__name__}: {e}. "
                "Offline? Pass --source <local .parquet/.jsonl/.json in the same schema>."
            ) from None
        loaded.append((config, ds))
    if sum(len(ds) for _, ds in loaded) == 0:
        raise DataPrepError(f"source {source} (split {split!r}) has no rows")
    columns = list(loaded[0][1].column_names)

    def rows():
        for config, ds in loaded:
            for row in ds:
                yield config, row

    return columns, rows()


def _check_columns(columns: list[str], spec: DatasetSpec, source: str) -> None:
    for alternatives in spec.required:
        if not any(c in columns for c in alternatives):
            wanted = " or ".join(repr(c) for c in alternatives)
            raise DataPrepError(
                f"source {source} has no column {wanted} (needed by {spec.name}); "
                f"columns found: {', '.join(columns) or '(none)'}"
            )


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("split", pa.string()),
                        ("index", pa.int64()),
                        ("source_id", pa.string()),
                        ("problem", pa.string()),
                        ("template", pa.string()),
                        ("metadata", pa.string()),
                    ]
                ),
            ),
        ]
    )


def write_parquet_atomic(rows: list[dict], output: str) -> None:
    """Write ``rows`` to ``output`` atomically (:func:`verl_lpreg.atomic_io.write_atomic`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=_schema())
    try:
        write_atomic(output, lambda tmp: pq.write_table(table, tmp))
    except OutputPathError as e:
        raise DataPrepError(str(e)) from None


# --------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------


def _check_text(ex: Example, source: str, row_id: str) -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate such as ``"\\ud800"`` in JSON)."""
    fields = {"problem": ex.problem, "answer": ex.answer, "id": ex.source_id}
    fields["metadata"] = json.dumps(ex.metadata, ensure_ascii=False, default=str)
    for name, text in fields.items():
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError as e:
            bad = text[e.start : e.end].encode("unicode_escape").decode()
            raise DataPrepError(
                f"source {source} row {row_id}: the {name} holds {bad!r} at position {e.start}, "
                "which is not valid Unicode text (a lone surrogate); fix the source"
            ) from None


@dataclass
class Report:
    """Counts of one run (printed by the CLI)."""

    name: str
    source: str
    output: str
    read: int = 0
    written: int = 0
    duplicates: int = 0
    skipped_no_problem: list = field(default_factory=list)
    skipped_no_answer: list = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.name}: wrote {self.written} rows to {self.output}", f"read {self.read} from {self.source}"]
        if self.duplicates:
            parts.append(f"{self.duplicates} duplicate problems dropped ({self.written} unique)")
        if self.skipped_no_problem:
            parts.append(f"{len(self.skipped_no_problem)} rows without a problem skipped")
        if self.skipped_no_answer:
            parts.append(f"{len(self.skipped_no_answer)} rows without an answer skipped")
        return "; ".join(parts)


def prepare(
    spec: DatasetSpec, output: str, source: str | None = None, limit: int | None = None, template: str = "r1", log=None
) -> Report:
    """Read ``source`` (default: the spec's Hub id), build verl rows, write ``output``.

    Raises :class:`DataPrepError` for a bad source, missing column, or no usable row; in that
    case nothing is written.
    """
    if template not in TEMPLATES:
        raise DataPrepError(f"unknown template {template!r}; allowed: {', '.join(TEMPLATES)}")
    if limit is not None and limit < 1:
        raise DataPrepError(f"--limit must be >= 1, got {limit}")
    try:
        check_output_path(output, "--output")
    except OutputPathError as e:
        raise DataPrepError(str(e)) from None
    source = source or spec.default_source
    if looks_like_path(source):
        columns, plain = _read_local(source)
        pairs = ((None, r) for r in plain)
    else:
        columns, pairs = _read_hub(source, spec)
    _check_columns(columns, spec, source)

    report = Report(spec.name, source, output)
    rows, seen = [], set()
    for position, (config, raw) in enumerate(pairs):
        report.read += 1
        missing = [alts for alts in spec.required if not any(c in raw for c in alts)]
        if missing:
            raise DataPrepError(
                f"source {source} row {position} has no column {' or '.join(map(repr, missing[0]))}; "
                f"columns found: {', '.join(raw)}"
            )
        try:
            ex = spec.convert(raw, config)
        except ValueError as e:  # e.g. an empty answer among several (encode_multi_answer)
            raise DataPrepError(f"source {source} row {position}: {e}") from None
        row_id = ex.source_id or str(position)
        _check_text(ex, source, row_id)
        problem = (ex.problem or "").strip()
        if not problem:
            report.skipped_no_problem.append(row_id)
            continue
        if not (ex.answer or "").strip():
            report.skipped_no_answer.append(row_id)
            continue
        if spec.dedup:
            if problem in seen:
                report.duplicates += 1
                continue
            seen.add(problem)
        rows.append(
            {
                "data_source": spec.data_source,
                "prompt": render_prompt(problem, template),
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": ex.answer.strip()},
                "extra_info": {
                    "split": spec.split,
                    "index": len(rows),
                    "source_id": ex.source_id,
                    "problem": problem,
                    "template": template,
                    "metadata": json.dumps(ex.metadata, sort_keys=True, ensure_ascii=False, default=str),
                },
            }
        )
        if limit is not None and len(rows) >= limit:
            break
    for what, ids in (("a problem", report.skipped_no_problem), ("an answer", report.skipped_no_answer)):
        if ids:
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            print(f"{spec.name}: skipped {len(ids)} rows without {what} (ids: {shown})", file=log or sys.stderr)
    if not rows:
        raise DataPrepError(f"{spec.name}: no usable row in {source} (read {report.read}); nothing written")
    write_parquet_atomic(rows, output)
    report.written = len(rows)
    return report
