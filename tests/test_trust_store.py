"""Stores an attacker could swap: each attack is done for real and must end in a typed error.

Whoever owns the store directory or a key file, or can plant a link or a FIFO under a key's name,
could hand a root agent a key of their choosing (or hang it). The store refuses a directory or
file owned by another uid, a symbolic link and anything but a regular file, naming the path. The
tests run as root (as CI does) and chown to ``nobody`` (uid 65534) to play the other user.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from entra_keys import (
    KeyExists,
    KeyStore,
    KeyType,
    KeyUsage,
    Provider,
    StorePermissionError,
    open_provider,
)
from entra_keys.provider import EntraPrivateKey

from .helpers import cached_key
from .test_cli import Cli, one_error_line

NOBODY = 65534
PASSPHRASE = b"correct horse"

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving a file to another uid (chown) needs root"
)


def device_key(provider: Provider) -> EntraPrivateKey:
    """The device key's kind of key (ECC P-256 signing), made once per provider."""
    return cached_key(provider, KeyType.ECC256, KeyUsage.SIGN)


def refused(call: Callable[[], object], path: Path, match: str) -> StorePermissionError:
    """``call`` raises StorePermissionError naming ``path`` in ``.path`` and in the message."""
    with pytest.raises(StorePermissionError, match=match) as info:
        call()
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    return info.value


