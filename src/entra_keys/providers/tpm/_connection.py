"""One ESAPI connection to a TPM: its lock, the storage keys, the objects it holds, the salted
session, and what it does when the TPM restarts under it.

ESAPI is not thread-safe: every call goes through ``Connection.command``, which holds the
connection's lock, arms the watchdog on simulators (``_watchdog``) and translates
``TSS2_Exception`` (``_errors``).

Storage keys (``parent``). A key file names the parent it was made under, and the key loads
under that one: the persistent SRK at 0x81000001 (``entra-keys tpm init``), or the owner
hierarchy's standard primary, 0x40000001 in key files (the TCG key-file parent, as tpm2-openssl
makes it), loaded from its saved context of this boot (``_primary_cache``) or created. Each is
opened only when something needs it: opening the connection sends no command. New objects go
under the default parent (``default_parent``): the SRK where the TPM has one, else the owner
primary. An object at 0x81000001 that is not the standard SRK (anyone with the owner
authorization can persist their own key there) is never used: not as a parent, not as a salt key.

Objects. A connection holds at most ``OBJECTS`` transient objects at once, counting what the next
command needs: the objects it loads or creates, and a slot for a persistent key it names (the TPM
loads one for the command). Three is what every PC Client TPM has and what the kernel's
/dev/tpmrm0 lets a process hold, whatever the chip reports; keys kept loaded between uses
(``keys``, a ``KeyCache``) make room first, least recently used first. A TPM still full (another
process's objects) flushes this process's other caches, then waits (``with_room``).

Sessions. One salted session (its salt encrypted to a storage key whose public area the TPM
itself gave) is kept and continued for every encrypted or PIN-authorized command.

Restarts (``recover``). A TPM restart or reset under a long-lived connection (a swtpm restarted,
a TPM reset, a resume without saved state) leaves it with handles the TPM no longer holds or a
broken simulator socket. The connection reconnects where the socket broke, forgets what the TPM
lost and lets the operation run once more, reopening the storage key it needs; only a storage key
whose name is not the one recorded when this connection first opened it (a cleared TPM, another
TPM) makes the keys unusable (``KeysUnusable``). Behind a resource manager (tpm2-abrmd,
/dev/tpmrm*) nothing is flushed at close: it drops a closed connection's objects and sessions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ...errors import (
    ForeignKey,
    HardwareUnavailable,
    KeysUnusable,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
)
from ...tcg import model
from . import _errors, _primary_cache
from ._key_cache import KeyCache
from ._templates import srk_mismatch, storage_template
from ._watchdog import Watchdog
from .tcti import Tcti

__all__ = ["OWNER_PRIMARY", "SRK_HANDLE", "Connection", "Parent", "import_pytss", "tr_public"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Where a provisioned storage root key lives (TCG Provisioning Guidance).
SRK_HANDLE = model.SRK_HANDLE_RSA
#: What key files name as the parent of a key made under the owner hierarchy's standard primary.
OWNER_PRIMARY = model.TPM_RH_OWNER


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


#: ESYS's serialized metadata of an object (``ESAPI.tr_serialize``): TPM handle, TPM2B_NAME, the
#: resource type (1: a key, 2: an NV index), then its TPM2B_PUBLIC or TPM2B_NV_PUBLIC.
_KEY_RESOURCE, _NV_RESOURCE = 1, 2


def tr_public(tss: Any, esys: Any, tr: Any, *, nv: bool = False) -> Any:
    """The public area ESYS keeps for an object or NV index (``ESAPI.tr_serialize``), no TPM
    command: after ``tr_from_tpmpublic`` it is what the TPM's ReadPublic answered. ValueError
    where the metadata is not in that layout."""
    data = bytes(esys.tr_serialize(tr))
    if len(data) < 6:
        raise ValueError("ESYS metadata too short")
    (name_size,) = struct.unpack_from(">H", data, 4)
    at = 6 + name_size
    if len(data) < at + 4:
        raise ValueError("ESYS metadata too short")
    (kind,) = struct.unpack_from(">I", data, at)
    if kind != (_NV_RESOURCE if nv else _KEY_RESOURCE):
        raise ValueError(f"ESYS metadata of resource type {kind}")
    public, used = (tss.TPM2B_NV_PUBLIC if nv else tss.TPM2B_PUBLIC).unmarshal(data[at + 4 :])
    if at + 4 + used != len(data):
        raise ValueError("ESYS metadata with trailing bytes")
    return public


def behind_resource_manager(tcti: Tcti) -> bool:
    """True where a resource manager owns the connection's objects and sessions: tpm2-abrmd, or
    the kernel's /dev/tpmrm* (they are dropped when the connection closes)."""
    name = tcti.inner.partition(":")[0]
    device = tcti.inner.partition(":")[2].partition(",")[0]
    return name == "tabrmd" or (name == "device" and os.path.basename(device).startswith("tpmrm"))


