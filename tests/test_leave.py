"""Leave: every file of the join goes, all or nothing (kill -9 at each step); a new join works;
and under concurrency: a writer in another process never lands a key in a leave half-way (the
store's lock), a leave killed half-way while a writer waits is completed before the write, and
a writer that cannot get the lock in time fails typed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import entra_keys
from entra_keys import (
    KeyStore,
    KeyStoreError,
    KeyType,
    KeyUsage,
    Provider,
    StorePermissionError,
)
from entra_keys.cli import main
from entra_keys.store._leave import MARKER

from .contract.providers import open_apart, option_kind
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


# -- a leave and writers in other processes ------------------------------------------------------

SRC = str(Path(entra_keys.__file__).parent.parent)
#: A writer process: creates and deletes key "w<i>" in a loop (the store's provider chosen by
#: argv[2] and argv[3]) until argv[5] exists, logging each change's start and end ("gone" for a
#: delete that found the key removed by the leave)
#: (CLOCK_MONOTONIC, one clock for every process) to argv[4]. With argv[6] == "once" it creates
#: one key "after" instead, after touching argv[5].
WRITER = """
import pathlib, sys, time
from entra_keys import KeyNotFound, KeyStore, KeyStoreError, KeyType, KeyUsage
path, kind, tcti, log, flag = sys.argv[1:6]
once = sys.argv[6:] == ["once"]
with KeyStore.open(path, kind, tcti=tcti or None) as store, open(log, "a") as out:
    if once:
        pathlib.Path(flag).touch()
        started = time.monotonic_ns()
        store.create("after", KeyType.ECC256, KeyUsage.SIGN)
        print("create", started, time.monotonic_ns(), file=out, flush=True)
        sys.exit(0)
    i = 0
    while not pathlib.Path(flag).exists():
        for change in ("create", "delete"):
            started = time.monotonic_ns()
            try:
                if change == "create":
                    store.create(f"w{i}", KeyType.ECC256, KeyUsage.SIGN)
                else:
                    store.delete(f"w{i}")
            except KeyNotFound:  # the leave took it: it was part of the join
                change = "gone"
            except KeyStoreError as exc:
                print("error", started, time.monotonic_ns(), exc, file=out, flush=True)
                sys.exit(3)
            print(change, started, time.monotonic_ns(), file=out, flush=True)
        i += 1
"""
#: A slow leave (argv[1]): each change to the store is followed by argv[2] seconds of sleep, so
#: the leave stays half-way a while; it writes the moment it decided (the marker made) and the
#: moment before it removes the marker to argv[3]. When argv[4] is given, the leave SIGKILLs
#: itself at the first change made 0.5 s after that file appeared (a writer is waiting by then).
SLOW_LEAVE = """
import os, pathlib, signal, sys, time, types
from entra_keys.store import _leave, leave
pause, log = float(sys.argv[2]), sys.argv[3]
ready = pathlib.Path(sys.argv[4]) if len(sys.argv) > 4 else None
seen = None
def note(what):
    with open(log, "a") as out:
        print(what, time.monotonic_ns(), file=out, flush=True)
def slow(name, call):
    def change(*args, **kwargs):
        global seen
        if name == "rmdir":
            note("undecided")
        done = call(*args, **kwargs)
        if name == "mkdir":
            note("decided")
        if ready is not None and ready.exists():
            seen = seen or time.monotonic()
            if time.monotonic() - seen > 0.5:
                note("killed")
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(pause)
        return done
    return change
wrapped = types.ModuleType("os")
wrapped.__dict__.update(vars(os))
for name in ("mkdir", "rename", "unlink", "rmdir"):
    setattr(wrapped, name, slow(name, getattr(os, name)))
_leave.os = wrapped
print("removed", *leave(sys.argv[1]))
"""


def _log(path: Path) -> list[tuple[str, int, int]]:
    """A writer's log: (change, started, ended) in monotonic ns; errors keep their text."""
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return [(fields[0], int(fields[1]), int(fields[2])) for fields in lines]


def _notes(path: Path) -> dict[str, int]:
    return {what: int(at) for what, at in (line.split() for line in path.read_text().splitlines())}