def within(seconds: float, call: Callable[[], object], fifo: Path) -> object:
    """Run ``call`` in a thread and return what it returned or raised; if it still waits after
    ``seconds`` (blocked opening the FIFO), unblock it with a writer and fail, not hang."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the test to check
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer ends the blocked open
        worker.join(seconds)
        pytest.fail(f"the store blocked on the FIFO {fifo} for {seconds}s")
    return outcome[0]


# -- ownership ----------------------------------------------------------------------------------


@needs_root
def test_store_directory_owned_by_another_user_is_refused(
    store: KeyStore, provider: Provider
) -> None:
    store.save("device", device_key(provider))
    os.chown(store.path, NOBODY, NOBODY)  # still 0700: the owner, not the mode, is the problem
    owned = f"is owned by uid {NOBODY}, not by this user \\(uid 0\\)"
    refused(lambda: store.load("device"), store.path, owned)
    refused(lambda: store.save("other", device_key(provider)), store.path, owned)
    refused(store.list, store.path, owned)
    refused(store.broken, store.path, owned)
    refused(store.load_join_state, store.path, owned)
    refused(lambda: store.delete("device"), store.path, owned)
    assert sorted(os.listdir(store.path)) == ["device.pem"]  # nothing written, nothing removed
    os.chown(store.path, 0, 0)
    assert store.load("device").public_key() == device_key(provider).public_key()


@needs_root
def test_store_directory_made_by_another_user_beforehand_gets_no_key(
    provider: Provider, tmp_path: Path
) -> None:
    """The other user creates the store path before the agent first runs, to swap keys later."""
    planted = tmp_path / "store"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    store = KeyStore(provider, planted)
    refused(lambda: store.create("device", KeyType.ECC256, KeyUsage.SIGN), planted, "owned by")
    assert os.listdir(planted) == []


@needs_root
def test_key_file_owned_by_another_user_is_refused_on_load(
    store: KeyStore, provider: Provider
) -> None:
    store.save("device", device_key(provider))
    store.save("transport", device_key(provider))
    path = store.path / "device.pem"
    os.chown(path, NOBODY, NOBODY)  # still 0600
    error = refused(
        lambda: store.load("device"), path, f"owned by uid {NOBODY}, not by this user \\(uid 0\\)"
    )
    assert error.key_name == "device"
    refused(lambda: store.info("device"), path, "owned by")
    assert [info.name for info in store.list()] == ["transport"]  # skipped, the rest still listed
    assert [name for name, _ in store.broken()] == ["device"]
    assert "owned by" in store.broken()[0][1]


@needs_root
def test_join_state_owned_by_another_user_or_a_link_is_refused(
    store: KeyStore, tmp_path: Path
) -> None:
    store.save_join_state({"device_id": "d", "session_key": "prt"})
    path = store.path / "join.json"
    os.chown(path, NOBODY, NOBODY)
    refused(store.load_join_state, path, "owned by")
    path.unlink()
    forged = tmp_path / "forged.json"
    forged.write_text('{"device_id": "attacker", "session_key": "theirs"}')
    forged.chmod(0o600)
    path.symlink_to(forged)
    refused(store.load_join_state, path, "is a symbolic link, not a regular file")


# -- links and FIFOs in a key's place -----------------------------------------------------------


def test_symlinked_key_file_is_refused(store: KeyStore, provider: Provider, tmp_path: Path) -> None:
    elsewhere = KeyStore(provider, tmp_path / "elsewhere")
    elsewhere.save("device", device_key(provider))  # a valid key file, owner-only, 0600
    store.save("transport", device_key(provider))
    path = store.path / "device.pem"
    path.symlink_to(elsewhere.path / "device.pem")
    error = refused(lambda: store.load("device"), path, "is a symbolic link, not a regular file")
    assert error.key_name == "device"
    refused(lambda: store.info("device"), path, "symbolic link")
    assert [info.name for info in store.list()] == ["transport"]
    assert [name for name, _ in store.broken()] == ["device"]
    path.unlink()
    path.symlink_to(tmp_path / "nowhere.pem")  # a dangling link is refused too, not "no key"
    refused(lambda: store.load("device"), path, "symbolic link")


def test_a_write_replaces_a_planted_link_and_never_writes_through_it(
    store: KeyStore, provider: Provider, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"not a key file")
    store.save("transport", device_key(provider))
    path = store.path / "device.pem"
    path.symlink_to(victim)
    assert "device" in store
    with pytest.raises(KeyExists):
        store.save("device", device_key(provider))
    store.save("device", device_key(provider), replace=True)
    assert victim.read_bytes() == b"not a key file"
    assert not path.is_symlink()
    assert store.load("device").public_key() == device_key(provider).public_key()


def test_fifo_key_file_is_refused_quickly(store: KeyStore, provider: Provider) -> None:
    store.save("transport", device_key(provider))
    path = store.path / "device.pem"
    os.mkfifo(path, 0o600)  # nobody writes: a blocking open or read would wait forever
    error = within(5, lambda: store.load("device"), path)
    assert isinstance(error, StorePermissionError), error
    assert "is a FIFO, not a regular file" in str(error) and error.path == str(path)
    assert error.key_name == "device"
    listed = within(5, store.list, path)
    assert isinstance(listed, list) and [info.name for info in listed] == ["transport"]
    broken = within(5, store.broken, path)
    assert isinstance(broken, list) and [name for name, _ in broken] == ["device"]
    assert "FIFO" in broken[0][1]


def test_directory_in_a_keys_place_is_listed_as_broken(store: KeyStore, provider: Provider) -> None:
    store.save("transport", device_key(provider))
    (store.path / "device.pem").mkdir(mode=0o700)
    refused(lambda: store.load("device"), store.path / "device.pem", "is a directory")
    assert [info.name for info in store.list()] == ["transport"]
    assert [name for name, _ in store.broken()] == ["device"]


# -- the store directory itself -----------------------------------------------------------------


def test_symlinked_store_directory_is_refused(provider: Provider, tmp_path: Path) -> None:
    real = KeyStore(provider, tmp_path / "real")
    real.save("device", device_key(provider))
    link = tmp_path / "link"
    link.symlink_to(real.path)
    linked = KeyStore(provider, link)
    message = "the key store .* is a symbolic link, not a directory"
    refused(lambda: linked.load("device"), link, message)
    refused(lambda: linked.save("other", device_key(provider)), link, message)
    refused(linked.list, link, message)
    refused(linked.load_join_state, link, message)
    assert os.listdir(real.path) == ["device.pem"]


def test_dangling_store_link_is_not_followed_to_create_a_store(
    provider: Provider, tmp_path: Path
) -> None:
    """A link planted where the store will be made must not make the store at its target."""
    target = tmp_path / "chosen-by-the-attacker"
    link = tmp_path / "store"
    link.symlink_to(target)
    store = KeyStore(provider, link)
    refused(lambda: store.create("device", KeyType.ECC256, KeyUsage.SIGN), link, "symbolic link")
    assert not target.exists()


def test_fifo_in_the_store_directorys_place_is_refused_quickly(
    provider: Provider, tmp_path: Path
) -> None:
    path = tmp_path / "store"
    os.mkfifo(path, 0o700)
    store = KeyStore(provider, path)
    error = within(5, store.list, path)
    assert isinstance(error, StorePermissionError), error
    assert "is a FIFO, not a directory" in str(error) and error.path == str(path)


# -- --passphrase-file --------------------------------------------------------------------------


def write_secret(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """A file made with ``mode`` from the start (never briefly open to others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # past the umask
    return path


def with_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], secret: Path) -> Cli:
    """``entra-keys --provider software --passphrase-file SECRET`` on the test's store."""
    options = ["--provider", "software", "--passphrase-file", str(secret)]
    return Cli("software", options, tmp_path / "store", capsys)