#: The open connections of this process: a full TPM asks the others on its TCTI to free the
#: slots their key caches hold before it waits (another process it can only wait for).
_OPEN: weakref.WeakSet[Connection] = weakref.WeakSet()


class Parent:
    """A storage key the connection opened: its handle as key files name it (``SRK_HANDLE`` or
    ``OWNER_PRIMARY``), its ESYS handle, and whether it is a transient primary of this
    connection (one of its objects, flushed at close) and came from the saved context."""

    __slots__ = ("from_context", "handle", "owned", "tr")

    def __init__(self, handle: int, tr: Any, *, owned: bool, from_context: bool = False) -> None:
        self.handle = handle
        self.tr = tr
        self.owned = owned
        self.from_context = from_context

    @property
    def command_slots(self) -> int:
        """The object slots a command naming this key takes for it (a persistent key is loaded
        into one for the command)."""
        return 0 if self.owned else 1


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
            try:
                esys = conn._reconnect(self._what)
            except BaseException:
                conn.lock.release()
                raise
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
    """An ESAPI context on one TCTI, serialized by a lock, with its storage keys."""

    #: Seconds a load waits for a free object slot held by another process.
    OBJECT_MEMORY_WAIT = 2.0
    #: The transient objects a connection holds at once, a command's needs included.
    OBJECTS = 3

    def __init__(self, tss: Any, tcti: Tcti, *, timeout: float) -> None:
        self.tss = tss
        self.tcti = tcti
        self.lock = threading.RLock()
        self.object_memory_wait = self.OBJECT_MEMORY_WAIT
        #: True behind tpm2-abrmd or /dev/tpmrm*: closing drops our objects and sessions.
        self.resource_manager = behind_resource_manager(tcti)
        #: The keys kept loaded between uses.
        self.keys = KeyCache(self._flush_cached, slots=self.OBJECTS)
        #: Bumped when the TPM's handles of this connection are lost (a reconnect, a reset).
        self.generation = 0
        #: How many transient objects this connection holds in the TPM now.
        self.objects = 0
        #: Why the storage hierarchy is gone (set once shown): every key use says it.
        self.lost: str | None = None
        #: Objects pinned by ``loaded()`` (their handles are held outside the cache).
        self.pinned: weakref.WeakSet[Any] = weakref.WeakSet()
        self._parents: dict[int, Parent] = {}
        #: The name of each storage key when this connection first opened it.
        self._names: dict[int, bytes] = {}
        #: Persistent objects read (EKs): handle -> (ESYS handle, TPM2B_PUBLIC).
        self._persistent: dict[int, tuple[Any, Any]] = {}
        self._default: int | None = None
        #: Why the object at SRK_HANDLE is not used (not the standard SRK), once seen.
        self.refused_srk: str | None = None
        #: Names of objects at SRK_HANDLE whose authorization failed (not the standard SRK).
        self._refused_srk_names: set[bytes] = set()
        self._session: Any = None
        self._session_encrypts: tuple[bool, bool] | None = None  # (response, command)
        self._create_loaded = True  # TPM2_CreateLoaded until the TPM says it has none
        self._closed = False
        self._esys: Any = None
        self._watchdog: Watchdog | None = None
        try:
            self._esys = tss.ESAPI(tcti.string)
        except tss.TSS2_Exception as exc:
            raise _errors.open_failed(exc, tcti.string) from exc
        self._watchdog = Watchdog.for_tcti(tcti, timeout)
        _OPEN.add(self)

    @property
    def closed(self) -> bool:
        """True once closed, or while the connection is dropped after an I/O failure."""
        return self._esys is None

    def command(self, what: str) -> _Command:
        """Serialize ESAPI use and translate its errors; the block gets the ESAPI context.
        A connection dropped after an I/O failure reconnects first."""
        return _Command(self, what)

    # -- storage keys -------------------------------------------------------------------------

    @property
    def storage_parent(self) -> int:
        """The parent new objects are made under, as key files name it (asked of the TPM on
        first need: one TPM2_ReadPublic)."""
        if self._default is None:
            with self.command("open the storage key") as esys:
                self.default_parent(esys)
        assert self._default is not None
        return self._default

    @property
    def storage_key(self) -> Any:
        """The ESYS handle of the default storage key, opened on first need."""
        with self.command("open the storage key") as esys:
            return self.default_parent(esys).tr

    def describe_storage(self) -> str:
        """The default storage key for ``ProviderInfo.storage_key``."""
        with self.command("open the storage key") as esys:
            self.default_parent(esys)
        found = self._parents.get(self.storage_parent)
        text = f"0x{self.storage_parent:08x}"
        if found is None or not found.owned:
            return text + " (persistent)" if self.storage_parent == SRK_HANDLE else text
        where = (
            "owner hierarchy, saved primary context" if found.from_context else "owner hierarchy"
        )
        if self.refused_srk is not None:
            where += f"; 0x{SRK_HANDLE:08x} not used: {self.refused_srk}"
        return f"{text} (primary, {where})"

    def parent(self, esys: Any, handle: int) -> Parent:
        """The storage key a key file names, opened on first need (the lock held): the
        persistent SRK, or the owner hierarchy's standard primary. ForeignKey for a parent
        this TPM does not offer; KeysUnusable once the storage hierarchy is shown gone."""
        found = self._parents.get(handle)
        if found is not None:
            return found
        if self.lost is not None:
            raise KeysUnusable(self.lost)
        if handle == SRK_HANDLE:
            found = self._open_srk(esys)
            if found is None:
                raise self._no_srk()
            self._adopt(esys, found)
        elif handle == OWNER_PRIMARY:
            found = self._load_saved_primary(esys)
            if found is None:
                found = self._create_primary(esys)
                self._adopt(esys, found)
                self._save_primary(esys, found)
            else:
                self._adopt(esys, found)
        else:
            raise ForeignKey(
                f"the key file names parent 0x{handle:08x}, which this TPM does not offer: keys "
                f"load under the persistent SRK (0x{SRK_HANDLE:08x}) or the owner hierarchy's "
                f"standard primary (0x{OWNER_PRIMARY:08x})"
            )
        return found

    def default_parent(self, esys: Any) -> Parent:
        """The storage key new objects go under, opened (the lock held): the persistent SRK
        where the TPM has one (asked once), else the owner hierarchy's standard primary."""
        if self._default is None:
            srk = self._open_srk(esys)
            if srk is not None:
                self._adopt(esys, srk)
                self._default = SRK_HANDLE
                return srk
            self._default = OWNER_PRIMARY
        return self.parent(esys, self._default)

    def _adopt(self, esys: Any, found: Parent) -> None:
        """Keep an opened storage key, after checking its name against the one recorded when
        this connection first opened it: another name means the hierarchy is gone."""
        name = bytes(esys.tr_get_name(found.tr))
        recorded = self._names.setdefault(found.handle, name)
        if recorded != name:
            if found.owned:
                self.flush_object(esys, found.tr)
            else:
                esys.tr_close(found.tr)
            raise self._gone(found.handle, "its name is not the one it had")
        self._parents[found.handle] = found

    def _gone(self, handle: int, why: str) -> KeysUnusable:
        """Mark the storage hierarchy gone; the error every key use raises from now on."""
        self.lost = (
            f"keys unusable on this TPM: leave and join again (the storage key "
            f"0x{handle:08x} this provider opened is gone: {why}; the TPM was cleared or "
            "replaced)"
        )
        return KeysUnusable(self.lost)

    def _no_srk(self) -> ForeignKey:
        """The error for a key made under the persistent SRK where the TPM has none, or where
        the object there is not the standard SRK."""
        if self.refused_srk is not None:
            return ForeignKey(
                f"the key was made under 0x{SRK_HANDLE:08x}, and the object there is not the "
                f"standard SRK ({self.refused_srk}): it is not used as a storage key"
            )
        if SRK_HANDLE in self._names:
            return self._gone(SRK_HANDLE, "the TPM no longer has it")
        return ForeignKey(
            f"the key was made under the persistent SRK 0x{SRK_HANDLE:08x}, which this TPM "
            f"does not have (it offers the owner hierarchy's standard primary, "
            f"0x{OWNER_PRIMARY:08x}): another TPM's key, or one of a TPM cleared since"
        )

    def _open_srk(self, esys: Any) -> Parent | None:
        """The persistent SRK (one TPM2_ReadPublic, whose answer ESYS keeps: the salt key's
        public area is the TPM's own), or None where the TPM has none or the object there is not
        the standard SRK (``refused_srk`` says why, logged once): anyone with the owner
        authorization can persist a key there whose private half they know, and a session
        salted to it would give them every PIN and secret sent in it."""
        t = self.tss
        try:
            tr = self.with_room(lambda: esys.tr_from_tpmpublic(SRK_HANDLE), 1)
        except t.TSS2_Exception as exc:
            if _errors.tpm_code(int(exc.rc)) == int(t.TPM2_RC.HANDLE):
                return None
            raise
        try:
            public = tr_public(t, esys, tr)
        except ValueError:  # metadata in another layout: ask the TPM again
            public = esys.read_public(tr)[0]
        why = srk_mismatch(t, public)
        if why is None and bytes(esys.tr_get_name(tr)) in self._refused_srk_names:
            why = self.refused_srk
        if why is None:
            return Parent(SRK_HANDLE, tr, owned=False)
        esys.tr_close(tr)
        if self.refused_srk is None:
            log.warning(
                "0x%08x is not the standard SRK (%s): not used; keys go under the owner "
                "hierarchy's standard primary",
                SRK_HANDLE,
                why,
            )
        self.refused_srk = why
        return None

    def _load_saved_primary(self, esys: Any) -> Parent | None:
        """The owner primary from its saved context (``_primary_cache``), checked by the TPM's
        ReadPublic; None where there is none or it does not pass (nothing left loaded). I/O
        failures and a full TPM are raised; any other refusal falls back."""
        t = self.tss
        saved = _primary_cache.read(self.tcti.inner)
        if saved is None:
            return None
        recorded, blob = saved
        try:
            context = t.TPMS_CONTEXT.unmarshal(blob)[0]
        except Exception:  # a file that does not parse: made again
            return None
        try:
            handle = self.with_room(lambda: esys.context_load(context), 1)
        except t.TSS2_Exception as exc:
            if isinstance(_errors.translate(exc, "", None), TPMUnreachable | TPMObjectMemory):
                raise
            log.debug("saved storage primary context refused (%s): creating it", exc)
            return None  # another boot, a cleared TPM, another TPM, an altered context
        self.objects += 1
        try:
            # Kept for safety: ESYS's metadata in the file is the attacker's to choose; only
            # the TPM's answer says which object this is, and binds the session salt to it.
            public, name, qualified = esys.read_public(handle)
            ok = _primary_cache.checked(
                public,
                bytes(name),
                bytes(qualified),
                recorded,
                storage_template(t, ecc=True),
                bytes(esys.tr_serialize(handle)),
                int(esys.tr_get_tpm_handle(handle)),
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.flush_object(esys, handle)
            raise
        if not ok:
            log.warning("the saved storage primary context is not the standard primary")
            self.flush_object(esys, handle)
            return None
        return Parent(OWNER_PRIMARY, handle, owned=True, from_context=True)

    def _create_primary(self, esys: Any) -> Parent:
        """The TCG key-file format's storage primary: ECC P-256, else RSA-2048 where the TPM
        refuses ECC (tried, not asked: asking costs a command on every TPM that has ECC)."""
        t = self.tss
        try:
            created = self._create_standard_primary(esys, ecc=True)
        except t.TSS2_Exception as exc:
            if not _errors.is_tpm_refusal(_errors.translate(exc, "", None)):
                raise self._primary_failed(exc) from exc
            log.debug("the TPM refuses the ECC storage primary (%s): RSA-2048", exc)
            try:
                created = self._create_standard_primary(esys, ecc=False)
            except t.TSS2_Exception as again:
                raise self._primary_failed(again) from again
        self.objects += 1
        return Parent(OWNER_PRIMARY, created, owned=True)

    def _create_standard_primary(self, esys: Any, *, ecc: bool) -> Any:
        t = self.tss
        template = storage_template(t, ecc=ecc)
        return self.with_room(
            lambda: esys.create_primary(t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER),
            1,
        )[0]

    def _primary_failed(self, exc: Exception) -> TPMError:
        """The error for a primary the TPM would not create: an owner password says so."""
        error = _errors.translate(exc, "create the storage primary", self.tcti.string)
        if isinstance(error, TPMAuthFailure):
            return _errors.owner_password(error)
        return error

    def _save_primary(self, esys: Any, primary: Parent) -> None:
        """Save the primary's context for the next opens of this boot (best effort); only the
        ECC primary, the one a saved context is accepted for."""
        t = self.tss
        try:
            public = tr_public(t, esys, primary.tr)
            if public.publicArea.type != t.TPM2_ALG.ECC:
                return
            name = bytes(esys.tr_get_name(primary.tr))
            context = esys.context_save(primary.tr)
        except (t.TSS2_Exception, ValueError) as exc:
            log.debug("storage primary context not saved: %s", exc)
            return
        _primary_cache.write(self.tcti.inner, name, bytes(context.marshal()))

    def persistent(self, esys: Any, handle: int) -> tuple[Any, Any]:
        """(ESYS handle, TPM2B_PUBLIC) of a persistent object (an EK), read once per connection
        with one TPM2_ReadPublic (for which the TPM loads it into a free object slot)."""
        found = self._persistent.get(handle)
        if found is None:
            tr = self.with_room(lambda: esys.tr_from_tpmpublic(handle), 1)
            try:
                public = tr_public(self.tss, esys, tr)
            except ValueError:  # metadata in another layout: ask the TPM again
                public = esys.read_public(tr)[0]
            found = self._persistent[handle] = (tr, public)
        return found

    # -- objects ------------------------------------------------------------------------------

    def room(self, need: int) -> None:
        """Flush kept keys (least recently used, none in use) until ``need`` more objects fit
        within ``OBJECTS`` (the lock held)."""
        while self.objects + need > self.OBJECTS and self.keys.evict_one():
            pass

    def with_room(self, call: Callable[[], T], need: int) -> T:
        """Run a command that needs ``need`` object slots (TPM2_Load, TPM2_Create, ...).

        Room is made within the budget first. A TPM still full (another process's objects, or
        a resource manager's quota) flushes the keys this process's caches hold and retries at
        once; without a resource manager (swtpm) another process may hold the slots for a
        moment: then it is retried for up to ``object_memory_wait`` seconds before
        ``TPMObjectMemory``.
        """
        self.room(need)
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

    def load(self, esys: Any, private: Any, public: Any, auth: bytes | None, parent: int) -> Any:
        """TPM2_Load under the parent the key file names; the caller flushes what this returns
        (``flush_object``) or hands it to the key cache."""
        found = self.parent(esys, parent)
        need = 1 + found.command_slots
        try:
            handle = self.with_room(lambda: esys.load(found.tr, private, public), need)
        except self.tss.TSS2_Exception as exc:
            if self._refuse_srk_auth(esys, found, exc):
                raise self._no_srk() from exc
            raise
        self.objects += 1
        if auth:
            esys.tr_set_auth(handle, auth)
        return handle

    def create(
        self, esys: Any, sensitive: Any, template: Any, session: Any, *, loaded: bool
    ) -> tuple[Any, Any, Any]:
        """TPM2_Create under the default parent: (handle or None, private, public). With
        ``loaded`` it is TPM2_CreateLoaded, which needs the same room as TPM2_Create (the TPM
        makes the object in a slot either way) and spares the first use its TPM2_Load; the
        caller keeps or flushes the handle. Without (a sealed object, used only from its blob)
        the object is not kept."""
        try:
            return self._create(esys, sensitive, template, session, loaded=loaded)
        except self.tss.TSS2_Exception as exc:
            srk = self._parents.get(SRK_HANDLE)
            if (
                srk is None
                or self._default != SRK_HANDLE
                or not self._refuse_srk_auth(esys, srk, exc)
            ):
                raise
        # As for any other object there that is not the standard SRK: the owner primary, with
        # a new session salted to it where the refused one was used.
        if session != self.tss.ESYS_TR.PASSWORD:
            session = self.session(esys, encrypt=True)
        return self._create(esys, sensitive, template, session, loaded=loaded)

    def _refuse_srk_auth(self, esys: Any, found: Parent, exc: Exception) -> bool:
        """After TPM2_Load or TPM2_Create under ``found`` failed its authorization: where that
        is the persistent SRK, whose standard authValue is empty (and whose noDA made the
        failure cost no try), it is not the standard SRK: refused for this connection as a
        mismatched shape is (``refused_srk``), the default parent reset. True where refused."""
        t = self.tss
        code = _errors.tpm_code(int(getattr(exc, "rc", 0)))
        if found.handle != SRK_HANDLE or code not in (
            int(t.TPM2_RC.AUTH_FAIL),
            int(t.TPM2_RC.BAD_AUTH),
        ):
            return False
        why = "its authorization value is not the standard SRK's empty one (a command failed it)"
        log.warning("0x%08x is not the standard SRK (%s): not used", SRK_HANDLE, why)
        self.refused_srk = why
        self._refused_srk_names.add(bytes(esys.tr_get_name(found.tr)))
        del self._parents[SRK_HANDLE]
        self._names.pop(SRK_HANDLE, None)
        esys.tr_close(found.tr)
        if self._default == SRK_HANDLE:
            self._default = None
        self.drop_session(esys)
        return True

    def _create(
        self, esys: Any, sensitive: Any, template: Any, session: Any, *, loaded: bool
    ) -> tuple[Any, Any, Any]:
        t = self.tss
        found = self.default_parent(esys)
        need = 1 + found.command_slots
        if loaded and self._create_loaded:
            shape = t.TPM2B_TEMPLATE(bytes(template.publicArea.marshal()))
            try:
                handle, private, public = self.with_room(
                    lambda: esys.create_loaded(found.tr, sensitive, shape, session1=session),
                    need,
                )
            except t.TSS2_Exception as exc:
                if _errors.tpm_code(int(exc.rc)) != int(t.TPM2_RC.COMMAND_CODE):
                    raise
                self._create_loaded = False  # a TPM before TPM2_CreateLoaded (rev. 1.38)
            else:
                self.objects += 1
                return handle, private, public
        private, public, _, _, _ = self.with_room(
            lambda: esys.create(found.tr, sensitive, template, session1=session), need
        )
        return None, private, public

    def keep(self, esys: Any, key: object, handle: Any) -> None:
        """Hand a loaded key to the key cache; flushed where the cache does not keep it."""
        if not self.keys.put(key, handle):
            self.flush_object(esys, handle)

    def retrying(self, operation: Callable[[], T]) -> T:
        """Run an operation; once more where it failed as a TPM restart or reset makes it fail
        and the connection recovered (``recover``), or where the TPM refused it because a
        handle of this connection now names another object (``reused``)."""
        generation = self.generation
        try:
            return operation()
        except TPMError as exc:
            if not (self.recover(exc, generation) or self.reused(exc, generation)):
                raise
        return operation()

    def reused(self, error: TPMError, generation: int) -> bool:
        """After a TPM refusal: True where a transient handle this connection holds (a storage
        primary, a kept or pinned key) now names another object, and the connection forgot them
        all, flushing none (they are another program's now).

        A TPM reset with no resource manager (swtpm, /dev/tpm0) gives the handle numbers of this
        connection to whatever is loaded next, so a command can reach another program's object
        and fail for reasons of its own instead of TPM_RC_HANDLE. One TPM2_ReadPublic per handle,
        on failures only. True too where another thread recovered since ``generation``."""
        if self._closed or self.lost is not None or not _errors.is_tpm_refusal(error):
            return False
        with self.lock:
            if generation != self.generation:
                return True
            if self._esys is None or not self.handles_reused(self._esys):
                return False
            self.forget_reused()
        return True

    def handles_reused(self, esys: Any) -> bool:
        """True where a transient handle this connection holds is gone or names another object
        than the one it loaded (the TPM's ReadPublic against the name it had; lock held)."""
        return not all(self._names_object(esys, h, name) for h, name in self._held())

    def forget_reused(self) -> None:
        """Forget every handle, flushing none: the TPM was reset and gave their numbers to other
        objects (the lock held). The next use reloads under a storage key reopened by name."""
        log.info("a handle of this connection names another object (a TPM reset): reloading")
        self._forget(flush=False)

    def flush_object(self, esys: Any, handle: Any) -> None:
        """TPM2_FlushContext of a transient object this connection loaded (the lock held)."""
        esys.flush_context(handle)
        self.objects -= 1

    def flush_cache(self) -> None:
        """Flush every key the cache keeps loaded (they load again on their next use)."""
        with self.lock:
            if self._esys is None:
                self.keys.forget()
            elif len(self.keys):
                with self.command("flush cached keys"):
                    self.keys.flush_all()

    def _flush_cached(self, handle: Any) -> None:
        """The key cache's flush: TPM2_FlushContext in the caller's command (lock held)."""
        self.flush_object(self._esys, handle)

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

    # -- sessions -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def hmac_session(self, esys: Any, *, encrypt: bool, command: bool = True) -> Iterator[Any]:
        """``session()`` for the block, dropped (``drop_session``) where the block fails."""
        session = self.session(esys, encrypt=encrypt, command=command)
        try:
            yield session
        except BaseException:
            self.drop_session(esys)
            raise

    @property
    def has_session(self) -> bool:
        """True while the continued salted session is started."""
        return self._session is not None

    def session(self, esys: Any, *, encrypt: bool, command: bool = True) -> Any:
        """The salted HMAC session (AES-128-CFB): it authorizes with a PIN the TPM never sees in
        the clear, and with ``encrypt`` also encrypts the first response parameter and
        (``command``) the first command parameter, so secrets never cross the TPM interface
        bare. Each encrypted parameter costs tpm2-tss client CPU.

        One session is started on first use and continued across calls (the caller holds the
        lock); a command that fails with it drops it (``drop_session``), and it is flushed on
        close.
        """
        t = self.tss
        session = self._session
        if session is None:
            session = self.start_session(esys, t.TPM2_SE.HMAC)
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

    def start_session(self, esys: Any, session_type: Any) -> Any:
        """A new session (HMAC or policy) salted to a storage key this connection opened, whose
        public area is the TPM's own answer (``parent``): the session key is known to this
        process and the TPM alone. AES-128-CFB, SHA-256."""
        t = self.tss
        key = self._parents.get(self._default or 0) or next(iter(self._parents.values()), None)
        if key is None:
            key = self.default_parent(esys)
        return self.with_room(
            lambda: esys.start_auth_session(
                tpm_key=key.tr,
                bind=t.ESYS_TR.NONE,
                session_type=session_type,
                symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"),
                auth_hash=t.TPM2_ALG.SHA256,
            ),
            key.command_slots,
        )

    def drop_session(self, esys: Any) -> None:
        """Flush the salted session after a command that failed with it (best effort): the
        next one starts a new session."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                esys.flush_context(session)

    # -- failures and restarts ----------------------------------------------------------------

    def _failed(self, exc: Exception, what: str) -> TPMError:
        """The library's error for a failed command (the lock held); drops the connection
        after an I/O failure (for good where the watchdog ended the command)."""
        error = _errors.translate(exc, what, self.tcti.string)
        if isinstance(error, TPMAuthFailure | TPMLockout):
            error = _errors.with_lockout_state(error, what, self._esys)
        watchdog = self._watchdog
        if watchdog is not None and watchdog.fired:
            error = _errors.timed_out(what, self.tcti.string, watchdog.timeout, error.rc)
            self._closed = True  # a TPM that stopped answering: fail fast from now on
        if isinstance(error, TPMUnreachable):
            self._drop()
        return error

    def recover(self, error: TPMError, generation: int | None = None) -> bool:
        """After an error that a TPM restart or reset gives (``_errors.is_stale``): reconnect
        where the connection was dropped, else forget the handles the TPM no longer holds
        (flushing, best effort, those it may still hold); True where the operation may run once
        more, reopening the storage key it needs (whose name says whether the keys survived).
        ``generation``, the connection's when the operation started: where another thread has
        recovered since, the handles are already new."""
        if self._closed or self.lost is not None or not _errors.is_stale(error):
            return False
        if _errors.tpm_code(error.rc) == int(self.tss.TPM2_RC.INITIALIZE):
            return False  # no TPM2_Startup yet: the platform's to send, not ours
        with self.lock:
            if self._esys is None:
                try:
                    self._reconnect("reconnect")
                except TPMError:
                    return False
            elif generation is None or generation == self.generation:
                self._forget(flush=True)
        log.info("the TPM lost this connection's handles (%s): reloading", error)
        return True

    def _reconnect(self, what: str) -> Any:
        """A new ESAPI context on the TCTI after the old one broke (the lock held)."""
        if self._closed:
            raise TPMUnreachable(f"{what}: the TPM provider is closed")
        try:
            esys = self.tss.ESAPI(self.tcti.string)
        except self.tss.TSS2_Exception as exc:
            raise _errors.open_failed(exc, self.tcti.string) from exc
        self._esys = esys
        self.generation += 1
        return esys

    def _drop(self) -> None:
        """After an I/O failure the ESAPI context is unusable: close it and forget every handle
        (the next command reconnects)."""
        esys, self._esys = self._esys, None
        self._forget(flush=False)
        if esys is not None:
            with contextlib.suppress(Exception):
                esys.close()

    def _forget(self, *, flush: bool) -> None:
        """Forget every handle of this generation. Where asked, first flush those that still
        name the objects this connection loaded (a TPM reset may have given the others to
        another program), and the session only where none was given away; errors ignored."""
        esys = self._esys
        if flush and esys is not None:
            given_away = False
            for handle, name in self._held():
                if self._names_object(esys, handle, name):
                    with contextlib.suppress(Exception):
                        esys.flush_context(handle)
                else:
                    given_away = True
            if self._session is not None and not given_away:
                with contextlib.suppress(Exception):
                    esys.flush_context(self._session)
        self.keys.forget()
        for obj in list(self.pinned):
            obj._handle = None
        self._parents.clear()
        self._persistent.clear()
        self._session = None
        self.objects = 0
        self.generation += 1

    def _held(self) -> list[tuple[Any, bytes | None]]:
        """(handle, name it had) of every transient object this connection holds."""
        held = [(p.tr, self._names.get(p.handle)) for p in self._parents.values() if p.owned]
        held += [(h, k.tpm_name) for k, h in self.keys.items()]
        held += [(o._handle, o.tpm_name) for o in list(self.pinned) if o._handle is not None]
        return held

    def _names_object(self, esys: Any, handle: Any, name: bytes | None) -> bool:
        """True where the TPM's ReadPublic of a handle answers the name it had."""
        try:
            return bytes(esys.read_public(handle)[1]) == name
        except self.tss.TSS2_Exception:
            return False

    def close(self) -> None:
        """Flush what this connection loaded (where no resource manager drops it) and close the
        ESAPI context."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.stop()
        with self.lock:
            esys = self._esys
            if esys is None:
                return
            try:
                if not self.resource_manager:
                    self.keys.close()
                    for obj in list(self.pinned):
                        if obj._handle is not None:
                            esys.flush_context(obj._handle)
                            obj._handle = None
                    if self._session is not None:
                        session, self._session = self._session, None
                        esys.flush_context(session)
                    for found in self._parents.values():
                        if found.owned:
                            esys.flush_context(found.tr)
            except self.tss.TSS2_Exception as exc:
                log.warning("could not release the TPM objects of this connection: %s", exc)
            finally:
                self._esys = None
                self.keys.forget()
                self._parents.clear()
                self._persistent.clear()
                self._session = None
                self.objects = 0
                esys.close()
