"""Rule-based math reward for verl: last ``\\boxed{}`` + math-verify, safe inside Ray actors.

This is the package's reward function (docs/method.md §5, §5b). verl 0.9.1 loads it with
``reward.custom_reward_function.path=<this file>`` (or ``pkg://verl_lpreg.reward``) and
``reward.custom_reward_function.name=compute_score``; its reward managers call it with the
keywords ``data_source, solution_str, ground_truth, extra_info`` from an executor *thread*
of a Ray actor.

Scoring: only the LAST ``\\boxed{...}`` (or ``\\fbox{...}``) of the response counts; no box
scores 0; the boxed answer and the ground truth are compared symbolically by math-verify
(``\\frac12`` = ``0.5``, ``x=3`` = ``3``, sets, intervals), never by string compare alone (an
exactly identical string is accepted without calling math-verify, which is sound). As the
reference code for ``\\boxed{...}``; it differs on purpose in three forms (docs/method.md §10):
the reference (``prime_math`` via the DAPO reward manager) scores ``\\fbox{5}``, ``\\boxed 5``
and ``\\boxed {5}`` as 0, we read the answer and score 1 when it is right.

Why a worker pool: math-verify's own timeouts use ``signal.alarm``, which only works in the
main thread; called from verl's executor thread they raise or silently score 0, and without
them a pathological answer such as ``9^{9^{9^{9}}}`` makes sympy run for ever. So math-verify
runs with its timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``) in a small
pool of persistent child processes; the caller waits at most ``timeout_s`` seconds for its
answer, and a child that overruns is killed (SIGKILL) and replaced. A timeout scores 0 with
reason ``"timeout"``; it is counted (:func:`reward_stats`, and the numeric ``timed_out`` key
that verl averages into its metrics). Nothing here raises into the trainer.

The children are fresh interpreters (``subprocess`` + this file), not ``multiprocessing``
children: they need neither the caller's ``__main__`` nor this module to be importable by
name (verl loads a custom reward file under a synthetic module name). Each child also arms a
default-action ``SIGALRM`` before every job, so a stuck child dies on its own even if its
parent is gone.

Multiple-answer ground truths (OlympiadBench, docs/method.md §5b): the answers are joined by
:data:`MULTI_ANSWER_SEP` (see :func:`encode_multi_answer`). Such a ground truth is matched
if the boxed answer equals all of them as a set (math-verify on the comma-joined list), or if
the boxed answer splits at top-level commas/semicolons into exactly as many parts and each
ground-truth answer matches a different part.

Configuration: ``timeout_s`` (default 5 s, env ``VERL_LPREG_REWARD_TIMEOUT``) per call, and
``num_workers`` (default ``min(4, cpu count)``, env ``VERL_LPREG_REWARD_WORKERS``) for the
pool, which is created on the first call in each process; both can be passed through verl's
``reward.custom_reward_function.reward_kwargs``.

verl loads this file by path: it imports only the standard library and the installed package's
constant module (:mod:`verl_lpreg.names`) at import time, no relative imports.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import select
import subprocess
import sys
import threading
import time

from verl_lpreg.names import MULTI_ANSWER_SEP

__all__ = [
    "MULTI_ANSWER_SEP",
    "REASONS",
    "compute_score",
    "encode_multi_answer",
    "last_boxed",
    "reward_stats",
    "shutdown",
    "split_multi_answer",
]

logger = logging.getLogger(__name__)

#: ``reason`` values of :func:`compute_score`.
REASONS = ("correct", "no_boxed", "mismatch", "timeout", "error")

DEFAULT_TIMEOUT_S = 5.0
#: How long a new worker may take to import math-verify before it counts as broken.
STARTUP_TIMEOUT_S = 120.0
#: Longest ``pred`` string returned (verl keeps it per sample for majority voting and dumps).
MAX_PRED_CHARS = 512

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def encode_multi_answer(answers) -> str:
    """Join several answers into one ground-truth string the reward understands."""
    parts = [str(a).strip() for a in answers]
    if not parts or any(not p for p in parts):
        raise ValueError(f"every answer must be a non-empty string, got {list(answers)!r}")
    if any(MULTI_ANSWER_SEP in p for p in parts):
        raise ValueError(f"an answer contains the separator {MULTI_ANSWER_SEP!r}: {parts!r}")
    return f" {MULTI_ANSWER_SEP} ".join(parts)


def split_multi_answer(ground_truth: str) -> list[str]:
    """Inverse of :func:`encode_multi_answer`; a plain ground truth gives a one-element list."""
    return [p.strip() for p in str(ground_truth).split(MULTI_ANSWER_SEP) if p.strip()]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Braces nest and escaped braces (``\\{``, ``\\}``) do not count. ``\\boxed 5`` (no brace)
    gives the following run of non-space characters, minus trailing ``$.,``. A last box that
    is never closed (truncated response) gives None, as in the reference (which reads neither
    ``\\fbox`` nor a ``\\boxed`` without a brace right after it: see the module docstring).
    """
    if not text:
        return None
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] != "{":
        j = i
        while j < n and not text[j].isspace():
            j += 1
        content = text[i:j].rstrip("$.,")
        return content or None
    depth = 0
    j = i
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
        j += 1
    return None


