"""One ESAPI connection to a TPM: its lock, the storage key and the auth session.

ESAPI is not thread-safe: every call goes through ``Connection.command``, which holds the
connection's lock, arms the watchdog on simulators (``_watchdog``) and translates
``TSS2_Exception`` (``_errors``). After an I/O failure the connection drops its ESAPI context,
so that later calls fail fast as unreachable.

Keys kept loaded between uses are in ``keys`` (``_key_cache.KeyCache``), sized from the TPM's
transient object slots (TPM_PT_HR_TRANSIENT_MIN) less the storage primary and one slot for the
provider's own needs (an EK, a key check). A command that finds the TPM full first flushes this
process's cached keys (``with_room``), then waits for another process. One salted session is
kept and continued for every encrypted or PIN-authorized command, and flushed on error and on
close.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
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
from ._key_cache import KeyCache
from ._templates import storage_template
from ._watchdog import Watchdog
from .tcti import Tcti

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


class _Command:
    """One ``Connection.command`` block: the lock held, the watchdog armed, TSS errors
    translated. A class, not a generator: it runs on every signature."""

    __slots__ = ("_conn", "_what")

    def __init__(self, conn: Connection, what: str) -> None:
        self._conn = conn
        self._what = what

    def __enter__(self) -> Any:
        conn = self._conn
        conn.lock.acquire()
        esys = conn._esys
        if esys is None:
            conn.lock.release()
            raise TPMUnreachable(f"{self._what}: the TPM provider is closed")
        if conn._watchdog is not None:
            conn._watchdog.started = time.monotonic()
        return esys

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        conn = self._conn
        try:
            if conn._watchdog is not None:
                conn._watchdog.started = None
            if isinstance(exc, conn.tss.TSS2_Exception):
                raise conn._failed(exc, self._what) from exc
        finally:
            conn.lock.release()


class Connection:
    """An ESAPI context on one TCTI, serialized by a lock, with the storage key opened.

    The storage key is the persistent SRK at ``SRK_HANDLE`` where provisioned, else the TCG
    key-file parent created once as a primary in the owner hierarchy (flushed on close).
    """

    #: Seconds a load waits for a free object slot held by another process.
    OBJECT_MEMORY_WAIT = 2.0

    def __init__(self, tss: Any, tcti: Tcti, *, timeout: float, open_storage: bool = True) -> None:
        self.tss = tss
        self.tcti = tcti
        self.lock = threading.RLock()
        self.object_memory_wait = self.OBJECT_MEMORY_WAIT
        self.storage_key: Any = None
        self.storage_parent = model.TPM_RH_OWNER
        self.storage_owned = False
        #: True where the storage primary came from its saved context (``_primary_cache``).
        self.storage_from_context = False
        #: The keys kept loaded between uses (sized once the storage key is open).
        self.keys = KeyCache(self._flush_now)
        self._esys: Any = None
        self._session: Any = None
        self._session_encrypts: tuple[bool, bool] | None = None  # (response, command)
        try:
            self._esys = tss.ESAPI(tcti.string)
        except tss.TSS2_Exception as exc:
            raise _errors.open_failed(exc, tcti.string) from exc
        self._watchdog = Watchdog.for_tcti(tcti, timeout)
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

    def command(self, what: str) -> _Command:
        """Serialize ESAPI use and translate its errors; the block gets the ESAPI context."""
        return _Command(self, what)

    def _failed(self, exc: Exception, what: str) -> TPMError:
        """The library's error for a failed command (the lock held); drops the connection
        after an I/O failure."""
        error = _errors.translate(exc, what, self.tcti.string)
        if isinstance(error, TPMAuthFailure | TPMLockout):
            error = _errors.with_lockout_state(error, what, self._esys)
        watchdog = self._watchdog
        if watchdog is not None and watchdog.fired:
            error = _errors.timed_out(what, self.tcti.string, watchdog.timeout, error.rc)
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
                if self.keys.evict_one() or self._ask_others():
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

    def flush_cache(self) -> None:
        """Flush every key the cache keeps loaded (they load again on their next use)."""
        with self.lock:
            if self._esys is None:
                self.keys.forget()
            elif len(self.keys):
                with self.command("flush cached keys"):
                    self.keys.flush_all()

    def _flush_now(self, handle: Any) -> None:
        """The key cache's flush: TPM2_FlushContext in the caller's command (lock held)."""
        self._esys.flush_context(handle)

    def _ask_others(self) -> bool:
        """Ask this process's other connections to the same TPM to flush their key caches;
        True where one did. Their locks are only tried, never waited for (no deadlock)."""
        freed = False
        for other in list(_OPEN):
            if other is self or other.tcti.inner != self.tcti.inner or not len(other.keys):
                continue
            if not other.lock.acquire(blocking=False):
                continue
            try:
                if len(other.keys) and not other.closed:
                    with contextlib.suppress(Exception):
                        other.flush_cache()
                    freed = True
            finally:
                other.lock.release()
        return freed

    @contextlib.contextmanager
    def hmac_session(self, esys: Any, *, encrypt: bool, command: bool = True) -> Iterator[Any]:
        """``session()`` for the block, dropped (``drop_session``) where the block fails."""
        session = self.session(esys, encrypt=encrypt, command=command)
        try:
            yield session
        except BaseException:
            self.drop_session(esys)
            raise

    def session(self, esys: Any, *, encrypt: bool, command: bool = True) -> Any:
        """The salted HMAC session (salt sealed to the storage key, AES-128-CFB): it authorizes
        with a PIN the TPM never sees in the clear, and with ``encrypt`` also encrypts the first
        response parameter and (``command``) the first command parameter, so secrets never
        cross the TPM interface bare. Each encrypted parameter costs tpm2-tss client CPU.

        One session is started on first use and continued across calls (the caller holds the
        lock); a command that fails with it drops it (``drop_session``), and it is flushed on
        close.
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
        mode = (encrypt, encrypt and command)
        if self._session_encrypts != mode:  # set only on change: it costs a call
            attributes = t.TPMA_SESSION.CONTINUESESSION
            if encrypt:
                attributes |= t.TPMA_SESSION.ENCRYPT
            if encrypt and command:
                attributes |= t.TPMA_SESSION.DECRYPT
            try:
                esys.trsess_set_attributes(session, attributes)
            except BaseException:
                self.drop_session(esys)
                raise
            self._session_encrypts = mode
        return session

    def drop_session(self, esys: Any) -> None:
        """Flush the salted session after a command that failed with it (best effort): the
        next one starts a new session."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                esys.flush_context(session)

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
        self.keys.slots = max(0, slots - (1 if self.storage_owned else 0) - 1)

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
        saved = _primary_cache.read(_primary_cache.path_for(self.tcti.inner))
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
        path = _primary_cache.path_for(self.tcti.inner)
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
            error = _errors.translate(exc, "create the storage primary", self.tcti.string)
            if isinstance(error, TPMAuthFailure):
                raise _errors.owner_password(error) from exc
            raise
        self.storage_key = created[0]
        self.storage_owned = True

    def _drop(self) -> None:
        """After an I/O failure the ESAPI context is unusable: close it so that every later
        call fails fast as unreachable (open a new provider once the TPM is back)."""
        esys, self._esys = self._esys, None
        self.storage_key = None
        self.keys.forget()
        self._session = None
        if esys is not None:
            with contextlib.suppress(Exception):
                esys.close()

    def close(self) -> None:
        """Flush the keys this connection loaded and the storage key it created, and close
        the ESAPI context."""
        if self._watchdog is not None:
            self._watchdog.stop()
        with self.lock:
            esys = self._esys
            if esys is None:
                return
            try:
                self.keys.close()
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
                self._esys = None
                self.keys.forget()
                self._session = None
                self.storage_key = None
                esys.close()
