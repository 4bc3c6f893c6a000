"""verl_lpreg.atomic_io: the atomic writes of data_prep and evaluate (permissions, signals, stale files)."""

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from verl_lpreg.atomic_io import OutputPathError, check_output_dir, check_output_path, write_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_umask_permissions_and_replaced_file_keeps_its_own(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "new.txt", "x")
        assert _mode(tmp_path / "new.txt") == 0o644  # what open() gives, not mkstemp's 0600
        (tmp_path / "kept.txt").write_text("old")
        os.chmod(tmp_path / "kept.txt", 0o640)
        write_text_atomic(tmp_path / "kept.txt", "new")
        assert (tmp_path / "kept.txt").read_text() == "new"
        assert _mode(tmp_path / "kept.txt") == 0o640
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.txt", "x")
        assert _mode(tmp_path / "private.txt") == 0o600
    finally:
        os.umask(old)


def test_sigterm_during_a_write_leaves_no_temp_file_and_the_old_output(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    script = (
        "import sys, time\n"
        "from verl_lpreg.atomic_io import write_atomic\n"
        "def slow(tmp):\n"
        "    open(tmp, 'wb').write(b'half' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_atomic({str(out)!r}, slow)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM  # still dies of the signal, as without us
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    assert out.read_bytes() == b"old"


def test_stale_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.txt.{dead.pid}.0123abcd.tmp"
    live = tmp_path / f".out.txt.{os.getppid()}.0123abcd.tmp"  # a live writer's file stays
    other = tmp_path / f".other.txt.{dead.pid}.0123abcd.tmp"  # another output's file stays
    unrelated = tmp_path / ".out.txt.notours.tmp"
    for p in (stale, live, other, unrelated):
        p.write_bytes(b"x" * 100)
    write_text_atomic(tmp_path / "out.txt", "new")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert stale.name not in names
    assert {live.name, other.name, unrelated.name, "out.txt"} <= set(names)


def test_exception_in_write_leaves_the_old_file_and_no_temp(tmp_path):
    (tmp_path / "o").write_text("old")

    def broken(tmp):
        Path(tmp).write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "o", broken)
    assert os.listdir(tmp_path) == ["o"] and (tmp_path / "o").read_text() == "old"


def test_output_naming_a_directory_or_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="is a directory; give a file name"):
        check_output_path(tmp_path)
    with pytest.raises(OutputPathError, match=r"cannot be created: .*afile is a file, not a directory"):
        write_text_atomic(tmp_path / "afile" / "sub" / "o.txt", "x")
    with pytest.raises(OutputPathError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "afile")
    with pytest.raises(OutputPathError, match="afile is a file"):
        check_output_dir(tmp_path / "afile" / "d")
    check_output_dir(tmp_path / "new" / "d")  # creatable: fine
    assert (tmp_path / "afile").read_text() == "x"


def test_imports_only_the_standard_library():
    src = (REPO / "verl_lpreg" / "atomic_io.py").read_text()
    imports = {line.split()[1] for line in src.splitlines() if line.startswith(("import ", "from "))}
    stdlib = {"__future__", "contextlib", "os", "re", "secrets", "signal", "stat", "threading", "collections.abc"}
    assert imports <= stdlib
