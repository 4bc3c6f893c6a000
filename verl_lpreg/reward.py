"""Rule-based math reward for verl: last ``\\boxed{}`` + math-verify, safe inside Ray actors.

This is the package's reward function (docs/method.md §5, §5b). verl 0.9.1 loads it with
``reward.custom_reward_function.path=<this file>`` (or ``pkg://verl_lpreg.reward``) and
``reward.custom_reward_function.name=compute_score``; its reward managers call it with the
keywords ``data_source, solution_str, ground_truth, extra_info`` from an executor *thread*
of a Ray actor.

Scoring (same as the reference code): only the LAST ``\\boxed{...}`` (or ``\\fbox{...}``)
of the response counts; no box scores 0; the boxed answer and the ground truth are compared
symbolically by math-verify (``\\frac12`` = ``0.5``, ``x=3`` = ``3``, sets, intervals), never
by string compare alone (an exactly identical string is accepted without calling math-verify,
which is sound).

Why a worker pool: math-verify's own timeouts use ``signal.alarm``, which only works in the
main thread; called from verl's executor thread they raise or silently score 0, and without
them a pathological answer such as ``9^{9^{9^{9}}}`` makes sympy run for ever. So math-verify
runs with its timeouts off (``parsing_timeout=None``, ``timeout_seconds=None``) in a pool of
persistent child processes; the caller waits at most ``timeout_s`` seconds for its answer, and
a child that overruns is killed (SIGKILL) and replaced at once (the replacement warms up in the
background). A timeout scores 0 with reason ``"timeout"``; it is counted (:func:`reward_stats`,
and the numeric ``timed_out`` key that verl averages into its metrics). Nothing about a response
or a ground truth raises into the trainer; invalid *settings* do (below).

The time bound is a bound on the call, not on the verification alone: a normal answer must not
queue behind pathological ones. The pool keeps ``num_workers`` children and, while all of them
are busy, starts more, up to ``num_workers +`` :data:`MAX_EXTRA_WORKERS`; it also keeps one spare
warming whenever the last idle child is taken. So up to that many concurrent calls never wait
for a child, and each returns within ``timeout_s`` plus a little overhead (plus a child's
start-up when a burst outgrows the warm pool); only calls beyond that bound wait for a free
child. Children started for a burst stay until the process exits (``shutdown()`` ends them).
``benchmarks/bench_reward_latency.py`` measures a normal answer's latency with pathological
ones in flight.

The children are fresh interpreters (``subprocess`` + this file), not ``multiprocessing``
children: they need neither the caller's ``__main__`` nor this module to be importable by
name (verl loads a custom reward file under a synthetic module name). They die with their
parent process, also when it is SIGKILLed mid-job: on Linux each child asks the kernel for a
SIGKILL when its parent goes (``PR_SET_PDEATHSIG``; children are started from one long-lived
thread, since the kernel ties that signal to the starting thread); elsewhere a busy child ends
at its backstop alarm (``timeout_s + 2`` s, a default-action ``SIGALRM`` armed before every job)
and an idle one at EOF on its stdin.

Multiple-answer ground truths (OlympiadBench, docs/method.md §5b): the answers are joined by
:data:`MULTI_ANSWER_SEP` (see :func:`encode_multi_answer`). Such a ground truth is matched
if the boxed answer equals all of them as a set (math-verify on the comma-joined list), or if
the boxed answer splits at top-level commas/semicolons into exactly as many parts and each
ground-truth answer matches a different part.

Configuration: ``timeout_s`` (default 5 s, env ``VERL_LPREG_REWARD_TIMEOUT``) per call, and
``num_workers`` (default ``min(4, cpu count)``, env ``VERL_LPREG_REWARD_WORKERS``) for the
pool, which is created on the first call in each process; both can be passed through verl's
``reward.custom_reward_function.reward_kwargs`` (the keyword wins over the environment). They are
checked at every call (:func:`resolve_settings`); an invalid one raises ``ValueError`` naming the
setting and the allowed values instead of scoring every response 0. ``timeout_s`` must be a finite
number > 0: there is no "no timeout" (0 is refused), because one pathological answer would then
block its call for ever; give a large value instead. ``num_workers`` must be an integer >= 1; an
empty environment variable means the default.

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
    "resolve_settings",
    "reward_stats",
    "shutdown",
    "split_multi_answer",
]

logger = logging.getLogger(__name__)

#: ``reason`` values of :func:`compute_score`.
REASONS = ("correct", "no_boxed", "mismatch", "timeout", "error")

DEFAULT_TIMEOUT_S = 5.0
TIMEOUT_ENV = "VERL_LPREG_REWARD_TIMEOUT"
WORKERS_ENV = "VERL_LPREG_REWARD_WORKERS"
#: How many children the pool may start beyond ``num_workers`` while all of them are busy.
MAX_EXTRA_WORKERS = 8
#: How long a new worker may take to import math-verify before it counts as broken.
STARTUP_TIMEOUT_S = 120.0
#: Longest ``pred`` string returned (verl keeps it per sample for majority voting and dumps).
MAX_PRED_CHARS = 512

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def encode_multi_answer(answers) -> str:
    """Join one or more answers into one ground-truth string the reward understands.

    The one encoding used by data prep and by :func:`compute_score` (a list ground truth).
    Numbers are written as text. An empty list, or an empty or missing (None) answer among
    them, is a ``ValueError``: dropping it would silently make a different problem.
    """
    answers = list(answers)
    parts = ["" if a is None else str(a).strip() for a in answers]
    if not parts or any(not p for p in parts):
        raise ValueError(f"every answer must be a non-empty string, got {answers!r}")
    if any(MULTI_ANSWER_SEP in p for p in parts):
        raise ValueError(f"an answer contains the separator {MULTI_ANSWER_SEP!r}: {parts!r}")
    return f" {MULTI_ANSWER_SEP} ".join(parts)


def split_multi_answer(ground_truth: str) -> list[str]:
    """Inverse of :func:`encode_multi_answer`; a plain ground truth gives a one-element list."""
    return [p.strip() for p in str(ground_truth).split(MULTI_ANSWER_SEP) if p.strip()]


def _bad_setting(name: str, value, allowed: str) -> ValueError:
    return ValueError(f"invalid reward setting {name}={value!r}: {allowed}")


def resolve_settings(timeout_s=None, num_workers=None) -> tuple[float, int | None]:
    """``(timeout_s, num_workers)`` from the keywords, else the environment, checked.

    ``num_workers`` is None when neither gives one (the pool's default). Raises ``ValueError``
    naming the setting and the allowed values.
    """
    t_name = "timeout_s"
    if timeout_s is None and os.environ.get(TIMEOUT_ENV, "").strip():
        timeout_s, t_name = os.environ[TIMEOUT_ENV].strip(), TIMEOUT_ENV
    allowed_t = (
        "allowed: a finite number of seconds > 0 (default 5); 0 does not mean 'no timeout' "
        "(a pathological answer would block the call for ever): give a large value instead"
    )
    if timeout_s is None:
        timeout = DEFAULT_TIMEOUT_S
    else:
        try:
            timeout = float(timeout_s) if not isinstance(timeout_s, bool) else math.nan
        except (TypeError, ValueError):
            raise _bad_setting(t_name, timeout_s, allowed_t) from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise _bad_setting(t_name, timeout_s, allowed_t)
    w_name = "num_workers"
    if num_workers is None and os.environ.get(WORKERS_ENV, "").strip():
        num_workers, w_name = os.environ[WORKERS_ENV].strip(), WORKERS_ENV
    if num_workers is not None:
        allowed_w = "allowed: an integer >= 1 (default min(4, CPU count))"
        try:
            if isinstance(num_workers, bool) or (isinstance(num_workers, float) and not num_workers.is_integer()):
                raise ValueError
            workers = int(num_workers)
        except (TypeError, ValueError):
            raise _bad_setting(w_name, num_workers, allowed_w) from None
        if workers < 1:
            raise _bad_setting(w_name, num_workers, allowed_w)
        num_workers = workers
    return timeout, num_workers


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, or None.

    Braces nest and escaped braces (``\\{``, ``\\}``) do not count. ``\\boxed 5`` (no brace)
    gives the following run of non-space characters, minus trailing ``$.,``. A last box that
    is never closed (truncated response) gives None, as in the reference.
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


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGKILL when the parent goes (PR_SET_PDEATHSIG); exit if it is gone already."""
    import signal

    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: EOF on stdin and the alarm end the child
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _serve() -> None:
    """Worker main loop: one JSON request per stdin line, one JSON answer per line."""
    import signal

    _die_with_parent(int(sys.argv[2]))
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

    def __init__(self, spawner: _Spawner) -> None:
        self._buf = b""
        self.ready = False
        try:
            self.proc = spawner.popen([sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(os.getpid())])
            self.start_error = ""
        except OSError as e:  # e.g. out of processes: reported by request(), not here
            self.proc = None
            self.start_error = f"cannot start worker: {e}"

    def _read_line(self, deadline: float) -> bytes | None:
        """Next line from the child, or None once ``deadline`` (monotonic) has passed."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerFailed(f"worker exited (code {self.proc.wait()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def is_ready(self) -> bool:
        """Whether the child has finished its start-up (never blocks)."""
        if not self.ready and self.proc is not None:
            try:
                self.ready = self._read_line(time.monotonic()) is not None
            except _WorkerFailed:
                return False
        return self.ready

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


class _Spawner:
    """Starts the children from one long-lived daemon thread.

    Linux sends a child's ``PR_SET_PDEATHSIG`` signal when the *thread* that started it exits;
    verl's executor threads come and go, so no child may be started from them.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="verl-lpreg-reward-spawner", daemon=True).start()

    def _run(self) -> None:
        while True:
            argv, done, box = self._jobs.get()
            try:
                box.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True))
            except OSError as e:
                box.append(e)
            done.set()

    def popen(self, argv: list[str]) -> subprocess.Popen:
        done, box = threading.Event(), []
        self._jobs.put((argv, done, box))
        done.wait()
        if isinstance(box[0], OSError):
            raise box[0]
        return box[0]


