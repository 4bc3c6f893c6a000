"""Atomic file writes: the one implementation used by ``data_prep`` and ``verl_lpreg.evaluate``.

``write_atomic(path, write)`` calls ``write(tmp)`` on a temporary file beside ``path`` and then
moves it over ``path`` (``os.replace``), so a reader sees the old file or the new one, never a
partial one. Guarantees:

* the new file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the
  umask), or, when it replaces a file, that file's permissions;
* no temporary file is left behind by an exception, Ctrl-C, or SIGTERM / SIGHUP (what
  ``timeout`` and schedulers send): the signal removes it and is then re-delivered to the previous
  handler (by default the process still dies of that signal);
* temporary files of this naming (``.<name>.<pid>.<random>.tmp``) left by a process that no longer
  exists (SIGKILL, power loss) are removed by the next write of the same output;
* an output that names a directory, or lies under a path component that is a file, is refused
  with :class:`OutputPathError` before anything is written (:func:`check_output_path` lets a
  command check it before its expensive part).

Standard library only (``import verl_lpreg`` must stay light).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
import threading
from collections.abc import Callable

__all__ = ["OutputPathError", "check_output_dir", "check_output_path", "write_atomic", "write_text_atomic"]

_CLEANUP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s)


class OutputPathError(ValueError):
    """The output path cannot be a file (it is a directory, or a parent is a file)."""


def check_output_path(path: str | os.PathLike, what: str = "output") -> None:
    """Raise :class:`OutputPathError` unless ``path`` can be created or replaced as a file."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise OutputPathError(f"{what} {path} is a directory; give a file name")
    parent = os.path.dirname(path)
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and not os.path.isdir(parent):
        raise OutputPathError(f"{what} {path} cannot be created: {parent} is a file, not a directory")


def check_output_dir(path: str | os.PathLike, what: str = "output directory") -> None:
    """Raise :class:`OutputPathError` unless ``path`` is, or can be created as, a directory."""
    path = os.path.abspath(os.fspath(path))
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe) if os.path.dirname(probe) != probe else ""
    if probe and not os.path.isdir(probe):
        where = "is a file" if probe == path else f"cannot be created: {probe} is a file"
        raise OutputPathError(f"{what} {path} {where}, not a directory")


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(r"^\." + re.escape(name) + r"\.(\d+)\.[0-9a-f]{8}\.tmp$")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale(directory: str, name: str) -> None:
    """Remove ``.<name>.<pid>.<hex>.tmp`` files whose writer process is gone."""
    pattern = _temp_pattern(name)
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, entry))


class _Terminated(BaseException):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_raise():
    """Turn SIGTERM/SIGHUP into :class:`_Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        raise _Terminated(signum)

    for s in _CLEANUP_SIGNALS:
        previous[s] = signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` (see the module docstring)."""
    path = os.path.abspath(os.fspath(path))
    check_output_path(path)
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale(directory, name)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with _signals_raise():
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
                if mode is not None:
                    os.chmod(tmp, mode)
                write(tmp)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except _Terminated as t:  # handlers restored: deliver the signal as if we had not caught it
        signal.raise_signal(t.signum)
        raise SystemExit(128 + t.signum) from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``write_atomic`` for a UTF-8 text file."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_atomic(path, write)
