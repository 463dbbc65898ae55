"""Leave: every file of the join goes, all or nothing (kill -9 at each step); a new join works."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import entra_keys
from entra_keys import KeyStore, KeyType, KeyUsage, Provider
from entra_keys.cli import main
from entra_keys.store._leave import MARKER

from .helpers import join_keys

JOIN_KEYS = ["ak", "device", "prt", "transport"]
JOIN_FILES = sorted([f"{name}.pem" for name in JOIN_KEYS] + ["join.json", "prt.sealed"])
#: A leave in a process that SIGKILLs itself (as ``kill -9`` would) right after its N-th change
#: to the store (argv[2]): the leave module's ``os`` is wrapped, so the product keeps no hook.
KILLED_LEAVE = """
import os, signal, sys, types
from entra_keys.store import _leave, leave
changes = int(sys.argv[2])
def dying(call):
    def change(*args, **kwargs):
        global changes
        done = call(*args, **kwargs)
        changes -= 1
        if changes == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return done
    return change
wrapped = types.ModuleType("os")
wrapped.__dict__.update(vars(os))
for name in ("mkdir", "rename", "unlink", "rmdir"):
    setattr(wrapped, name, dying(getattr(os, name)))
_leave.os = wrapped
if changes == 0:
    os.kill(os.getpid(), signal.SIGKILL)
leave(sys.argv[1])
"""


def _join(store: KeyStore) -> None:
    """A whole join: device, transport, AK, session key, the join state and sealed data."""
    join_keys(store)
    store.save_join_state({"device_id": "d-1", "session_key": "prt"})
    fd = os.open(store.path / "prt.sealed", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"a sealed blob")  # what the seal module writes beside the keys
    os.close(fd)


def _state(store: KeyStore) -> str:
    """'whole' or 'empty' as the store's API sees it, and nothing in between."""
    names = [info.name for info in store.list()]
    state = store.load_join_state()
    if names == JOIN_KEYS and state is not None and (store.path / "prt.sealed").exists():
        return "whole"
    assert names == [] and state is None and not (store.path / "prt.sealed").exists(), names
    assert not (store.path / MARKER).exists()
    return "empty"


def test_leave_removes_the_join_and_a_new_join_works(provider: Provider, tmp_path: Path) -> None:
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    (store.path / "notes.txt").write_text("not the join's")
    assert store.leave() == JOIN_FILES
    assert _state(store) == "empty"
    assert sorted(os.listdir(store.path)) == ["notes.txt"]  # a fresh store, and what is not ours
    assert store.leave() == []
    _join(store)
    assert _state(store) == "whole"
    assert store.load("device").key_type is KeyType.ECC256


def test_leave_command_needs_no_provider(
    provider: Provider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    # No --provider or --tcti: leave opens none (a dead TPM is the reason to leave).
    assert main(["--store", str(store.path), "--json", "leave"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == JOIN_FILES
    assert main(["--store", str(store.path), "leave"]) == 0
    assert "Nothing to leave" in capsys.readouterr().out
    assert _state(store) == "empty"


def test_leave_killed_at_every_step_leaves_the_whole_join_or_nothing(
    provider: Provider, tmp_path: Path
) -> None:
    template = KeyStore(provider, tmp_path / "template")
    _join(template)
    src = str(Path(entra_keys.__file__).parent.parent)
    seen = set()
    changes = 2 + 2 * len(JOIN_FILES)  # the marker made, each file moved and removed, it removed
    for step in [*range(changes + 1), None]:  # killed before the leave, after each change; whole
        path = tmp_path / f"store-{step}"
        shutil.copytree(template.path, path)
        kill_after = -1 if step is None else step
        done = subprocess.run(
            [sys.executable, "-c", KILLED_LEAVE, str(path), str(kill_after)],
            env={**os.environ, "PYTHONPATH": src},
            capture_output=True,
            check=False,
        )
        assert done.returncode == (0 if step is None else -signal.SIGKILL), (step, done.stderr)
        store = KeyStore(provider, path)
        state = _state(store)
        seen.add(state)
        assert state == ("whole" if step == 0 else "empty"), step
        store.create("device", KeyType.ECC256, KeyUsage.SIGN, replace=state == "whole")
        store.load("device")
    assert seen == {"whole", "empty"}
