"""The TPM provider: keys created and used inside a TPM 2.0 through tpm2-pytss (ESAPI)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ...errors import (
    DecryptionError,
    EntraKeysError,
    ForeignKey,
    HardwareUnavailable,
    ImportedKey,
    KeyFileCorrupt,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    UnsupportedAlgorithm,
    WrongPassphrase,
)
from ...provider import (
    Certification,
    EndorsementKey,
    EntraPrivateKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
    Quote,
    SessionKey,
    check_creatable,
    check_nonce,
    oaep_padding,
)
from ...tcg import model
from .._checks import check_passphrase, check_pin, pcr_list
from . import _primary_cache
from ._connection import SRK_HANDLE, Connection, import_pytss
from ._keys import TPMECKey, TPMRSAKey, TPMSessionKey, make_key, wipe
from ._templates import key_template, session_key_template, srk_mismatch, storage_template
from .tcti import NO_TPM, Tcti, default_tcti

__all__ = [
    "SRK_HANDLE",
    "TPMECKey",
    "TPMProvider",
    "TPMRSAKey",
    "TPMSessionKey",
    "forget_saved_primary",
    "persist_storage_key",
]


def _named(tcti: str | Tcti | None) -> Tcti | None:
    """The TCTI named (parsed once), else the default one (``default_tcti``)."""
    if isinstance(tcti, Tcti):
        return tcti
    return Tcti.parse(tcti) if tcti else default_tcti()


def forget_saved_primary(tcti: str | Tcti | None = None) -> bool:
    """Remove this user's saved context of the storage primary for ``tcti`` (the default TPM
    when None; a ``pcap:`` wrapper names the TPM under it), so the next open without a
    persistent SRK creates the primary again; True where there was one. Needs no TPM."""
    named = _named(tcti)
    if named is None:
        return False
    try:
        return _primary_cache.forget(named.inner)
    except OSError as exc:
        raise EntraKeysError(
            f"cannot remove the saved primary context in {_primary_cache.directory()}: "
            f"{exc.strerror}"
        ) from exc


def persist_storage_key(
    tcti: str | Tcti | None = None, owner_auth: bytes | None = None, *, timeout: float = 30.0
) -> bool:
    """Persist the standard SRK (RSA-2048, TCG Provisioning Guidance) at ``SRK_HANDLE`` with
    the owner authorization; False where one is there already (idempotent). An object there
    that is not the standard SRK (``_templates.srk_mismatch``) is a TPMError saying so.

    Opens its own connection, which opens no storage key (an owner password would refuse the
    provider's own primary). A TPM whose owner hierarchy has a password refuses without it:
    ``TPMAuthFailure`` saying so. Providers make new keys under the persistent SRK from their
    next open on; keys made before, under the owner hierarchy's standard primary (parent
    0x40000001 in their files), keep loading under that primary. The caller's saved primary
    context is removed, so its next open finds the SRK.
    """
    owner_auth = check_pin(owner_auth, what="the owner authorization")
    tss = import_pytss()
    named = _named(tcti)
    if named is None:
        raise HardwareUnavailable(NO_TPM)
    conn = Connection(tss, named, timeout=timeout)
    try:
        created = _persist_srk(conn, owner_auth)
    finally:
        conn.close()
    with contextlib.suppress(OSError):
        _primary_cache.forget(named.inner)
    return created


def _persist_srk(conn: Connection, owner_auth: bytes | None) -> bool:
    t = conn.tss
    with conn.command("read the persistent SRK") as esys:
        _, data = esys.get_capability(t.TPM2_CAP.HANDLES, SRK_HANDLE, 1)
        if [int(h) for h in data.data.handles][:1] == [SRK_HANDLE]:
            tr = conn.with_room(lambda: esys.tr_from_tpmpublic(SRK_HANDLE), 1)
            try:
                why = srk_mismatch(t, esys.read_public(tr)[0])
            finally:
                esys.tr_close(tr)
            if why is None:
                return False
            raise TPMError(
                f"0x{SRK_HANDLE:08x} holds an object that is not the standard SRK ({why}): it "
                "is not used, and tpm init leaves it; if it is not yours, remove it as the owner "
                f"(tpm2_evictcontrol -C o -c 0x{SRK_HANDLE:08x}) and run tpm init again"
            )
    template = storage_template(t, ecc=False)
    try:
        with (
            conn.command("persist the SRK") as esys,
            _owner_session(conn, esys, owner_auth) as auth,
        ):
            esys.tr_set_auth(t.ESYS_TR.OWNER, owner_auth or b"")
            try:
                primary = conn.with_room(
                    lambda: esys.create_primary(
                        t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.OWNER, session1=auth
                    ),
                    1,
                )[0]
                try:
                    persistent = esys.evict_control(
                        t.ESYS_TR.OWNER, primary, SRK_HANDLE, session1=auth
                    )
                    esys.tr_close(persistent)
                finally:
                    esys.flush_context(primary)
            finally:
                esys.tr_set_auth(t.ESYS_TR.OWNER, b"")
    except TPMAuthFailure as exc:
        given = "the one given is wrong" if owner_auth else "none was given"
        raise TPMAuthFailure(
            f"the TPM's owner hierarchy has a password and {given}: pass it with "
            f"--owner-auth-file (API: owner_auth=) ({exc})",
            exc.rc,
            exc.tries_left,
        ) from exc
    return True


@contextlib.contextmanager
def _owner_session(conn: Connection, esys: Any, owner_auth: bytes | None) -> Iterator[Any]:
    """The session that carries the owner authorization: with a password, an HMAC session
    salted to a NULL-hierarchy primary (which needs no authorization; the TPM returns its
    public area), so neither the password nor an HMAC an offline guess could test crosses the
    TPM interface; without one, the plain password session (nothing to hide)."""
    t = conn.tss
    if not owner_auth:
        yield t.ESYS_TR.PASSWORD
        return
    salt_key = _null_primary(conn, esys)
    try:
        session = esys.start_auth_session(
            tpm_key=salt_key,
            bind=t.ESYS_TR.NONE,
            session_type=t.TPM2_SE.HMAC,
            symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"),
            auth_hash=t.TPM2_ALG.SHA256,
        )
    finally:
        esys.flush_context(salt_key)  # the session keeps its salt; the slot is needed
    try:
        esys.trsess_set_attributes(session, t.TPMA_SESSION.CONTINUESESSION)
        yield session
    finally:
        with contextlib.suppress(Exception):
            esys.flush_context(session)


def _null_primary(conn: Connection, esys: Any) -> Any:
    """The standard ECC storage primary of the NULL hierarchy (RSA-2048 where the TPM refuses
    ECC): a salt key that needs no authorization."""
    t = conn.tss
    try:
        return conn.with_room(
            lambda: esys.create_primary(
                t.TPM2B_SENSITIVE_CREATE(), storage_template(t, ecc=True), t.ESYS_TR.NULL
            ),
            1,
        )[0]
    except t.TSS2_Exception:
        return conn.with_room(
            lambda: esys.create_primary(
                t.TPM2B_SENSITIVE_CREATE(), storage_template(t, ecc=False), t.ESYS_TR.NULL
            ),
            1,
        )[0]


class TPMProvider(Provider):
    """Keys inside a TPM 2.0 reached through any TCTI (device, swtpm, mssim, tabrmd)."""

    kind: ClassVar[str] = "tpm"
    hardware_backed: ClassVar[bool] = True
    pem_labels: ClassVar[frozenset[str]] = model.PEM_LABELS["tpm"]

    #: Seconds a command may wait for a simulator's answer before it fails as unreachable.
    DEFAULT_TIMEOUT = 30.0

    def __init__(self, tcti: str | Tcti | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Open the TPM named by ``tcti`` (a TCTI string), else ``default_tcti()``."""
        tss = import_pytss()
        named = _named(tcti)
        if named is None:
            raise HardwareUnavailable(NO_TPM)
        #: The TCTI string of the TPM.
        self.tcti: str = named.string
        self._conn: Connection | None = None
        self._conn = Connection(tss, named, timeout=timeout)

    @property
    def connection(self) -> Connection:
        """The provider's ESAPI connection (its lock, storage key and sessions), for tools and
        tests that run their own ESAPI commands beside the provider's."""
        assert self._conn is not None  # set in __init__, or the provider does not exist
        return self._conn

    @property
    def OBJECT_MEMORY_WAIT(self) -> float:  # noqa: N802 - a setting, named as the class's were
        """Seconds a load waits for a free object slot held by another process."""
        return self.connection.object_memory_wait

    @OBJECT_MEMORY_WAIT.setter
    def OBJECT_MEMORY_WAIT(self, seconds: float) -> None:  # noqa: N802
        self.connection.object_memory_wait = seconds

    def _own(self, key: object) -> bool:
        """True for a key or session key of this provider's connection."""
        conn = getattr(key, "_conn", None)
        return conn is not None and conn is self._conn

    # -- Provider -----------------------------------------------------------------------------

    def create_key(
        self, key_type: KeyType, usage: KeyUsage, *, pin: bytes | None = None
    ) -> EntraPrivateKey:
        """Creates a key in the TPM (fixedTPM, fixedParent, sensitiveDataOrigin) under the
        storage key new objects go under: the persistent SRK where there is one.

        An attestation key (``KeyUsage.ATTEST``) is restricted, with the TPM's own signing
        scheme (RSASSA-SHA256 or ECDSA-SHA256), so it signs only what the TPM produced. A key
        with a ``pin`` counts wrong PINs toward dictionary-attack lockout; one without is noDA.

        An AK is enrolled (TPM2_ActivateCredential) as soon as it exists and a Windows Hello
        (PIN) key signs its first assertion in the same enrolment, so these stay loaded from
        TPM2_CreateLoaded; a device or transport key is stored first and used later, and a
        handle kept for it would mostly be flushed unused (TPM2_Create).
        """
        conn = self.connection
        check_creatable(key_type, usage)
        pin = check_pin(pin)
        template = key_template(conn.tss, key_type, usage, pin=bool(pin))
        loaded = bool(pin) or usage is KeyUsage.ATTEST
        what = f"create a {key_type.value} key"
        return conn.retrying(lambda: self._create(what, template, usage, pin, loaded))

    def _create(
        self, what: str, template: Any, usage: KeyUsage, pin: bytes | None, loaded: bool
    ) -> EntraPrivateKey:
        conn = self.connection
        t = conn.tss
        sensitive = t.TPM2B_SENSITIVE_CREATE()
        with conn.command(what) as esys:
            if pin:
                # The PIN is the first command parameter's secret: send it encrypted.
                sensitive.sensitive.userAuth = t.TPM2B_AUTH(pin)
                try:
                    with conn.hmac_session(esys, encrypt=True) as session:
                        handle, private, public = conn.create(
                            esys, sensitive, template, session, loaded=loaded
                        )
                finally:
                    wipe(sensitive.sensitive.userAuth)
            else:
                handle, private, public = conn.create(
                    esys, sensitive, template, t.ESYS_TR.PASSWORD, loaded=loaded
                )
            key = make_key(conn, private, public, usage, pin)
            if handle is not None:
                if pin:
                    esys.tr_set_auth(handle, pin)
                conn.keep(esys, key, handle)
        return key

    def key_to_pem(self, key: EntraPrivateKey, passphrase: bytes | None = None) -> bytes:
        """The TSS2 PRIVATE KEY PEM (TCG TPM 2.0 key file) of a key of this TPM."""
        if check_passphrase(passphrase):  # a str, 0 or False: InvalidData, as in software
            raise UnsupportedAlgorithm(
                "a TPM key file is bound to this TPM and needs no passphrase"
            )
        if not isinstance(key, TPMRSAKey | TPMECKey) or not self._own(key):
            raise UnsupportedAlgorithm("only keys of this TPM provider can be stored by it")
        return key._key_file()

    def key_from_pem(
        self,
        data: bytes,
        usage: KeyUsage,
        passphrase: bytes | None = None,
        *,
        pin: bytes | None = None,
        allow_imported: bool = False,
    ) -> EntraPrivateKey:
        """Reads a TSS2 PRIVATE KEY and checks, by loading it once, that this TPM can use it.

        A key made with a PIN needs it here (a PIN given is used even where the file says
        emptyAuth, which tpm2-tools 5.4 writes inverted); the TPM checks it at each use (a
        wrong one raises ``TPMAuthFailure`` with the tries left). A passphrase is ignored: the
        file is bound to the TPM, not to a passphrase. A key not made in this TPM (not
        fixedTPM, fixedParent and sensitiveDataOrigin: imported, or duplicable) is
        ``ImportedKey`` unless ``allow_imported``, and then says ``hardware_backed=False``.
        """
        del passphrase
        conn = self.connection
        t = conn.tss
        pin = check_pin(pin)
        blob = self._read_blob(data)
        if not blob.empty_auth and not pin:
            raise WrongPassphrase("the key has a PIN; give it to use the key")
        attrs = int(blob.public.publicArea.objectAttributes)
        want = int(
            t.TPMA_OBJECT.DECRYPT if usage is KeyUsage.DECRYPT else t.TPMA_OBJECT.SIGN_ENCRYPT
        )
        restricted = bool(attrs & int(t.TPMA_OBJECT.RESTRICTED))
        if not attrs & want or restricted is not (usage is KeyUsage.ATTEST):
            raise KeyFileCorrupt(f"the TPM key's attributes do not allow {usage.value}")
        try:
            # A PIN given wins over the file's emptyAuth: tpm2_encodeobject 5.4 writes it inverted.
            key = make_key(conn, blob.private, blob.public, usage, pin or None, int(blob.parent))
        except (EntraKeysError, ValueError) as exc:
            raise KeyFileCorrupt(f"the public area is not a key entra_keys makes ({exc})") from exc
        self._check_loads(key)
        # The attributes come from the file, which anyone may edit; they count only now that
        # TPM2_Load has accepted that public area. The TPM binds the private blob to the object's
        # name (the hash of the public area) by the blob's integrity HMAC, so a public area that
        # claims other attributes than the blob was made or imported with does not load
        # (ForeignKey above); and a TPM refuses fixedTPM/fixedParent on TPM2_Import.
        if not key.hardware_backed and not allow_imported:
            raise ImportedKey(
                f"the TPM key lacks {', '.join(key._missing)}: {key.hardware_reason}. A device, "
                "transport or attestation key must be made in the TPM; pass allow_imported=True "
                "to use this one anyway, as a key that is not hardware-backed"
            )
        return key

    def _read_blob(self, data: bytes) -> Any:
        """Parse a TSS2 PRIVATE KEY (the parent it names is checked when it loads)."""
        conn = self.connection
        try:
            return conn.tss.tsskey.TSSPrivKey.from_pem(data)
        except Exception as exc:  # the TSS key parser raises many types on bad input
            raise KeyFileCorrupt(f"not a readable TSS2 PRIVATE KEY ({exc})") from exc

    def _check_loads(self, key: TPMRSAKey | TPMECKey | TPMSessionKey) -> None:
        """Load once under the parent the key file names: a blob of another TPM or storage key
        fails here, typed. The loaded key stays in the key cache for its first use (a PIN key
        too, with its PIN set on the handle)."""
        conn = self.connection

        def load() -> None:
            with conn.command("load key") as esys:
                conn.keep(esys, key, key._load(esys))

        try:
            conn.retrying(load)
        except TPMError as exc:
            if isinstance(exc, TPMUnreachable | TPMObjectMemory | TPMLockout):
                raise
            raise ForeignKey(
                f"this TPM refuses the key blob: it was made by another TPM or under another "
                f"storage key, or its public area was altered ({exc})"
            ) from exc

    def import_session_key(
        self, transport_key: EntraPrivateKey, encrypted_key: bytes, *, oaep_hash: str = "sha1"
    ) -> SessionKey:
        """RSA-OAEP decrypt in the TPM (SHA-1, or SHA-256 for RSA-OAEP-256: the transport key's
        scheme is NULL, so TPM2_RSA_Decrypt takes either), then bind the 32 bytes as an HMAC
        key object.

        Both commands run in a salted session with parameter encryption, so the key crosses the
        TPM interface only encrypted; in this process it lives only between the two commands.
        """
        oaep = oaep_padding(oaep_hash)
        if not isinstance(transport_key, TPMRSAKey) or not self._own(transport_key):
            raise UnsupportedAlgorithm("the transport key must be an RSA key of this TPM provider")
        hash_alg = transport_key.rsa_decrypt_args(oaep)
        conn = self.connection
        t = conn.tss
        secret = transport_key._decrypt(encrypted_key, hash_alg)
        try:
            if secret.size != 32:
                raise DecryptionError(f"the session key is {secret.size} bytes, not 32")
            sensitive = t.TPM2B_SENSITIVE_CREATE(
                sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(bytes(secret)))
            )
            template = session_key_template(t)

            def bind() -> TPMSessionKey:
                with (
                    conn.command("bind the session key") as esys,
                    conn.hmac_session(esys, encrypt=True) as session,
                ):
                    handle, private, public = conn.create(
                        esys, sensitive, template, session, loaded=True
                    )
                    key = TPMSessionKey(conn, private, public)
                    if handle is not None:  # its first derivation needs no TPM2_Load
                        conn.keep(esys, key, handle)
                return key

            try:
                return conn.retrying(bind)
            finally:
                wipe(sensitive.sensitive.data)
        finally:
            wipe(secret)

    def session_key_to_pem(self, key: SessionKey, passphrase: bytes | None = None) -> bytes:
        """The session key object as a TSS2 PRIVATE KEY blob only this TPM can load."""
        if check_passphrase(passphrase):
            raise UnsupportedAlgorithm(
                "a TPM key file is bound to this TPM and needs no passphrase"
            )
        if not isinstance(key, TPMSessionKey) or not self._own(key):
            raise UnsupportedAlgorithm("only session keys of this TPM provider can be stored by it")
        return key._key_file()

    def session_key_from_pem(self, data: bytes, passphrase: bytes | None = None) -> SessionKey:
        """Reads a session key blob and checks, by loading it once, that this TPM can use it."""
        conn = self.connection
        blob = self._read_blob(data)
        if blob.public.publicArea.type != conn.tss.TPM2_ALG.KEYEDHASH:
            raise KeyFileCorrupt("the blob is not a keyed-hash (session key) object")
        key = TPMSessionKey(conn, blob.private, blob.public, int(blob.parent))
        self._check_loads(key)
        return key

    # -- attestation --------------------------------------------------------------------------

    def endorsement_keys(self, key_type: KeyType | None = None) -> list[EndorsementKey]:
        """The TPM's EKs (persistent where provisioned, else made from the TCG templates), each
        with its certificate from NV where one is there; with ``key_type``, only that one."""
        from . import _endorsement  # on first use: the sign path never loads it

        return _endorsement.endorsement_keys(self.connection, key_type)

    def activate_credential(
        self,
        ak: EntraPrivateKey,
        ek: EndorsementKey,
        credential_blob: bytes,
        encrypted_secret: bytes,
    ) -> bytes:
        """TPM2_ActivateCredential: recover a verifier's secret, which only a TPM holding both
        this AK and this EK can do (the EK is authorized by PolicySecret(endorsement))."""
        ak_key = self._attestation_key(ak)
        from . import _endorsement

        return _endorsement.activate_credential(
            self.connection, ak_key, ek, credential_blob, encrypted_secret
        )

    def quote(
        self,
        ak: EntraPrivateKey,
        pcrs: Sequence[int],
        nonce: bytes,
        bank: str = "sha256",
        *,
        event_log: bool | str | os.PathLike[str] = False,
    ) -> Quote:
        """TPM2_Quote over the PCRs with the caller's nonce, with the PCR values read in the
        same run; the quote is retried if a PCR changes between the read and the quote. With
        ``event_log`` the log is read after the quote, so it holds every quoted event (True:
        the kernel's, the log of /dev/tpm0's boot; a path: that file, e.g. a swtpm's)."""
        check_nonce(nonce)
        pcrs = pcr_list(pcrs)
        from . import _endorsement

        selection = _endorsement.pcr_selection(self.connection, pcrs, bank)
        ak_key = self._attestation_key(ak)
        quote = _endorsement.quote(self.connection, ak_key, selection, pcrs, nonce, bank)
        if event_log is False:
            return quote
        from ...tcg.eventlog import KERNEL_EVENT_LOG, read_event_log

        path = KERNEL_EVENT_LOG if event_log is True else event_log
        return dataclasses.replace(quote, event_log=read_event_log(path))

    def certify(self, key: EntraPrivateKey, ak: EntraPrivateKey, nonce: bytes) -> Certification:
        """TPM2_Certify: the AK signs that this key (by name) lives in this TPM."""
        check_nonce(nonce)
        ak_key = self._attestation_key(ak)
        if not isinstance(key, TPMRSAKey | TPMECKey) or not self._own(key):
            raise UnsupportedAlgorithm("only keys of this TPM provider can be certified by it")
        from . import _endorsement

        return _endorsement.certify(self.connection, key, ak_key, nonce)

    def _attestation_key(self, ak: EntraPrivateKey) -> TPMRSAKey | TPMECKey:
        if not isinstance(ak, TPMRSAKey | TPMECKey) or not self._own(ak):
            raise UnsupportedAlgorithm("the attestation key must be a key of this TPM provider")
        ak._require(KeyUsage.ATTEST)
        return ak

    # -- sealed secrets -----------------------------------------------------------------------

    def seal(
        self,
        data: bytes,
        *,
        pin: bytes | None = None,
        pcrs: Sequence[int] | None = None,
        name: str = "",
    ) -> bytes:
        """Seals the secret in a TPM data object under the storage key (``_sealing``): only
        this TPM unseals it, with the PIN (dictionary-attack protected) and PCRs given, and
        only as ``name``."""
        from . import _sealing  # on first use: the sign path never loads it

        return _sealing.seal(self.connection, data, pin=pin, pcrs=pcrs, name=name)

    def unseal(
        self,
        blob: bytes,
        *,
        pin: bytes | None = None,
        name: str = "",
        allow_unbound: bool = False,
    ) -> bytes:
        """Unseals a secret this TPM sealed as ``name``, over an encrypting session."""
        from . import _sealing

        return _sealing.unseal(
            self.connection, blob, pin=pin, name=name, allow_unbound=allow_unbound
        )

    def storage_key_name(self, handle: int) -> bytes:
        """The TPM name of the storage key ``handle`` names (opened as a key file's parent is:
        ForeignKey where this TPM does not offer it), for a key file to record and compare."""
        conn = self.connection

        def read() -> bytes:
            with conn.command("open the storage key") as esys:
                return bytes(esys.tr_get_name(conn.parent(esys, handle).tr))

        return conn.retrying(read)

    def info(self) -> ProviderInfo:
        """The TPM's manufacturer, vendor string, firmware and specification version."""
        conn = self.connection
        t = conn.tss

        def read() -> Any:
            with conn.command("read TPM properties") as esys:
                return esys.get_capability(t.TPM2_CAP.TPM_PROPERTIES, t.TPM2_PT.FIXED, 64)[1]

        data = conn.retrying(read)
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}

        def text(*keys: int) -> str:
            raw = b"".join(props.get(int(k), 0).to_bytes(4, "big") for k in keys)
            return raw.replace(b"\0", b"").decode("ascii", "replace").strip()

        vendor = t.TPM2_PT_VENDOR
        fw1 = props.get(int(t.TPM2_PT_FIRMWARE.VERSION_1), 0)
        fw2 = props.get(int(t.TPM2_PT_FIRMWARE.VERSION_2), 0)
        revision = props.get(int(t.TPM2_PT.REVISION), 0)
        family = text(t.TPM2_PT.FAMILY_INDICATOR)
        return ProviderInfo(
            kind=self.kind,
            hardware_backed=True,
            manufacturer=text(t.TPM2_PT.MANUFACTURER),
            vendor=text(vendor.STRING_1, vendor.STRING_2, vendor.STRING_3, vendor.STRING_4),
            firmware_version=f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
            spec_version=f"{family}, revision {revision // 100}.{revision % 100:02d}",
            tcti=self.tcti,
            storage_key=conn.describe_storage(),
        )

    def close(self) -> None:
        """Flushes the storage key this provider created and closes the TPM connection."""
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