class _Pool:
    """``size`` workers shared by all threads of one process, growing to ``max_size`` when all are busy."""

    def __init__(self, size: int) -> None:
        self.pid = os.getpid()
        self.size = size
        self.max_size = size + MAX_EXTRA_WORKERS
        self._spawner = _Spawner()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = [_Worker(self._spawner) for _ in range(size)]
        self._n_workers = size  # idle + busy
        self._closed = False

    def _acquire(self) -> _Worker:
        """An idle worker (a warm one first), a new one if all are busy and the bound allows, else wait."""
        with self._cond:
            while not self._idle and self._n_workers >= self.max_size:
                self._cond.wait()
            if self._idle:
                worker = next((w for w in reversed(self._idle) if w.is_ready()), self._idle[-1])
                self._idle.remove(worker)
                spare = not self._idle and self._n_workers < self.max_size
            else:  # all busy, room to grow: a new worker for this caller
                worker, spare = None, False
            if worker is None or spare:
                self._n_workers += 1
        if worker is None:
            worker = _Worker(self._spawner)
        if spare:  # the last idle one was taken: the next caller finds one warming up
            self._release(_Worker(self._spawner))
        return worker

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify()

    def verify(self, pred: str, gold: str, timeout_s: float) -> tuple[str, str]:
        """("match"|"mismatch"|"timeout"|"error", detail).

        A worker that overran is killed and replaced. One that died or answered garbage is
        replaced and the job tried once more on the new one (so a worker killed from outside
        costs no score).
        """
        worker = self._acquire()
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
            self._release(worker)

    def _renew(self, worker: _Worker) -> _Worker:
        worker.kill()
        _count("worker_restarts")
        return _Worker(self._spawner)

    def close(self) -> None:
        """Kill the idle workers now, the busy ones when their call returns."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


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
            _pool = _Pool(num_workers or min(4, os.cpu_count() or 1))
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
    :data:`REASONS`. Returns within about ``timeout_s`` seconds (plus a worker's start-up when
    the pool grows, and waiting for a free worker beyond ``num_workers +`` :data:`MAX_EXTRA_WORKERS`
    concurrent calls). Never raises because of the response or the ground truth; an invalid
    ``timeout_s`` / ``num_workers`` (or their environment variables) raises ``ValueError``
    (:func:`resolve_settings`).
    ``ground_truth`` is a string (several answers joined by :data:`MULTI_ANSWER_SEP`) or a
    list of answers. ``data_source``, ``extra_info`` and other keywords from verl are accepted
    and unused: every benchmark is scored the same way.
    """
    timeout_s, num_workers = resolve_settings(timeout_s, num_workers)
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
        outcome, detail = _get_pool(num_workers).verify(pred, gold, timeout_s)
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