def _writer(options: list[str], store: Path, log: Path, flag: Path, *extra: str) -> Any:
    tcti = options[options.index("--tcti") + 1] if "--tcti" in options else ""
    argv = [sys.executable, "-c", WRITER, str(store), option_kind(options), tcti, str(log)]
    return subprocess.Popen(
        [*argv, str(flag), *extra],
        env={**os.environ, "PYTHONPATH": SRC},
        stderr=subprocess.PIPE,
        text=True,
    )


def _joined(kind: str, request: pytest.FixtureRequest, path: Path) -> None:
    """A whole join in ``path``, made by a provider closed before any writer opens its own
    (a swtpm serves one connection at a time)."""
    with open_apart(kind, request) as provider:
        _join(KeyStore(provider, path))


def test_a_writer_never_lands_a_key_in_a_leave_half_way(
    provider_options: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Another process creates and deletes keys in a loop while a slow leave runs: no change of
    the writer completes while the leave is half-way (between the marker made and removed), the
    writer waits instead of failing, and the join is gone as a whole afterwards."""
    kind = option_kind(provider_options)
    path, log, stop, notes = (tmp_path / n for n in ("store", "writer.log", "stop", "notes"))
    _joined(kind, request, path)
    writer = _writer(provider_options, path, log, stop)
    try:
        deadline = time.monotonic() + 60
        while len(_log(log)) < 4:  # it is writing
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            assert time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.05)
        leaving = subprocess.run(
            [sys.executable, "-c", SLOW_LEAVE, str(path), "0.05", str(notes)],
            env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        after = len(_log(log))
        while len(_log(log)) < after + 2:  # and writes again after the leave
            assert writer.poll() is None, writer.stderr.read() if writer.stderr else ""
            time.sleep(0.05)
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read() if writer.stderr else ""
    removed = set(leaving.stdout.split()[1:])
    assert removed >= set(JOIN_FILES), leaving.stdout
    window = _notes(notes)
    changes = _log(log)
    assert all(change in ("create", "delete", "gone") for change, _, _ in changes), changes
    assert [c for c in changes if c[0] == "gone"] == [
        c for c in changes if c[0] == "gone" and c[2] > window["undecided"]
    ]  # only the leave took a key away, and only once it was done
    inside = [c for c in changes if window["decided"] < c[2] < window["undecided"]]
    assert inside == [], f"changes completed while the leave was half-way: {inside}"
    waited = [c for c in changes if c[1] < window["undecided"] < c[2]]
    assert waited, "no change waited for the leave (the test did not race them)"
    left = {p.name for p in path.iterdir()}
    assert not left & set(JOIN_FILES) and MARKER not in left, left
    assert left <= {f"w{i}.pem" for i in range(len(changes))}, left


def test_a_leave_killed_half_way_while_a_writer_waits(
    provider_options: list[str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A leave holds the lock and is killed (SIGKILL) half-way while a writer waits for it: the
    kernel releases the lock, the writer completes the leave before it writes, and the store
    holds the writer's new key and nothing of the join."""
    kind = option_kind(provider_options)
    path, log, ready, notes = (tmp_path / n for n in ("store", "writer.log", "ready", "notes"))
    _joined(kind, request, path)
    leaver = subprocess.Popen(
        [sys.executable, "-c", SLOW_LEAVE, str(path), "0.2", str(notes), str(ready)],
        env={**os.environ, "PYTHONPATH": SRC},
    )
    deadline = time.monotonic() + 30
    while not (path / MARKER).exists():
        assert leaver.poll() is None and time.monotonic() < deadline, "the leave never began"
        time.sleep(0.01)
    writer = _writer(provider_options, path, log, ready, "once")
    assert leaver.wait(timeout=60) == -signal.SIGKILL
    assert writer.wait(timeout=60) == 0, writer.stderr.read() if writer.stderr else ""
    [(change, started, ended)] = _log(log)
    assert change == "create"
    killed = _notes(notes)["killed"]
    assert started < killed < ended  # the writer waited for the killed leave
    assert sorted(p.name for p in path.iterdir()) == ["after.pem"]
    with open_apart(kind, request) as provider:
        store = KeyStore(provider, path)
        assert [info.name for info in store.list()] == ["after"]
        assert store.load_join_state() is None
        assert store.load("after").usage is KeyUsage.SIGN


def test_a_writer_that_cannot_get_the_lock_in_time_fails_typed(
    provider: Provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the store's lock (a leave, a demo): a write waits LOCK_WAIT, then
    fails with a KeyStoreError naming the store, and writes nothing; once the holder is killed
    (the kernel drops its lock) the write goes through at once."""
    store = KeyStore(provider, tmp_path / "store")
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from entra_keys.store._files import locked\n"
         "with locked(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)",
         str(store.path)],
        env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr("entra_keys.store._files.LOCK_WAIT", 0.3)
        started = time.monotonic()
        with pytest.raises(KeyStoreError, match=f"the key store {store.path} is busy"):
            store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        assert time.monotonic() - started >= 0.3
        with pytest.raises(KeyStoreError, match="is busy"):
            store.leave()
        with pytest.raises(KeyStoreError, match="is busy"):
            store.delete("device")
        assert sorted(p.name for p in store.path.iterdir()) == ["device.pem"]
    finally:
        holder.kill()
        holder.wait()
    store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
    assert sorted(info.name for info in store.list()) == ["device", "transport"]


def test_a_leave_killed_half_way_is_invisible_to_contains_and_create(
    provider: Provider, tmp_path: Path
) -> None:
    """``name in store`` lstat'ed the path and saw a half-done leave: after a leave killed
    following its first moves, "ak" was gone while "device" and "transport" were there, and
    ``create("transport")`` was KeyExists. It reads through the checked directory, which
    completes the leave first: no key is in the store, and a new one is created."""
    template = KeyStore(provider, tmp_path / "template")
    _join(template)
    src = str(Path(entra_keys.__file__).parent.parent)
    for step in (2, 3, 5):  # the marker made, then one, two or four files moved
        path = tmp_path / f"store-{step}"
        shutil.copytree(template.path, path)
        done = subprocess.run(
            [sys.executable, "-c", KILLED_LEAVE, str(path), str(step)],
            env={**os.environ, "PYTHONPATH": src},
            capture_output=True,
            check=False,
        )
        assert done.returncode == -signal.SIGKILL, done.stderr
        store = KeyStore(provider, path)
        assert [name in store for name in JOIN_KEYS] == [False] * len(JOIN_KEYS), step
        store.create("transport", KeyType.RSA2048, KeyUsage.DECRYPT)
        assert [info.name for info in store.list()] == ["transport"]


@pytest.mark.parametrize("entry", ["sub.pem", "x.sealed", "join.json"])
def test_a_directory_named_as_a_join_file_is_refused_before_the_leave(
    provider: Provider, tmp_path: Path, entry: str
) -> None:
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    in_the_way = store.path / entry
    if entry == "join.json":
        (store.path / entry).unlink()
    os.mkdir(in_the_way, 0o700)
    (in_the_way / "inside").write_text("the user's own")
    before = sorted(os.listdir(store.path))
    with pytest.raises(StorePermissionError) as refused:
        store.leave()
    assert refused.value.path == str(in_the_way) and str(in_the_way) in str(refused.value)
    assert sorted(os.listdir(store.path)) == before  # nothing removed, no marker
    assert [info.name for info in store.list()] == JOIN_KEYS  # the store still opens
    store.create("another", KeyType.ECC256, KeyUsage.SIGN)
    shutil.move(in_the_way, tmp_path / "moved-out")
    assert "another.pem" in store.leave()
    assert store.list() == [] and (tmp_path / "moved-out" / "inside").exists()


def test_a_leave_decided_with_directories_in_the_way_never_wedges_the_store(
    provider: Provider, tmp_path: Path
) -> None:
    store = KeyStore(provider, tmp_path / "store")
    _join(store)
    os.mkdir(store.path / MARKER, 0o700)  # a leave decided, and killed, by an earlier release
    os.mkdir(store.path / MARKER / "old.pem", 0o700)  # which had moved a directory there
    (store.path / MARKER / "old.pem" / "inside").write_text("x")
    os.mkdir(store.path / "sub.pem", 0o700)  # and one more in the store
    assert store.list() == []  # the open completes the leave
    assert "device" not in store and store.load_join_state() is None
    assert sorted(os.listdir(store.path)) == ["sub.pem"]  # left where it was, no marker
    store.create("device", KeyType.ECC256, KeyUsage.SIGN)  # and the store takes a new join
    assert [info.name for info in store.list()] == ["device"]