@pytest.mark.usefixtures("clean_cli_environment")
@pytest.mark.parametrize(
    "content",
    [b"correct horse\n", b"correct horse", b"correct horse\r\n", b"correct horse\nnext line\n"],
    ids=["newline", "no-newline", "crlf", "two-lines"],
)
def test_passphrase_file_unlocks_a_software_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
) -> None:
    key = KeyStore(open_provider("software"), tmp_path / "store").create(
        "device", KeyType.ECC256, KeyUsage.SIGN, passphrase=PASSPHRASE
    )
    cli = with_file(tmp_path, capsys, write_secret(tmp_path / "passphrase", content))
    exported = serialization.load_pem_public_key(cli.ok("keys", "export", "device").encode())
    assert exported == key.public_key()
    monkeypatch.setenv("ENTRA_KEYS_PASSPHRASE", "wrong")  # the file takes precedence
    created = cli("keys", "create", "second", "--type", "ecc256")
    assert created.code == 0, created.err
    assert "correct horse" not in created.out + created.err
    store = KeyStore(open_provider("software"), tmp_path / "store")
    assert store.info("second").encrypted
    store.load("second", passphrase=PASSPHRASE)  # the first line, its newline stripped


@pytest.mark.usefixtures("clean_cli_environment")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=oct)
def test_passphrase_file_open_to_others_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int
) -> None:
    secret = write_secret(tmp_path / "passphrase", PASSPHRASE + b"\n", mode)
    cli = with_file(tmp_path, capsys, secret)
    result = cli("keys", "create", "device", "--type", "ecc256")
    assert result.code == 1 and result.out == ""
    line = one_error_line(result.err)
    assert f"the passphrase file {secret} is open to other users (mode {mode:o})" in line
    assert "correct horse" not in result.err
    assert not (tmp_path / "store" / "device.pem").exists()  # refused before the command ran


@needs_root
@pytest.mark.usefixtures("clean_cli_environment")
def test_passphrase_file_owned_by_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = write_secret(tmp_path / "passphrase", PASSPHRASE + b"\n")
    os.chown(secret, NOBODY, NOBODY)  # still 0600
    result = with_file(tmp_path, capsys, secret)("keys", "list")
    assert result.code == 1
    line = one_error_line(result.err)
    assert f"the passphrase file {secret} is owned by uid {NOBODY}, not by this user" in line


@pytest.mark.usefixtures("clean_cli_environment")
def test_empty_or_missing_passphrase_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty first line would store the key unencrypted, which the caller did not ask for."""
    empty = write_secret(tmp_path / "empty", b"\nsecond line\n")
    result = with_file(tmp_path, capsys, empty)("keys", "create", "device", "--type", "ecc256")
    assert result.code == 1 and "holds no passphrase" in one_error_line(result.err)
    assert not (tmp_path / "store" / "device.pem").exists()
    missing = tmp_path / "missing"
    result = with_file(tmp_path, capsys, missing)("keys", "list")
    assert result.code == 1
    assert f"cannot read the passphrase file {missing}" in one_error_line(result.err)


@pytest.mark.parametrize(
    "damage", [b"[" * 100_000, b'{"a": ' * 10_000, b'{"session_key": "a", "session_key": "b"}']
)
def test_a_damaged_join_state_is_key_file_corrupt(
    store: KeyStore, damage: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    """100,000 ``[`` (under the 1 MiB limit) raised RecursionError from the API and ``status``
    died with a traceback; a member named twice was read as its last value. The join state is
    read with the strict, depth-bounded JSON reader: KeyFileCorrupt, and one error line."""
    from entra_keys import KeyFileCorrupt
    from entra_keys.cli import main

    store.save_join_state({"device_id": "d", "session_key": "prt"})
    path = store.path / "join.json"
    path.write_bytes(damage)
    with pytest.raises(KeyFileCorrupt, match="join state"):
        store.load_join_state()
    if not store.provider.hardware_backed:
        assert main(["--provider", "software", "--store", str(store.path), "status"]) == 1
        assert one_error_line(capsys.readouterr().err).startswith("entra-keys: error: the join")
