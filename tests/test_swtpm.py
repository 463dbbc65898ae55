"""``testing.swtpm.Swtpm`` leaves no daemon behind: a ``with`` block stops it, an exception
included, and a script killed with SIGKILL takes its swtpm with it (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import entra_keys
from entra_keys.testing.swtpm import Swtpm, swtpm_available

from .helpers import unavailable

SRC = Path(entra_keys.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _needs_swtpm() -> None:
    if not swtpm_available():
        unavailable("swtpm is not installed")


def alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its reaper has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_with_block_stops_the_swtpm_it_started_even_on_an_exception(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "tpm")
    seen: list[int | None] = []

    def script() -> None:
        with tpm:
            seen.append(tpm.pid())
            assert tpm.socket.exists()
            raise RuntimeError("the script failed")

    with pytest.raises(RuntimeError, match="the script failed"):
        script()
    pid = seen[0]
    assert pid is not None
    assert not alive(pid) and not tpm.running() and not tpm.socket.exists()
    with tpm as again:  # the same state starts again
        assert again.running()
    assert not tpm.running()


def test_a_with_block_leaves_a_swtpm_it_did_not_start(tmp_path: Path) -> None:
    tpm = Swtpm(tmp_path / "tpm")
    tpm.start()
    try:
        with Swtpm(tmp_path / "tpm") as same:
            assert same.running()
        assert tpm.running()
    finally:
        tpm.stop()


def test_a_script_killed_with_sigkill_leaves_no_swtpm(tmp_path: Path) -> None:
    """The parent dies without running any cleanup: the kernel ends its swtpm."""
    script = tmp_path / "agent.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from entra_keys.testing.swtpm import Swtpm
            with Swtpm(sys.argv[1]) as tpm:
                print(tpm.pid(), flush=True)
                time.sleep(120)
            """
        )
    )
    agent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "tpm")],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
        assert alive(pid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert gone_within(pid, 5), f"swtpm {pid} outlived its killed parent"
    finally:
        agent.kill()
        agent.wait()
        Swtpm(tmp_path / "tpm").stop()


def test_a_detached_swtpm_outlives_its_starter_until_stopped(tmp_path: Path) -> None:
    """What the swtpm/start script does: the daemon stays after the process that started it."""
    done = subprocess.run(
        [sys.executable, "-m", "entra_keys.testing.swtpm", "start", str(tmp_path / "tpm")],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    tpm = Swtpm(tmp_path / "tpm")
    try:
        assert done.stdout.strip() == tpm.tcti and tpm.running()
    finally:
        tpm.stop()
    assert not tpm.running()
