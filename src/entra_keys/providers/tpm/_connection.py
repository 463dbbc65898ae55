"""One ESAPI connection to a TPM: its lock, its watchdog, the storage key and auth sessions.

ESAPI is not thread-safe: every call goes through ``Connection.command``, which holds the
connection's lock and translates ``TSS2_Exception`` (``_errors``). After an I/O failure the
connection closes itself, so that later calls fail fast as unreachable.

What the key classes and the provider use, and nothing else: ``tss`` (the tpm2_pytss module),
``tcti``, ``lock``, ``command()``, ``run()``, ``load()`` (with ``object_memory_wait``), ``flush()``,
``hmac_session()``, the key cache (``cached()``, ``keep()``, ``take()``, ``make_room()``),
``signer``, ``storage_key``, ``storage_parent``, ``storage_owned``, ``closed`` and ``close()``.

The key cache keeps recently used keys loaded while the TPM has free transient slots (it asks
the TPM: TPM_PT_HR_TRANSIENT_MIN), leaving one slot for the provider's own needs (an EK, a
key check), and flushes the least recently used key to make room: unpinned signing is then one
TPM command. A load that finds the TPM full evicts the cache before it waits for another
process. One salted session is kept and continued for every encrypted or PIN-authorized
command, and flushed on error and on close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...errors import (
    HardwareUnavailable,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
)
from ...tcg import model
from . import _errors, _primary_cache
from ._signing import Signer
from ._templates import storage_template

__all__ = ["SRK_HANDLE", "Connection", "import_pytss"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Where a provisioned storage root key lives (TCG Provisioning Guidance).
SRK_HANDLE = model.SRK_HANDLE_RSA


def import_pytss() -> Any:
    """The tpm2_pytss module, imported on first use; HardwareUnavailable where it cannot be."""
    # libtss2 logs every TPM error to stderr; the library raises them instead. TSS2_LOG, when
    # set, still wins (e.g. TSS2_LOG=esys+debug to see what crosses the interface).
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    try:
        import tpm2_pytss
        import tpm2_pytss.tsskey
    except ImportError as exc:
        raise HardwareUnavailable(
            f"tpm2-pytss is not usable ({exc}): install entra_keys[tpm] and libtss2"
        ) from exc
    return tpm2_pytss


#: The open connections of this process: a full TPM asks the others on its TCTI to free the
#: slots their key caches hold before it waits (another process it can only wait for).
_OPEN: weakref.WeakSet[Connection] = weakref.WeakSet()


def _inner_tcti(tcti: str) -> str:
    """The TCTI under wrappers such as ``pcap:swtpm:path=...`` (the one that does the I/O)."""
    while tcti.startswith("pcap:"):
        tcti = tcti[len("pcap:") :]
    return tcti


class _Watchdog:
    """Ends a simulator command that waits longer than the timeout, by shutting down the
    socket it waits on: the TSS's one-call API waits without limit, and a stopped swtpm would
    hang the caller. (/dev/tpmrm0 is bounded by the kernel driver's own timeouts.)

    Limits: it runs for swtpm and mssim TCTIs only. It does not know the TCTI's socket: it
    walks /proc/self/fd (Linux only) and shuts down every socket of this process whose peer is
    the TCTI's ``path=``, or whose TCP peer port is ``port=`` or the one after it (2321/2322
    when none is named), whatever the host: another connection of this process to such a peer
    is cut too. It polls every quarter of the timeout (at most every 0.5 s), so a command fails
    up to that much after the timeout. Once it fired, the connection is dropped.
    """

    def __init__(self, tcti: str, timeout: float) -> None:
        self.timeout = timeout
        self.started: float | None = None
        self.fired = False
        conf = tcti.partition(":")[2]
        options = dict(part.partition("=")[::2] for part in conf.split(",") if part)
        self._path = options.get("path")  # swtpm on a unix socket
        port = options.get("port", "2321")  # swtpm or mssim over TCP (command port, +1 platform)
        self._port = int(port) if port.isdigit() else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="entra-keys-tpm-watchdog")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(min(self.timeout / 4, 0.5)):
            started = self.started
            if started is not None and time.monotonic() - started > self.timeout:
                self.fired = True
                self._shutdown_sockets()

    def _shutdown_sockets(self) -> None:
        for fd in os.listdir("/proc/self/fd"):
            try:
                if not stat.S_ISSOCK(os.fstat(int(fd)).st_mode):
                    continue
                sock = socket.socket(fileno=os.dup(int(fd)))
            except OSError:
                continue
            with sock:
                try:
                    peer = sock.getpeername()
                except OSError:
                    continue
                ours = (
                    peer == self._path
                    if isinstance(peer, str)
                    else (
                        isinstance(peer, tuple) and peer[1] in (self._port, (self._port or 0) + 1)
                    )
                )
                if ours:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()


class Connection:
    """An ESAPI context on one TCTI, serialized by a lock, with the storage key opened.

    The storage key is the persistent SRK at ``SRK_HANDLE`` where provisioned, else the TCG
    key-file parent created once as a primary in the owner hierarchy (flushed on close).
    """

    #: Seconds a load waits for a free object slot held by another process.
    OBJECT_MEMORY_WAIT = 2.0

    def __init__(self, tss: Any, tcti: str, *, timeout: float, open_storage: bool = True) -> None:
        self.tss = tss
        self.tcti = tcti
        self.lock = threading.RLock()
        self.object_memory_wait = self.OBJECT_MEMORY_WAIT
        self.storage_key: Any = None
        self.storage_parent = model.TPM_RH_OWNER
        self.storage_owned = False
        #: True where the storage primary came from its saved context (``_primary_cache``).
        self.storage_from_context = False
        self._esys: Any = None
        self._watchdog: _Watchdog | None = None
        #: Keys kept loaded, least recently used first: id(key) -> (key, handle).
        self._cache: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self.cache_slots = 0
        #: Keys in use by a command now (id -> uses): never evicted until it ends.
        self.busy: dict[int, int] = {}
        self._session: Any = None
        self._session_encrypts: tuple[bool, bool] | None = None  # (response, command)
        try:
            self._esys = tss.ESAPI(tcti)
        except tss.TSS2_Exception as exc:
            raise _errors.open_failed(exc, tcti) from exc
        simulator = _inner_tcti(tcti).partition(":")[0] in ("swtpm", "mssim")
        if simulator and timeout > 0:
            self._watchdog = _Watchdog(_inner_tcti(tcti), timeout)
        self.signer = Signer(tss, esys=self._esys)
        try:
            if open_storage:  # without: for provisioning (tpm init), no key command works
                self._open_storage_key()
        except BaseException:
            self.close()
            raise
        _OPEN.add(self)

    @property
    def closed(self) -> bool:
        """True once closed, or dropped after an I/O failure."""
        return self._esys is None

    @contextlib.contextmanager
    def command(self, what: str) -> Iterator[Any]:
        """Serialize ESAPI use and translate its errors; the block gets the ESAPI context."""
        with self.lock:
            if self._esys is None:
                raise TPMUnreachable(f"{what}: the TPM provider is closed")
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.started = time.monotonic()
            try:
                yield self._esys
            except self.tss.TSS2_Exception as exc:
                raise self._failed(exc, what) from exc
            finally:
                if watchdog is not None:
                    watchdog.started = None

    def run(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """``call(esys, *args)`` as in a ``command`` block, without its generator: the signing
        hot path (a context manager costs more than the rest of the call's Python)."""
        with self.lock:
            esys = self._esys
            if esys is None:
                raise TPMUnreachable(f"{what}: the TPM provider is closed")
            watchdog = self._watchdog
            if watchdog is None:
                try:
                    return call(esys, *args)
                except self.tss.TSS2_Exception as exc:
                    raise self._failed(exc, what) from exc
            watchdog.started = time.monotonic()
            try:
                return call(esys, *args)
            except self.tss.TSS2_Exception as exc:
                raise self._failed(exc, what) from exc
            finally:
                watchdog.started = None

    def _failed(self, exc: Exception, what: str) -> TPMError:
        """The library's error for a failed command (the lock held); drops the connection
        after an I/O failure."""
        error = _errors.translate(exc, what, self.tcti)
        if isinstance(error, TPMAuthFailure | TPMLockout):
            error = self._with_lockout_state(error, what)
        watchdog = self._watchdog
        if watchdog is not None and watchdog.fired:
            error = _errors.timed_out(what, self.tcti, watchdog.timeout, error.rc)
        if isinstance(error, TPMUnreachable):
            self._drop()
        return error

    def load(self, esys: Any, private: Any, public: Any, auth: bytes | None = None) -> Any:
        """TPM2_Load under the storage key (``with_room``); the caller flushes what this returns."""
        handle = self.with_room(lambda: esys.load(self.storage_key, private, public))
        if auth:
            esys.tr_set_auth(handle, auth)
        return handle

    def with_room(self, call: Callable[[], T]) -> T:
        """Run a command that needs a free object slot (TPM2_Load, TPM2_Create, CreatePrimary).

        A full TPM first flushes the keys this process's caches hold and retries at once.
        Without a resource manager (swtpm), another process may hold the slots for a moment:
        then it is retried for up to ``object_memory_wait`` seconds before ``TPMObjectMemory``.
        """
        deadline = time.monotonic() + self.object_memory_wait
        pause = 0.005
        while True:
            try:
                return call()
            except self.tss.TSS2_Exception as exc:
                if not _errors.is_object_memory(exc):
                    raise
                if self._evict_one(self._esys) or self._ask_others():
                    continue  # a slot this process held: free now, try again at once
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def flush(self, handle: Any) -> None:
        """Flush a loaded object; nothing to do once the connection is gone (and it with it)."""
        with self.lock:
            if self.closed:
                return
            with self.command("flush key") as esys:
                esys.flush_context(handle)

    # -- the key cache (callers hold the lock) ---------------------------------------------

    def cached(self, key: object) -> Any:
        """The handle of a key the cache keeps loaded (now its most recently used), or None."""
        entry = self._cache.get(id(key))
        if entry is None:
            return None
        self._cache.move_to_end(id(key))
        return entry[1]

    def make_room(self, esys: Any) -> None:
        """Flush least recently used keys (not in use) until one more fits in the cache."""
        while len(self._cache) >= self.cache_slots and self._evict_one(esys):
            pass

    def keep(self, key: object, handle: Any) -> bool:
        """Keep a loaded key in the cache (True), or False where the cache has no free slot
        (every cached key in use by the command now): the caller flushes it after use."""
        if self.cache_slots <= 0 or self._esys is None:
            return False
        self.make_room(self._esys)
        if len(self._cache) >= self.cache_slots:
            return False
        self._cache[id(key)] = (key, handle)
        return True

    def take(self, key: object) -> Any:
        """Remove a key from the cache and hand its handle to the caller (None if not kept)."""
        entry = self._cache.pop(id(key), None)
        return None if entry is None else entry[1]

    def _ask_others(self) -> bool:
        """Ask this process's other connections to the same TPM to flush their key caches;
        True where one did. Their locks are only tried, never waited for (no deadlock)."""
        freed = False
        inner = _inner_tcti(self.tcti)
        for other in list(_OPEN):
            if other is self or _inner_tcti(other.tcti) != inner or not other._cache:
                continue
            if not other.lock.acquire(blocking=False):
                continue
            try:
                if other._cache and other._esys is not None:
                    with contextlib.suppress(Exception):
                        other.flush_cache()
                    freed = True
            finally:
                other.lock.release()
        return freed

    def _evict_one(self, esys: Any) -> bool:
        """Flush the least recently used cached key not in use; False when there is none."""
        for ident in self._cache:
            if ident not in self.busy:
                _, handle = self._cache.pop(ident)
                esys.flush_context(handle)
                return True
        return False

    def cached_handles(self) -> int:
        """How many keys the cache keeps loaded now."""
        with self.lock:
            return len(self._cache)

    def flush_cache(self) -> None:
        """Flush every key the cache keeps loaded (they load again on their next use)."""
        with self.lock:
            if self._esys is None or not self._cache:
                self._cache.clear()
                return
            with self.command("flush cached keys") as esys:
                while self._evict_one(esys):
                    pass

    @contextlib.contextmanager
    def hmac_session(self, esys: Any, *, encrypt: bool, command: bool = True) -> Iterator[Any]:
        """A salted HMAC session (salt sealed to the storage key, AES-128-CFB): it authorizes
        with a PIN the TPM never sees in the clear, and with ``encrypt`` also encrypts the first
        response parameter and (``command``) the first command parameter, so secrets never
        cross the TPM interface bare. Each encrypted parameter costs tpm2-tss client CPU.

        One session is started on first use and continued across calls (the caller holds the
        lock); it is flushed after an error and on close, and started again when next needed.
        """
        t = self.tss
        session = self._session
        if session is None:
            session = esys.start_auth_session(
                tpm_key=self.storage_key,
                bind=t.ESYS_TR.NONE,
                session_type=t.TPM2_SE.HMAC,
                symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"),
                auth_hash=t.TPM2_ALG.SHA256,
            )
            self._session = session
            self._session_encrypts = None
        try:
            mode = (encrypt, encrypt and command)
            if self._session_encrypts != mode:  # set only on change: it costs a call
                attributes = t.TPMA_SESSION.CONTINUESESSION
                if encrypt:
                    attributes |= t.TPMA_SESSION.ENCRYPT
                if encrypt and command:
                    attributes |= t.TPMA_SESSION.DECRYPT
                esys.trsess_set_attributes(session, attributes)
                self._session_encrypts = mode
            yield session
        except BaseException:
            self._session = None
            with contextlib.suppress(Exception):
                esys.flush_context(session)
            raise

    def _open_storage_key(self) -> None:
        """Use the persistent SRK where provisioned, else the standard primary: from its saved
        context of this TPM boot where that checks out, else created once (and saved); then
        size the key cache from the TPM's transient object slots."""
        t = self.tss
        slots: int | None = None
        with self.command("open the storage key") as esys:
            try:
                # One TPM2_ReadPublic: the handle's absence is the answer (TPM_RC_HANDLE).
                self.storage_key = esys.tr_from_tpmpublic(SRK_HANDLE)
                self.storage_parent = SRK_HANDLE
            except t.TSS2_Exception as exc:
                if _errors.translate(exc, "", None).__class__ is not TPMError:
                    raise
                slots = self._load_saved_primary(esys)
                if slots is None:
                    self._create_storage_primary(esys)
            if slots is None:
                slots = self._transient_slots(esys)
                if self.storage_owned:
                    self._save_primary(esys, slots)
        # One slot for the storage primary (when ours), one for the provider's own needs.
        self.cache_slots = max(0, slots - (1 if self.storage_owned else 0) - 1)

    def _transient_slots(self, esys: Any) -> int:
        """TPM_PT_HR_TRANSIENT_MIN: how many transient objects the TPM holds at least."""
        t = self.tss
        _, data = esys.get_capability(t.TPM2_CAP.TPM_PROPERTIES, t.TPM2_PT_HR.TRANSIENT_MIN, 1)
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
        return props.get(int(t.TPM2_PT_HR.TRANSIENT_MIN), 3)

    def _load_saved_primary(self, esys: Any) -> int | None:
        """Load the storage primary from the saved context (``_primary_cache``) and check it by
        the TPM's ReadPublic; its transient slot count where it passed, else None (nothing left
        loaded). I/O failures and a full TPM are raised; any other refusal falls back. The slot
        count comes from the file unchecked (it saves a GetCapability): a wrong one only sizes
        the key cache wrong, and a full TPM is handled by ``with_room`` as ever."""
        t = self.tss
        saved = _primary_cache.read(_primary_cache.path_for(_inner_tcti(self.tcti)))
        if saved is None:
            return None
        recorded, slots, blob = saved
        try:
            context = t.TPMS_CONTEXT.unmarshal(blob)[0]
        except Exception:  # a file that does not parse: made again
            return None
        try:
            handle = self.with_room(lambda: esys.context_load(context))
        except t.TSS2_Exception as exc:
            if isinstance(_errors.translate(exc, "", None), TPMUnreachable | TPMObjectMemory):
                raise
            log.debug("saved storage primary context refused (%s): creating it", exc)
            return None  # another boot, a cleared TPM, another TPM, an altered context
        try:
            public, name, qualified = esys.read_public(handle)
            ok = any(
                _primary_cache.checked(
                    public,
                    bytes(name),
                    bytes(qualified),
                    recorded,
                    storage_template(t, ecc=ecc),
                )
                for ecc in (True, False)
            )
        except BaseException:
            with contextlib.suppress(Exception):
                esys.flush_context(handle)
            raise
        if not ok:
            log.warning("the saved storage primary context is not the standard primary")
            esys.flush_context(handle)
            return None
        self.storage_key = handle
        self.storage_owned = True
        self.storage_from_context = True
        return max(1, slots)

    def _save_primary(self, esys: Any, slots: int) -> None:
        """Save the primary's context for the next opens of this boot (best effort)."""
        t = self.tss
        try:
            name = bytes(esys.tr_get_name(self.storage_key))
            context = esys.context_save(self.storage_key)
        except t.TSS2_Exception as exc:
            log.debug("storage primary context not saved: %s", exc)
            return
        path = _primary_cache.path_for(_inner_tcti(self.tcti))
        _primary_cache.write(path, name, slots, bytes(context.marshal()))

    def _create_storage_primary(self, esys: Any) -> None:
        """The TCG key-file format's storage primary: ECC P-256 where the TPM has ECC, else
        RSA-2048 (asking for the one algorithm, not listing them all, keeps this fast)."""
        t = self.tss
        _, algs = esys.get_capability(t.TPM2_CAP.ALGS, t.TPM2_ALG.ECC, 1)
        has_ecc = any(int(a.alg) == t.TPM2_ALG.ECC for a in algs.data.algorithms)
        template = storage_template(t, ecc=has_ecc)
        try:
            created = self.with_room(
                lambda: esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER)
            )
        except t.TSS2_Exception as exc:
            error = _errors.translate(exc, "create the storage primary", self.tcti)
            if isinstance(error, TPMAuthFailure):
                raise _errors.owner_password(error) from exc
            raise
        self.storage_key = created[0]
        self.storage_owned = True

    def _with_lockout_state(self, error: TPMError, what: str) -> TPMError:
        """The authorization error with the TPM's dictionary-attack state, where it answers."""
        t = self.tss
        try:
            _, data = self._esys.get_capability(
                t.TPM2_CAP.TPM_PROPERTIES, t.TPM2_PT.LOCKOUT_COUNTER, 4
            )
        except t.TSS2_Exception:
            return error
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
        return _errors.with_lockout_state(error, what, props)

    def _drop(self) -> None:
        """After an I/O failure the ESAPI context is unusable: close it so that every later
        call fails fast as unreachable (open a new provider once the TPM is back)."""
        esys, self._esys = self._esys, None
        self.storage_key = None
        self._cache.clear()
        self._session = None
        if esys is not None:
            with contextlib.suppress(Exception):
                esys.close()

    def close(self) -> None:
        """Flush the storage key this connection created and close the ESAPI context."""
        if self._watchdog is not None:
            self._watchdog.stop()
        with self.lock:
            esys, self._esys = self._esys, None
            if esys is None:
                return
            try:
                self.busy.clear()
                while self._evict_one(esys):
                    pass
                if self._session is not None:
                    session, self._session = self._session, None
                    esys.flush_context(session)
                if self.storage_key is not None:
                    if self.storage_owned:
                        esys.flush_context(self.storage_key)
                    else:
                        esys.tr_close(self.storage_key)
            except self.tss.TSS2_Exception as exc:
                log.warning("could not release the TPM objects of this connection: %s", exc)
            finally:
                self._cache.clear()
                self._session = None
                self.storage_key = None
                esys.close()