# --------------------------------------------------------------------------------------
# Child side: runs in the worker interpreters only.
# --------------------------------------------------------------------------------------


def _split_top_level(s: str) -> list[str]:
    """Split at commas/semicolons outside any (), [], {} (intervals like ``[1,2)`` included)."""
    parts, depth, cur, i = [], 0, [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth = max(0, depth - 1)
        if c in ",;" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _child_match(pred: str, gold: str) -> bool:
    """math-verify equality of a boxed answer and a (possibly multiple-answer) ground truth."""
    from math_verify import parse, verify

    def parsed(s: str):
        s = s.strip()
        candidates = [s] if (s.startswith("$") and s.endswith("$") and len(s) > 1) else [f"${s}$"]
        candidates.append(f"\\boxed{{{s}}}")
        for c in candidates:
            out = parse(c, parsing_timeout=None)
            if out:
                return out
        return []

    def equal(g: str, p: str) -> bool:
        gp, pp = parsed(g), parsed(p)
        return bool(gp) and bool(pp) and verify(gp, pp, timeout_seconds=None)

    golds = split_multi_answer(gold)
    if len(golds) <= 1:
        return equal(gold, pred)
    if equal(", ".join(golds), pred):
        return True
    pieces = _split_top_level(pred)
    if len(pieces) != len(golds):
        return False
    free = list(range(len(pieces)))
    for g in golds:
        hit = next((k for k in free if equal(g, pieces[k])), None)
        if hit is None:
            return False
        free.remove(hit)
    return True


def _serve() -> None:
    """Worker main loop: one JSON request per stdin line, one JSON answer per line."""
    import signal

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, not into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # we do the timeouts ourselves
    _child_match("\\frac{1}{2}", "0.5")  # import and warm up sympy/antlr before "ready"
    out.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin.buffer:
        req = json.loads(line)
        signal.alarm(int(req["alarm_s"]))
        try:
            resp = {"match": bool(_child_match(req["pred"], req["gold"]))}
        except Exception as e:  # any parse/verify failure is this sample's problem only
            resp = {"error": f"{type(e).__name__}: {e}"[:300]}
        signal.alarm(0)
        out.write(json.dumps(resp) + "\n")


_BOOTSTRAP = (
    "import sys, importlib.util as u; sys.path.pop(0); "
    "s = u.spec_from_file_location('_verl_lpreg_reward_worker', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m._serve()"
)


# --------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------


class _WorkerFailed(Exception):
    """The child died, answered garbage, or did not start in time."""


class _Worker:
    """One child interpreter that verifies one request at a time (started on creation)."""

    def __init__(self) -> None:
        self._buf = b""
        self.ready = False
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
            self.start_error = ""
        except OSError as e:  # e.g. out of processes: reported by request(), not here
            self.proc = None
            self.start_error = f"cannot start worker: {e}"

    def _read_line(self, deadline: float) -> bytes | None:
        """Next line from the child, or None once ``deadline`` (monotonic) has passed."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerFailed(f"worker exited (code {self.proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def request(self, pred: str, gold: str, timeout_s: float) -> dict | None:
        """The child's answer, or None if it took longer than ``timeout_s``."""
        if self.proc is None:
            raise _WorkerFailed(self.start_error)
        if not self.ready:
            line = self._read_line(time.monotonic() + STARTUP_TIMEOUT_S)
            if line is None:
                raise _WorkerFailed(f"worker not ready within {STARTUP_TIMEOUT_S:.0f} s")
            self.ready = True
        alarm_s = math.ceil(timeout_s) + 2  # backstop only: the parent kills it first
        msg = json.dumps({"pred": pred, "gold": gold, "alarm_s": alarm_s}) + "\n"
        try:
            self.proc.stdin.write(msg.encode())
            self.proc.stdin.flush()
        except OSError as e:
            raise _WorkerFailed(f"cannot write to worker: {e}") from e
        line = self._read_line(time.monotonic() + timeout_s)
        if line is None:
            return None
        try:
            return json.loads(line)
        except ValueError as e:
            raise _WorkerFailed(f"bad answer from worker: {line[:100]!r}") from e

    def kill(self) -> None:
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class _Pool:
    """A fixed number of workers shared by all threads of one process."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self._idle: queue.Queue[_Worker] = queue.Queue()
        for _ in range(size):
            self._idle.put(_Worker())

    def verify(self, pred: str, gold: str, timeout_s: float) -> tuple[str, str]:
        """("match"|"mismatch"|"timeout"|"error", detail); waits for a free worker first.

        A worker that overran is killed and replaced. One that died or answered garbage is
        replaced and the job tried once more on the new one (so a worker killed from outside
        costs no score).
        """
        worker = self._idle.get()
        try:
            for attempt in (1, 2):
                try:
                    resp = worker.request(pred, gold, timeout_s)
                except _WorkerFailed as e:
                    worker = self._renew(worker)
                    if attempt == 2:
                        return "error", str(e)
                    continue
                if resp is None:
                    worker = self._renew(worker)
                    return "timeout", f"no answer within {timeout_s:g} s"
                if "error" in resp:
                    return "error", resp["error"]
                return ("match" if resp.get("match") else "mismatch"), ""
        except BaseException:  # e.g. KeyboardInterrupt mid-request: the worker's state is unknown
            worker = self._renew(worker)
            raise
        finally:
            self._idle.put(worker)

    @staticmethod
    def _renew(worker: _Worker) -> _Worker:
        worker.kill()
        _count("worker_restarts")
        return _Worker()

    def close(self) -> None:
        """Kill the idle workers; one busy in another thread exits on its own (EOF or alarm)."""
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                return


_pool: _Pool | None = None
_pool_lock = threading.Lock()
_stats = {"calls": 0, "worker_restarts": 0, **{r: 0 for r in REASONS}}
_stats_lock = threading.Lock()


def _count(key: str) -> None:
    with _stats_lock:
        _stats[key] += 1


def _get_pool(num_workers: int | None) -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():  # after fork: never touch the parent's
            size = num_workers or int(os.environ.get("VERL_LPREG_REWARD_WORKERS", "0")) or min(4, os.cpu_count() or 1)
            _pool = _Pool(max(1, int(size)))
        return _pool


def reward_stats() -> dict:
    """Counts since start in this process: calls, one per reason, and worker restarts."""
    with _stats_lock:
        return dict(_stats)


def shutdown() -> None:
    """Kill this process's workers (a later call starts new ones). Also runs at exit."""
    global _pool
    with _pool_lock:
        if _pool is not None and _pool.pid == os.getpid():
            _pool.close()
        _pool = None


def _result(reason: str, pred: str) -> dict:
    _count(reason)
    ok = reason == "correct"
    return {
        "score": 1.0 if ok else 0.0,
        "acc": 1.0 if ok else 0.0,
        "pred": pred[:MAX_PRED_CHARS],
        "reason": reason,
        "timed_out": 1.0 if reason == "timeout" else 0.0,
    }


def compute_score(
    data_source=None,
    solution_str: str = "",
    ground_truth: str = "",
    extra_info=None,
    *,
    timeout_s: float | None = None,
    num_workers: int | None = None,
    **kwargs,
) -> dict:
    """Score one response: 1.0 iff its last ``\\boxed{}`` equals ``ground_truth`` (math-verify).

    Returns ``{"score", "acc", "pred", "reason", "timed_out"}``, all scalars or strings (verl
    averages the numbers per data source and skips the strings); ``reason`` is one of
    :data:`REASONS`. Returns within about ``timeout_s`` seconds of verification time (plus
    waiting for a free worker, and a worker's start-up on the first calls) and never raises.
    ``ground_truth`` is a string (several answers joined by :data:`MULTI_ANSWER_SEP`) or a
    list of answers. ``data_source``, ``extra_info`` and other keywords from verl are accepted
    and unused: every benchmark is scored the same way.
    """
    _count("calls")
    try:
        pred = last_boxed(solution_str or "")
        if pred is None:
            return _result("no_boxed", "")
        if hasattr(ground_truth, "tolist"):  # numpy value from a verl batch
            ground_truth = ground_truth.tolist()
        if isinstance(ground_truth, (list, tuple)):
            gold = encode_multi_answer(ground_truth) if ground_truth else ""
        else:
            gold = str(ground_truth if ground_truth is not None else "").strip()
        if not gold:
            logger.warning("empty ground truth for data_source=%r; scoring 0", data_source)
            return _result("error", pred)
        if pred == gold:
            return _result("correct", pred)
        if timeout_s is None:
            timeout_s = float(os.environ.get("VERL_LPREG_REWARD_TIMEOUT", DEFAULT_TIMEOUT_S))
        outcome, detail = _get_pool(num_workers).verify(pred, gold, float(timeout_s))
    except Exception as e:  # never into the trainer
        logger.warning("reward failed (%s: %s); scoring 0", type(e).__name__, e)
        return _result("error", "")
    if outcome == "timeout":
        logger.warning("math-verify timed out (%s) on pred=%.80r gold=%.80r", detail, pred, gold)
    elif outcome == "error":
        logger.warning("math-verify error (%s) on pred=%.80r gold=%.80r", detail, pred, gold)
    reason = {"match": "correct", "mismatch": "mismatch"}.get(outcome, outcome)
    return _result(reason, pred)


atexit.register(shutdown)
