"""The TPM provider: keys created and used inside a TPM 2.0 through tpm2-pytss (ESAPI).

This is the only module that imports ``tpm2_pytss``, and only when a TPM provider is opened, so
the package works where libtss2 is absent. Every ESAPI call goes through ``TPMProvider._tpm``,
which serializes access (ESAPI is not thread-safe) and translates ``TSS2_Exception`` into the
library's errors, keeping the response code.

Object slots: a swtpm holds three transient objects and has no resource manager, so the provider
keeps only its storage key loaded. A key is loaded for one operation and flushed after it, unless
the caller holds ``with key.loaded():`` to keep it loaded for a run of operations.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer

from ..errors import (
    AttestationError,
    DecryptionError,
    EntraKeysError,
    ForeignKey,
    HardwareUnavailable,
    ImportedKey,
    InvalidData,
    KeyFileCorrupt,
    KeyNotExportable,
    PinRequired,
    TPMAuthFailure,
    TPMError,
    TPMLockout,
    TPMObjectMemory,
    TPMUnreachable,
    UnsupportedAlgorithm,
)
from ..provider import (
    Certification,
    EndorsementKey,
    EntraECKey,
    EntraPrivateKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    Provider,
    ProviderInfo,
    Quote,
    SessionKey,
    SignatureScheme,
    check_creatable,
    check_nonce,
)

__all__ = ["SRK_HANDLE", "TPMECKey", "TPMProvider", "TPMRSAKey", "default_tcti"]

log = logging.getLogger(__name__)

#: The kernel's resource-managed TPM device, used when no TCTI is named.
TPM_DEVICE = "/dev/tpmrm0"
#: Where a provisioned storage root key lives (TCG Provisioning Guidance).
SRK_HANDLE = 0x81000001
_RH_OWNER = 0x40000001

# Endorsement keys (TCG EK Credential Profile 2.0): attributes fixedTPM|fixedParent|
# sensitiveDataOrigin|adminWithPolicy|restricted|decrypt, and PolicySecret(TPM_RH_ENDORSEMENT).
_EK_ATTRIBUTES = 0x000300B2
_EK_POLICY = bytes.fromhex("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA")
_EK_PERSISTENT_FIRST, _EK_PERSISTENT_LAST = 0x81010000, 0x8101FFFF
_EK_CERT_NV_FIRST = 0x01C00002
# RSA and ECC low range, then the high range (RSA 2048/3072/4096, ECC P-256/P-384/P-521, ...).
_EK_CERT_NV_INDICES = frozenset({0x01C00002, 0x01C0000A, *range(0x01C00012, 0x01C00020, 2)})
_QUOTE_TRIES = 3
# TPM_PT_LOCKOUT_COUNTER, then MAX_AUTH_FAIL, LOCKOUT_INTERVAL, LOCKOUT_RECOVERY (Part 2, 6.13).
_PT_LOCKOUT_COUNTER = 0x20E

# Response codes (TPM 2.0 Part 2, 6.6), after format-one decoding.
_RC_AUTH_FAIL = 0x08E
_RC_BAD_AUTH = 0x0A2
_RC_INTEGRITY = 0x09F
_RC_OBJECT_MEMORY = 0x902
_RC_LOCKOUT = 0x921
# A format-zero warning (TPM_RC_WARN: resources, retry, yielded, canceled) is never about the
# command's parameters (Part 2, 6.6.3).
_RC_WARN_MASK, _RC_WARN = 0x880, 0x800
# TPM_ALG_IDs of the signatures _signature_parts reads from C (Part 2, 6.3).
_ALG_RSASSA, _ALG_RSAPSS, _ALG_ECDSA = 0x0014, 0x0016, 0x0018
# What makes a key "made in this TPM": (TPMA_OBJECT member, the spec's name). TPM2_Import refuses
# fixedTPM and fixedParent, and a TPM refuses them under a parent without them, so a key under the
# storage key with both was created in this TPM; sensitiveDataOrigin says the TPM made its secret.
_ORIGIN_ATTRIBUTES = (
    ("FIXEDTPM", "fixedTPM"),
    ("FIXEDPARENT", "fixedParent"),
    ("SENSITIVEDATAORIGIN", "sensitiveDataOrigin"),
)
_REASON_MADE_HERE = "made in this TPM (fixedTPM, fixedParent, sensitiveDataOrigin)"
_REASON_IMPORTED = "imported into the TPM (TPM2_Import): its private half was known outside the TPM"
_LAYER_TCTI = 0x0A0000
_LAYER_ESYS = 0x070000
# ESYS codes for an answer that stopped short or made no sense: the TPM went away mid-command.
_ESYS_RC_BROKEN_RESPONSE = {0x11, 0x13}  # MALFORMED_RESPONSE, INSUFFICIENT_RESPONSE
# TSS base codes that mean the TPM did not answer: NO_CONNECTION, TRY_AGAIN, IO_ERROR.
_BASE_RC_UNREACHABLE = {0x08, 0x09, 0x0A}


def default_tcti() -> str | None:
    """The TPM to use when none is named: ``TPM2TOOLS_TCTI``, ``TSS2_TCTI``, or /dev/tpmrm0."""
    for var in ("TPM2TOOLS_TCTI", "TSS2_TCTI"):
        value = os.environ.get(var)
        if value:
            return value
    if os.path.exists(TPM_DEVICE):
        return f"device:{TPM_DEVICE}"
    return None


def _import_pytss() -> Any:
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


def _translate(exc: Exception, what: str, tcti: str | None) -> TPMError:
    """Map a ``TSS2_Exception`` to the library's TPM errors, keeping its response code."""
    rc = int(getattr(exc, "rc", 0))
    error = int(getattr(exc, "error", rc))
    detail = f"{exc} (rc 0x{rc:x})"
    layer = rc & 0xFF0000
    if layer == _LAYER_TCTI or (layer and rc & 0xFFFF in _BASE_RC_UNREACHABLE):
        return TPMUnreachable(f"{what}: cannot reach the TPM at {tcti}: {detail}", rc)
    if layer == _LAYER_ESYS and rc & 0xFFFF in _ESYS_RC_BROKEN_RESPONSE:
        return TPMUnreachable(f"{what}: the TPM at {tcti} broke off its answer: {detail}", rc)
    if layer == 0:
        if error == _RC_OBJECT_MEMORY:
            return TPMObjectMemory(
                f"{what}: the TPM has no free object slot: keys are pinned with loaded() or "
                "another program left objects loaded (flush them with 'tpm2_flushcontext -t' "
                f"or restart the simulator) {detail}",
                rc,
            )
        if error == _RC_LOCKOUT:
            return TPMLockout(
                f"{what}: the TPM is in dictionary-attack lockout; it recovers after its "
                f"recovery interval, or clear it with the lockout authorization "
                f"('tpm2_dictionarylockout -c') {detail}",
                rc,
            )
        if error in (_RC_AUTH_FAIL, _RC_BAD_AUTH):
            return TPMAuthFailure(f"{what}: wrong authorization value {detail}", rc)
    return TPMError(f"{what} failed: {detail}", rc)


class _TPMObject:
    """A TPM object known by its blob (private, public): loaded for one use, or pinned."""

    _provider: TPMProvider
    _private: Any
    _public: Any
    _handle: Any
    _pins: int
    _auth: bytes | None

    def _init_object(
        self, provider: TPMProvider, private: Any, public: Any, auth: bytes | None = None
    ) -> None:
        self._provider = provider
        self._private = private
        self._public = public
        self._handle = None
        self._pins = 0
        self._auth = auth or None

    @property
    def has_pin(self) -> bool:
        """True when the TPM asks for an authorization value (PIN) to use this key."""
        return self._auth is not None

    @property
    def tpm_public(self) -> bytes:
        """The object's TPMT_PUBLIC, marshaled (what attestation certifies and names)."""
        return bytes(self._public.publicArea.marshal())

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        """Keep the object loaded in the TPM until the block ends (one object slot)."""
        provider = self._provider
        with provider._tpm("load key") as esys:
            if self._pins == 0:
                self._handle = provider._load(esys, self._private, self._public, self._auth)
            self._pins += 1
        try:
            yield
        except BaseException:
            self._unpin(quiet=True)  # keep the block's own error, not a failed flush's
            raise
        self._unpin(quiet=False)

    def _unpin(self, *, quiet: bool) -> None:
        provider = self._provider
        with provider._lock:
            self._pins -= 1
            if self._pins or self._handle is None:
                return
            handle, self._handle = self._handle, None
            if provider._esys is None:
                return  # the connection is gone, and the object with it
            try:
                with provider._tpm("flush key") as esys:
                    esys.flush_context(handle)
            except EntraKeysError:
                if not quiet:
                    raise

    @contextlib.contextmanager
    def _use(self, what: str, *, encrypted: bool = False) -> Iterator[tuple[Any, Any, Any]]:
        """(ESAPI context, handle, authorization session) for one use of this object.

        The object is loaded for this use unless pinned. It is authorized by the plain password
        session when it has no PIN; with a PIN, or when ``encrypted`` asks for parameter
        encryption, by a salted HMAC session, so that neither PIN nor secret crosses bare.
        """
        provider = self._provider
        with provider._tpm(what) as esys:
            handle = self._handle
            flush = handle is None
            if flush:
                handle = provider._load(esys, self._private, self._public, self._auth)
            try:
                if encrypted or self._auth is not None:
                    with provider._hmac_session(esys, encrypt=encrypted) as session:
                        yield esys, handle, session
                else:
                    yield esys, handle, provider._t.ESYS_TR.PASSWORD
            finally:
                if flush:
                    esys.flush_context(handle)


class _TPMKeyBase(_TPMObject):
    """What TPM RSA and EC keys share beyond the object: the public half, type and usage."""

    _pub: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    def __init__(
        self,
        provider: TPMProvider,
        private: Any,
        public: Any,
        usage: KeyUsage,
        auth: bytes | None = None,
    ) -> None:
        self._init_object(provider, private, public, auth)
        self._pub = _public_key(public)
        self.key_type = KeyType.of(self._pub)
        self.usage = usage
        # Read from the public area every load hands the TPM, so these are the attributes the
        # TPM enforces (key_from_pem checks them only after the TPM has accepted that area).
        self._missing = _missing_origin(provider._t, public)

    @property
    def hardware_backed(self) -> bool:
        """True when the key was made in this TPM and cannot leave it (fixedTPM, fixedParent,
        sensitiveDataOrigin); False for an imported or duplicable key."""
        return not self._missing

    @property
    def hardware_reason(self) -> str:
        """Why the key is or is not hardware-backed, from its TPM object attributes."""
        return _origin_reason(self._missing)

    def _sign(self, what: str, digest: bytes, scheme: Any) -> Any:
        """TPM2_Sign of a digest, returning the TPMT_SIGNATURE. A pinned key without a PIN
        takes one lock and no session context manager: the hot path of a signing run."""
        p = self._provider
        with p._tpm(what) as esys:
            if self._handle is not None and self._auth is None:
                return esys.sign(self._handle, p._digest(digest), scheme, p._null_ticket)
            with self._use(what) as (esys, handle, session):  # the provider's lock is an RLock
                return esys.sign(
                    handle, p._digest(digest), scheme, p._null_ticket, session1=session
                )

    def _refuse_export(self) -> KeyNotExportable:
        return KeyNotExportable(
            "the private half of a TPM key never leaves the TPM; store the key with "
            "KeyStore (a TSS2 PRIVATE KEY blob only this TPM can load) instead"
        )


class TPMRSAKey(_TPMKeyBase, EntraRSAKey):
    """An RSA key inside the TPM; a ``cryptography`` ``RSAPrivateKey`` that cannot be exported."""

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        """Signs the data in the TPM (PKCS#1 v1.5, or PSS with a digest-length salt)."""
        scheme, hash_alg, digest = self.rsa_sign_args(data, padding, algorithm)
        sig = self._sign("RSA sign", digest, self._provider._sig_scheme(scheme, hash_alg))
        return _signature_parts(self._provider._ffi, sig)[0]

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Decrypts an RSA-OAEP ciphertext in the TPM (SHA-1 or SHA-256, empty label)."""
        plain = self._decrypt(ciphertext, self.rsa_decrypt_args(padding))
        return bytes(plain)

    def _decrypt(self, ciphertext: bytes, hash_alg: hashes.HashAlgorithm) -> Any:
        """TPM2_RSA_Decrypt in a session that encrypts the plaintext on its way out of the TPM."""
        p = self._provider
        t = p._t
        scheme = t.TPMT_RSA_DECRYPT(scheme=t.TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = p._hash_alg(hash_alg)
        if len(ciphertext) != self.key_size // 8:
            raise DecryptionError("the ciphertext is not as long as the key's modulus")
        try:
            with self._use("RSA decrypt", encrypted=True) as (esys, handle, session):
                return esys.rsa_decrypt(
                    handle,
                    t.TPM2B_PUBLIC_KEY_RSA(ciphertext),
                    scheme,
                    t.TPM2B_DATA(),
                    session1=session,
                )
        except TPMError as exc:
            # Only the TPM's own refusal means a bad ciphertext; TSS and I/O errors stay what
            # they are (a TPM that went away mid-command is not a wrong ciphertext).
            if isinstance(exc, TPMUnreachable | TPMObjectMemory | TPMLockout | TPMAuthFailure):
                raise
            if exc.rc is None or exc.rc & 0xFF0000 or exc.rc & _RC_WARN_MASK == _RC_WARN:
                raise  # TSS and I/O errors, and TPM warnings (no session memory, retry, ...)
            raise DecryptionError("the ciphertext does not decrypt with this key") from exc

    @property
    def key_size(self) -> int:
        """The modulus size in bits."""
        return self._pub.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, read from the key's TPM public area."""
        assert isinstance(self._pub, rsa.RSAPublicKey)
        return self._pub

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        """Refused: a TPM key's private half cannot be read."""
        raise self._refuse_export()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """Refused: a TPM key's private half cannot be read."""
        raise self._refuse_export()

    def __copy__(self) -> TPMRSAKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TPMRSAKey:
        return self


class TPMECKey(_TPMKeyBase, EntraECKey):
    """An elliptic-curve key inside the TPM; a ``cryptography`` ``EllipticCurvePrivateKey``."""

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Signs the data with ECDSA in the TPM; the signature is DER, as from ``cryptography``."""
        hash_alg, digest = self.ecdsa_sign_args(data, signature_algorithm)
        p = self._provider
        sig = self._sign("ECDSA sign", digest, p._sig_scheme(SignatureScheme.ECDSA, hash_alg))
        r, s = _signature_parts(p._ffi, sig)
        return utils.encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))

    @property
    def curve(self) -> ec.EllipticCurve:
        """The curve."""
        assert isinstance(self._pub, ec.EllipticCurvePublicKey)
        return self._pub.curve

    @property
    def key_size(self) -> int:
        """The curve size in bits."""
        return self._pub.key_size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, read from the key's TPM public area."""
        assert isinstance(self._pub, ec.EllipticCurvePublicKey)
        return self._pub

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        """Refused: a TPM key's private half cannot be read."""
        raise self._refuse_export()

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """Refused: a TPM key's private half cannot be read."""
        raise self._refuse_export()

    def __copy__(self) -> TPMECKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TPMECKey:
        return self


class TPMSessionKey(_TPMObject, SessionKey):
    """The PRT session key as a keyed-hash (HMAC-SHA256) object under the storage key."""

    #: The largest input one TPM2_HMAC takes (TPM2B_MAX_BUFFER).
    MAX_INPUT = 1024

    def __init__(self, provider: TPMProvider, private: Any, public: Any) -> None:
        self._init_object(provider, private, public)
        # One input buffer per key, refilled under the provider's lock: a new TPM2B_MAX_BUFFER
        # per call costs a fifth of a swtpm TPM2_HMAC. The input (a KDF block) is not secret.
        self._hmac_buffer = provider._t.TPM2B_MAX_BUFFER()

    @property
    def hardware_backed(self) -> bool:
        """Always True: the key was created inside the TPM and cannot be read back."""
        return True

    def hmac_sha256(self, data: bytes) -> bytes:
        """One TPM2_HMAC over the data (at most 1024 bytes, which every KDF input fits)."""
        if len(data) > self.MAX_INPUT:
            raise UnsupportedAlgorithm(
                f"TPM2_HMAC takes at most {self.MAX_INPUT} bytes, not {len(data)}"
            )
        t = self._provider._t
        with self._use("session key HMAC") as (esys, handle, session):
            self._hmac_buffer.buffer = data
            digest = esys.hmac(handle, self._hmac_buffer, t.TPM2_ALG.SHA256, session1=session)
            return bytes(digest.buffer)


def _signature_parts(ffi: Any, signature: Any) -> tuple[bytes, bytes]:
    """The RSA signature (and b"") or ECDSA (r, s) of a TPMT_SIGNATURE, copied out of its C
    struct: the TSS's per-field wrappers and its marshaler cost 20-40 µs per signature."""
    cdata = signature._cdata
    alg = cdata.sigAlg
    if alg in (_ALG_RSASSA, _ALG_RSAPSS):
        part = cdata.signature.rsassa.sig
        return ffi.buffer(part.buffer, part.size)[:], b""
    if alg == _ALG_ECDSA:
        ecc = cdata.signature.ecdsa
        r, s = ecc.signatureR, ecc.signatureS
        return ffi.buffer(r.buffer, r.size)[:], ffi.buffer(s.buffer, s.size)[:]
    # Another scheme: its wire form (sigAlg u16, hashAlg u16, then TPM2B field(s)).
    wire = bytes(signature.marshal())
    first = int.from_bytes(wire[4:6], "big")
    part1 = wire[6 : 6 + first]
    rest = wire[6 + first :]
    if not rest:
        return part1, b""
    second = int.from_bytes(rest[:2], "big")
    return part1, rest[2 : 2 + second]


def _inner_tcti(tcti: str) -> str:
    """The TCTI under wrappers such as ``pcap:swtpm:path=...`` (the one that does the I/O)."""
    while tcti.startswith("pcap:"):
        tcti = tcti[len("pcap:") :]
    return tcti


class _Watchdog:
    """Ends a simulator command that waits longer than the timeout, by shutting down the
    socket it waits on: the TSS's one-call API waits without limit, and a stopped swtpm would
    hang the caller. (/dev/tpmrm0 is bounded by the kernel driver's own timeouts.)"""

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


def _check_same_ek(public: Any, ek: EndorsementKey) -> None:
    if bytes(public.publicArea.marshal()) != ek.public:
        raise AttestationError("this TPM's endorsement key is not the one given")


def _wipe(tpm2b: Any) -> None:
    """Overwrite a TPM2B buffer that held a secret (best effort: Python may keep copies)."""
    with contextlib.suppress(Exception):
        tpm2b.buffer[:] = bytes(len(tpm2b.buffer))


def _missing_origin(t: Any, public: Any) -> tuple[str, ...]:
    """The names of fixedTPM, fixedParent, sensitiveDataOrigin that a TPM2B_PUBLIC lacks."""
    attrs = int(public.publicArea.objectAttributes)
    return tuple(
        name
        for member, name in _ORIGIN_ATTRIBUTES
        if not attrs & int(getattr(t.TPMA_OBJECT, member))
    )


def _origin_reason(missing: tuple[str, ...]) -> str:
    """Why a key with these origin attributes missing is, or is not, hardware-backed."""
    if not missing:
        return _REASON_MADE_HERE
    if "sensitiveDataOrigin" in missing:
        return _REASON_IMPORTED
    # sensitiveDataOrigin proves nothing alone: TPM2_Import does not check it.
    return (
        f"duplicable (not {', '.join(missing)}): imported into the TPM or allowed to leave it, "
        "its private half may be known outside the TPM"
    )


def _public_key(public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The pyca public key of a TPM2B_PUBLIC."""
    key = serialization.load_der_public_key(bytes(public.to_der()))
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UnsupportedAlgorithm(f"TPM key of type {type(key).__name__}")
    return key


class TPMProvider(Provider):
    """Keys inside a TPM 2.0 reached through any TCTI (device, swtpm, mssim, tabrmd)."""

    kind: ClassVar[str] = "tpm"
    hardware_backed: ClassVar[bool] = True
    pem_labels: ClassVar[frozenset[str]] = frozenset({"TSS2 PRIVATE KEY"})
    #: The tpm2_pytss module (imported when a provider opens).
    _t: Any

    #: Seconds a command may wait for a simulator's answer before it fails as unreachable.
    DEFAULT_TIMEOUT = 30.0
    #: Seconds a load waits for a free object slot held by another process.
    OBJECT_MEMORY_WAIT = 2.0

    def __init__(self, tcti: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._t = _import_pytss()
        self.tcti = tcti or default_tcti()
        if self.tcti is None:
            raise HardwareUnavailable(
                "no TPM found: /dev/tpmrm0 does not exist and neither TPM2TOOLS_TCTI nor "
                "TSS2_TCTI is set"
            )
        self._lock = threading.RLock()
        self._esys: Any = None
        self._watchdog: _Watchdog | None = None
        try:
            self._esys = self._t.ESAPI(self.tcti)
        except self._t.TSS2_Exception as exc:
            raise TPMUnreachable(
                f"cannot open the TPM at {self.tcti}: {exc} (rc 0x{int(exc.rc):x})", int(exc.rc)
            ) from exc
        simulator = _inner_tcti(self.tcti).partition(":")[0] in ("swtpm", "mssim")
        self._watchdog = (
            _Watchdog(_inner_tcti(self.tcti), timeout) if simulator and timeout > 0 else None
        )
        self._sig_schemes: dict[tuple[SignatureScheme, str], Any] = {}
        # ESAPI takes C structs as they are: the hot path hands it those, not the TSS's Python
        # wrappers, whose unwrapping costs ~10 µs each per call.
        self._ffi = self._t.ffi
        self._digest_buffer = self._t.TPM2B_DIGEST()._cdata
        self._null_ticket = self._t.TPMT_TK_HASHCHECK(
            tag=self._t.TPM2_ST.HASHCHECK, hierarchy=self._t.TPM2_RH.NULL
        )._cdata
        self._srk: Any = None
        self._srk_parent = _RH_OWNER
        self._srk_owned = False
        try:
            self._open_storage_key()
        except BaseException:
            self.close()
            raise

    # -- the one boundary to ESAPI ------------------------------------------------------------

    @contextlib.contextmanager
    def _tpm(self, what: str) -> Iterator[Any]:
        """Serialize ESAPI use and translate its errors; the block gets the ESAPI context."""
        with self._lock:
            if self._esys is None:
                raise TPMUnreachable(f"{what}: the TPM provider is closed")
            watchdog = self._watchdog
            if watchdog is not None:
                watchdog.started = time.monotonic()
            try:
                yield self._esys
            except self._t.TSS2_Exception as exc:
                error = _translate(exc, what, self.tcti)
                if isinstance(error, TPMAuthFailure | TPMLockout):
                    error = self._with_lockout_state(error, what)
                if watchdog is not None and watchdog.fired:
                    error = TPMUnreachable(
                        f"{what}: the TPM at {self.tcti} did not answer within "
                        f"{watchdog.timeout:g} s",
                        error.rc,
                    )
                if isinstance(error, TPMUnreachable):
                    self._drop_connection()
                raise error from exc
            finally:
                if watchdog is not None:
                    watchdog.started = None

    def _open_storage_key(self) -> None:
        """Use the persistent SRK where provisioned, else create the standard primary once."""
        t = self._t
        with self._tpm("open the storage key") as esys:
            _, data = esys.get_capability(t.TPM2_CAP.HANDLES, SRK_HANDLE, 1)
            handles = list(data.data.handles)
            if handles and int(handles[0]) == SRK_HANDLE:
                self._srk = esys.tr_from_tpmpublic(SRK_HANDLE)
                self._srk_parent = SRK_HANDLE
                return
            # The TCG key-file format's storage primary: ECC P-256 where the TPM has ECC, else
            # RSA-2048 (asking for the one algorithm, not listing them all, keeps this fast).
            _, algs = esys.get_capability(t.TPM2_CAP.ALGS, t.TPM2_ALG.ECC, 1)
            has_ecc = any(int(a.alg) == t.TPM2_ALG.ECC for a in algs.data.algorithms)
            template = t.tsskey._parent_ecc_template if has_ecc else t.tsskey._parent_rsa_template
            self._srk, _, _, _, _ = esys.create_primary(
                t.TPM2B_SENSITIVE_CREATE(),
                t.TPM2B_PUBLIC(publicArea=template),
                t.ESYS_TR.OWNER,
            )
            self._srk_owned = True

    def _load(self, esys: Any, private: Any, public: Any, auth: bytes | None = None) -> Any:
        """TPM2_Load under the storage key; the caller flushes what this returns.

        Without a resource manager (swtpm), another process may hold the object slots for a
        moment: a full TPM is retried for up to ``OBJECT_MEMORY_WAIT`` seconds before
        ``TPMObjectMemory`` is raised.
        """
        deadline = time.monotonic() + self.OBJECT_MEMORY_WAIT
        pause = 0.005
        while True:
            try:
                handle = esys.load(self._srk, private, public)
                if auth:
                    esys.tr_set_auth(handle, auth)
                return handle
            except self._t.TSS2_Exception as exc:
                if int(exc.error) != _RC_OBJECT_MEMORY or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    @contextlib.contextmanager
    def _encrypted_session(self, esys: Any) -> Iterator[Any]:
        """A salted HMAC session (salt sealed to the storage key, AES-128-CFB) that encrypts the
        first command and response parameters, so secrets never cross the TPM interface bare."""
        with self._hmac_session(esys, encrypt=True) as session:
            yield session

    @contextlib.contextmanager
    def _hmac_session(self, esys: Any, *, encrypt: bool) -> Iterator[Any]:
        """A salted HMAC session: it authorizes with a PIN the TPM never sees in the clear, and
        with ``encrypt`` also encrypts the first command and response parameters."""
        t = self._t
        session = esys.start_auth_session(
            tpm_key=self._srk,
            bind=t.ESYS_TR.NONE,
            session_type=t.TPM2_SE.HMAC,
            symmetric=t.TPMT_SYM_DEF.parse("aes128cfb"),
            auth_hash=t.TPM2_ALG.SHA256,
        )
        try:
            attributes = t.TPMA_SESSION.CONTINUESESSION
            if encrypt:
                attributes |= t.TPMA_SESSION.DECRYPT | t.TPMA_SESSION.ENCRYPT
            esys.trsess_set_attributes(session, attributes)
            yield session
        finally:
            esys.flush_context(session)

    def _hmac_template(self) -> Any:
        """A keyed-hash HMAC-SHA256 object with caller-given key bytes, bound to this TPM."""
        t = self._t
        attrs = (
            t.TPMA_OBJECT.FIXEDTPM
            | t.TPMA_OBJECT.FIXEDPARENT
            | t.TPMA_OBJECT.USERWITHAUTH
            | t.TPMA_OBJECT.NODA
            | t.TPMA_OBJECT.SIGN_ENCRYPT
        )
        public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
        public.objectAttributes = attrs
        public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.HMAC
        public.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = t.TPM2_ALG.SHA256
        return t.TPM2B_PUBLIC(publicArea=public)

    def _digest(self, digest: bytes) -> Any:
        """The provider's one TPM2B_DIGEST, refilled (callers hold the lock): building a new
        one per signature costs a tenth of a swtpm ECDSA signature. A digest is not secret."""
        buffer = self._digest_buffer
        buffer.size = len(digest)
        self._ffi.memmove(buffer.buffer, digest, len(digest))
        return buffer

    def _hash_alg(self, hash_alg: hashes.HashAlgorithm) -> Any:
        return getattr(self._t.TPM2_ALG, hash_alg.name.upper())

    def _sig_scheme(self, scheme: SignatureScheme, hash_alg: hashes.HashAlgorithm) -> Any:
        """The TPMT_SIG_SCHEME for a scheme and hash, built once (signing is the hot path)."""
        cached = self._sig_schemes.get((scheme, hash_alg.name))
        if cached is None:
            t = self._t
            alg = {
                SignatureScheme.RSASSA: t.TPM2_ALG.RSASSA,
                SignatureScheme.RSAPSS: t.TPM2_ALG.RSAPSS,
                SignatureScheme.ECDSA: t.TPM2_ALG.ECDSA,
            }[scheme]
            built = t.TPMT_SIG_SCHEME(scheme=alg)
            built.details.any.hashAlg = self._hash_alg(hash_alg)
            cached = self._sig_schemes[(scheme, hash_alg.name)] = built._cdata
        return cached

    # -- Provider -----------------------------------------------------------------------------

    def create_key(
        self, key_type: KeyType, usage: KeyUsage, *, pin: bytes | None = None
    ) -> EntraPrivateKey:
        """Creates a key in the TPM (fixedTPM, fixedParent, sensitiveDataOrigin) under the SRK.

        An attestation key (``KeyUsage.ATTEST``) is restricted, with the TPM's own signing
        scheme (RSASSA-SHA256 or ECDSA-SHA256), so it signs only what the TPM produced. A key
        with a ``pin`` counts wrong PINs toward dictionary-attack lockout; one without is noDA.
        """
        t = self._t
        check_creatable(key_type, usage)
        attrs = (
            t.TPMA_OBJECT.FIXEDTPM
            | t.TPMA_OBJECT.FIXEDPARENT
            | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
            | t.TPMA_OBJECT.USERWITHAUTH
        )
        if not pin:
            attrs |= t.TPMA_OBJECT.NODA
        if usage is KeyUsage.DECRYPT:
            attrs |= t.TPMA_OBJECT.DECRYPT
        else:
            attrs |= t.TPMA_OBJECT.SIGN_ENCRYPT
        if usage is KeyUsage.ATTEST:
            attrs |= t.TPMA_OBJECT.RESTRICTED
            scheme = "rsassa-sha256" if key_type.is_rsa else "ecdsa-sha256"
        else:
            scheme = "null"
        template = t.TPM2B_PUBLIC.parse(
            f"{key_type.value}:{scheme}", nameAlg=t.TPM2_ALG.SHA256, objectAttributes=attrs
        )
        # A signing or decryption key is not a storage parent: no symmetric algorithm.
        template.publicArea.parameters.asymDetail.symmetric.algorithm = t.TPM2_ALG.NULL
        sensitive = t.TPM2B_SENSITIVE_CREATE()
        with self._tpm(f"create a {key_type.value} key") as esys:
            if pin:
                # The PIN is the first command parameter's secret: send it encrypted.
                sensitive.sensitive.userAuth = t.TPM2B_AUTH(pin)
                with self._encrypted_session(esys) as session:
                    private, public, _, _, _ = esys.create(
                        self._srk, sensitive, template, session1=session
                    )
                _wipe(sensitive.sensitive.userAuth)
            else:
                private, public, _, _, _ = esys.create(self._srk, sensitive, template)
        return self._key(private, public, usage, pin)

    def _key(
        self, private: Any, public: Any, usage: KeyUsage, auth: bytes | None = None
    ) -> TPMRSAKey | TPMECKey:
        if public.publicArea.type == self._t.TPM2_ALG.RSA:
            return TPMRSAKey(self, private, public, usage, auth)
        return TPMECKey(self, private, public, usage, auth)

    def key_to_pem(self, key: EntraPrivateKey, passphrase: bytes | None = None) -> bytes:
        """The TSS2 PRIVATE KEY PEM (TCG TPM 2.0 key file) of a key of this TPM."""
        if passphrase:
            raise UnsupportedAlgorithm(
                "a TPM key file is bound to this TPM and needs no passphrase"
            )
        if not isinstance(key, TPMRSAKey | TPMECKey) or key._provider is not self:
            raise UnsupportedAlgorithm("only keys of this TPM provider can be stored by it")
        blob = self._t.tsskey.TSSPrivKey(
            key._private, key._public, empty_auth=key._auth is None, parent=self._srk_parent
        )
        return bytes(blob.to_pem())

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

        A key made with a PIN needs it here; the TPM checks it at each use (a wrong one raises
        ``TPMAuthFailure`` with the tries left). A passphrase is ignored: the file is bound to
        the TPM, not to a passphrase. A key not made in this TPM (not fixedTPM, fixedParent and
        sensitiveDataOrigin: imported, or duplicable) is ``ImportedKey`` unless
        ``allow_imported``, and then says ``hardware_backed=False``.
        """
        del passphrase
        blob = self._read_blob(data)
        if not blob.empty_auth and not pin:
            raise PinRequired("the key has a PIN; give it to use the key")
        attrs = int(blob.public.publicArea.objectAttributes)
        want = int(
            self._t.TPMA_OBJECT.DECRYPT
            if usage is KeyUsage.DECRYPT
            else self._t.TPMA_OBJECT.SIGN_ENCRYPT
        )
        restricted = bool(attrs & int(self._t.TPMA_OBJECT.RESTRICTED))
        if not attrs & want or restricted is not (usage is KeyUsage.ATTEST):
            raise KeyFileCorrupt(f"the TPM key's attributes do not allow {usage.value}")
        try:
            key: TPMRSAKey | TPMECKey = self._key(
                blob.private, blob.public, usage, None if blob.empty_auth else pin
            )
        except (EntraKeysError, ValueError) as exc:
            raise KeyFileCorrupt(f"the public area is not a key entra_keys makes ({exc})") from exc
        self._check_loads(key)
        # The attributes come from the file, which anyone may edit; they count only now that
        # TPM2_Load has accepted that public area. The TPM binds the private blob to the object's
        # name (the hash of the public area) by the blob's integrity HMAC, so a public area that
        # claims other attributes than the blob was made or imported with does not load
        # (ForeignKey above); and a TPM refuses fixedTPM/fixedParent on TPM2_Import.
        if key._missing and not allow_imported:
            raise ImportedKey(
                f"the TPM key lacks {', '.join(key._missing)}: {key.hardware_reason}. A device, "
                "transport or attestation key must be made in the TPM; pass allow_imported=True "
                "to use this one anyway, as a key that is not hardware-backed"
            )
        return key

    def _read_blob(self, data: bytes) -> Any:
        """Parse a TSS2 PRIVATE KEY and check it hangs under this provider's storage key."""
        try:
            blob = self._t.tsskey.TSSPrivKey.from_pem(data)
        except Exception as exc:  # the TSS key parser raises many types on bad input
            raise KeyFileCorrupt(f"not a readable TSS2 PRIVATE KEY ({exc})") from exc
        if int(blob.parent) != self._srk_parent:
            raise ForeignKey(
                f"the key was made under parent 0x{int(blob.parent):08x}, this TPM's storage "
                f"key is 0x{self._srk_parent:08x}"
            )
        return blob

    def _check_loads(self, obj: _TPMObject) -> None:
        """Load and flush once: a blob of another TPM or storage key fails here, typed."""
        try:
            with self._tpm("load key") as esys:
                esys.flush_context(self._load(esys, obj._private, obj._public))
        except TPMError as exc:
            if isinstance(exc, TPMUnreachable | TPMObjectMemory | TPMLockout):
                raise
            raise ForeignKey(
                f"this TPM refuses the key blob: it was made by another TPM or under another "
                f"storage key, or its public area was altered ({exc})"
            ) from exc

    def import_session_key(
        self, transport_key: EntraPrivateKey, encrypted_key: bytes
    ) -> SessionKey:
        """RSA-OAEP (SHA-1) decrypt in the TPM, then bind the 32 bytes as an HMAC key object.

        Both commands run in a salted session with parameter encryption, so the key crosses the
        TPM interface only encrypted; in this process it lives only between the two commands.
        """
        if not isinstance(transport_key, TPMRSAKey) or transport_key._provider is not self:
            raise UnsupportedAlgorithm("the transport key must be an RSA key of this TPM provider")
        sha1 = hashes.SHA1()  # noqa: S303 - RSA-OAEP-SHA1 is what Entra encrypts with
        transport_key.rsa_decrypt_args(padding.OAEP(padding.MGF1(sha1), sha1, None))
        t = self._t
        secret = transport_key._decrypt(encrypted_key, sha1)
        try:
            if secret.size != 32:
                raise DecryptionError(f"the session key is {secret.size} bytes, not 32")
            sensitive = t.TPM2B_SENSITIVE_CREATE(
                sensitive=t.TPMS_SENSITIVE_CREATE(data=t.TPM2B_SENSITIVE_DATA(bytes(secret)))
            )
            with self._tpm("bind the session key") as esys, self._encrypted_session(esys) as s:
                private, public, _, _, _ = esys.create(
                    self._srk, sensitive, self._hmac_template(), session1=s
                )
            _wipe(sensitive.sensitive.data)
        finally:
            _wipe(secret)
        return TPMSessionKey(self, private, public)

    def session_key_to_pem(self, key: SessionKey, passphrase: bytes | None = None) -> bytes:
        """The session key object as a TSS2 PRIVATE KEY blob only this TPM can load."""
        if passphrase:
            raise UnsupportedAlgorithm(
                "a TPM key file is bound to this TPM and needs no passphrase"
            )
        if not isinstance(key, TPMSessionKey) or key._provider is not self:
            raise UnsupportedAlgorithm("only session keys of this TPM provider can be stored by it")
        blob = self._t.tsskey.TSSPrivKey(
            key._private, key._public, empty_auth=True, parent=self._srk_parent
        )
        return bytes(blob.to_pem())

    def session_key_from_pem(self, data: bytes, passphrase: bytes | None = None) -> SessionKey:
        """Reads a session key blob and checks, by loading it once, that this TPM can use it."""
        blob = self._read_blob(data)
        area = blob.public.publicArea
        if area.type != self._t.TPM2_ALG.KEYEDHASH:
            raise KeyFileCorrupt("the blob is not a keyed-hash (session key) object")
        key = TPMSessionKey(self, blob.private, blob.public)
        self._check_loads(key)
        return key

    # -- attestation --------------------------------------------------------------------------

    def endorsement_keys(self) -> list[EndorsementKey]:
        """The TPM's EKs (persistent where provisioned, else made from the TCG templates), each
        with its certificate from NV where one is there."""
        certs = self._ek_certificates()
        found: list[EndorsementKey] = []
        with self._tpm("read the endorsement keys") as esys:
            for handle in self._persistent_handles(esys, _EK_PERSISTENT_FIRST, _EK_PERSISTENT_LAST):
                tr = esys.tr_from_tpmpublic(handle)
                try:
                    public, _, _ = esys.read_public(tr)
                finally:
                    esys.tr_close(tr)
                area = public.publicArea
                if int(area.objectAttributes) & _EK_ATTRIBUTES != _EK_ATTRIBUTES:
                    continue  # another kind of persistent key (an AK, a device key)
                found.append(self._ek(area, handle, certs))
            kinds = {ek.key_type.is_rsa for ek in found}
            for key_type in (KeyType.RSA2048, KeyType.ECC256):
                if key_type.is_rsa not in kinds:
                    with self._transient_ek(esys, key_type) as (_, public):
                        found.append(self._ek(public.publicArea, None, certs))
        return found

    def _ek(self, area: Any, handle: int | None, certs: dict[int, bytes]) -> EndorsementKey:
        from cryptography import x509  # costly to import; only attestation needs it

        public = _public_key(self._t.TPM2B_PUBLIC(publicArea=area))
        key_type = KeyType.of(public)
        index, cert = None, None
        for nv_index, der in certs.items():
            try:
                cert_key = x509.load_der_x509_certificate(der).public_key()
            except ValueError:
                continue
            if cert_key == public:
                index, cert = nv_index, der
                break
        return EndorsementKey(
            key_type=key_type,
            public=bytes(area.marshal()),
            certificate=cert,
            nv_index=index,
            handle=handle,
            hardware_backed=True,
        )

    def _persistent_handles(self, esys: Any, first: int, last: int) -> list[int]:
        _, data = esys.get_capability(self._t.TPM2_CAP.HANDLES, first, 64)
        return [int(h) for h in data.data.handles if first <= int(h) <= last]

    def _ek_certificates(self) -> dict[int, bytes]:
        """The EK certificates in NV (low and high range), by index; absent ones skipped."""
        t = self._t
        out: dict[int, bytes] = {}
        with self._tpm("read the EK certificates") as esys:
            _, data = esys.get_capability(t.TPM2_CAP.HANDLES, _EK_CERT_NV_FIRST, 64)
            indices = [int(h) for h in data.data.handles if int(h) in _EK_CERT_NV_INDICES]
            for index in indices:
                out[index] = self._nv_read(esys, index)
        return out

    def _nv_read(self, esys: Any, index: int) -> bytes:
        tr = esys.tr_from_tpmpublic(index)
        try:
            nv_public, _ = esys.nv_read_public(tr)
            size = int(nv_public.nvPublic.dataSize)
            chunk = self._nv_buffer_max(esys)
            data = b"".join(
                bytes(esys.nv_read(tr, min(chunk, size - offset), offset))
                for offset in range(0, size, chunk)
            )
        finally:
            esys.tr_close(tr)
        return data

    def _nv_buffer_max(self, esys: Any) -> int:
        t = self._t
        _, data = esys.get_capability(t.TPM2_CAP.TPM_PROPERTIES, t.TPM2_PT_NV.BUFFER_MAX, 1)
        props = list(data.data.tpmProperties)
        return int(props[0].value) if props else 512

    @contextlib.contextmanager
    def _transient_ek(self, esys: Any, key_type: KeyType) -> Iterator[tuple[Any, Any]]:
        """The EK made from its TCG template in the endorsement hierarchy (flushed after)."""
        t = self._t
        if key_type.is_rsa:
            template = t.TPM2B_PUBLIC.parse(
                "rsa2048:aes128cfb", objectAttributes=_EK_ATTRIBUTES, authPolicy=_EK_POLICY
            )
            template.publicArea.unique.rsa = b"\0" * 256
        else:
            template = t.TPM2B_PUBLIC.parse(
                "ecc256:aes128cfb", objectAttributes=_EK_ATTRIBUTES, authPolicy=_EK_POLICY
            )
            template.publicArea.unique.ecc.x = b"\0" * 32
            template.publicArea.unique.ecc.y = b"\0" * 32
        handle, public, _, _, _ = esys.create_primary(
            t.TPM2B_SENSITIVE_CREATE(), template, t.ESYS_TR.ENDORSEMENT
        )
        try:
            yield handle, public
        finally:
            esys.flush_context(handle)

    @contextlib.contextmanager
    def _ek_handle(self, esys: Any, ek: EndorsementKey) -> Iterator[Any]:
        """A handle on this TPM's copy of the EK, refusing an EK this TPM does not hold."""
        if ek.handle is not None:
            tr = esys.tr_from_tpmpublic(ek.handle)
            try:
                public, _, _ = esys.read_public(tr)
                _check_same_ek(public, ek)
                yield tr
            finally:
                esys.tr_close(tr)
            return
        with self._transient_ek(esys, ek.key_type) as (handle, public):
            _check_same_ek(public, ek)
            yield handle

    @contextlib.contextmanager
    def _ek_auth(self, esys: Any, ek: EndorsementKey) -> Iterator[Any]:
        """The EK's authorization: its empty password where userWithAuth is set (high-range
        EKs), else a policy session satisfying PolicySecret(TPM_RH_ENDORSEMENT)."""
        t = self._t
        area, _ = t.TPMT_PUBLIC.unmarshal(ek.public)
        if int(area.objectAttributes) & int(t.TPMA_OBJECT.USERWITHAUTH):
            yield t.ESYS_TR.PASSWORD
            return
        session = esys.start_auth_session(
            tpm_key=t.ESYS_TR.NONE,
            bind=t.ESYS_TR.NONE,
            session_type=t.TPM2_SE.POLICY,
            symmetric=t.TPMT_SYM_DEF(algorithm=t.TPM2_ALG.NULL),
            auth_hash=area.nameAlg,
        )
        try:
            esys.policy_secret(t.ESYS_TR.ENDORSEMENT, session)
            yield session
        finally:
            esys.flush_context(session)

    def activate_credential(
        self,
        ak: EntraPrivateKey,
        ek: EndorsementKey,
        credential_blob: bytes,
        encrypted_secret: bytes,
    ) -> bytes:
        """TPM2_ActivateCredential: recover a verifier's secret, which only a TPM holding both
        this AK and this EK can do (the EK is authorized by PolicySecret(endorsement))."""
        t = self._t
        ak_obj = self._attestation_key(ak)
        try:
            blob, _ = t.TPM2B_ID_OBJECT.unmarshal(credential_blob)
            secret, _ = t.TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
        except Exception as exc:  # the unmarshalers raise several types on short input
            raise InvalidData(f"not a TPM2B_ID_OBJECT / TPM2B_ENCRYPTED_SECRET ({exc})") from exc
        with (
            ak_obj._use("activate the credential") as (esys, ak_handle, ak_session),
            self._ek_handle(esys, ek) as ek_handle,
        ):
            try:
                with self._ek_auth(esys, ek) as ek_session:
                    cert_info = esys.activate_credential(
                        ak_handle,
                        ek_handle,
                        blob,
                        secret,
                        session1=ak_session,
                        session2=ek_session,
                    )
            except self._t.TSS2_Exception as exc:
                raise AttestationError(
                    "the TPM refused the credential: it was not made for this EK and this AK "
                    f"({exc})"
                ) from exc
        return bytes(cert_info)

    def quote(
        self,
        ak: EntraPrivateKey,
        pcrs: Sequence[int],
        nonce: bytes,
        bank: str = "sha256",
    ) -> Quote:
        """TPM2_Quote over the PCRs with the caller's nonce, with the PCR values read in the
        same run; the quote is retried if a PCR changes between the read and the quote."""
        check_nonce(nonce)
        selection = self._pcr_selection(pcrs, bank)
        ak_obj = self._attestation_key(ak)
        t = self._t
        with ak_obj._use("quote") as (esys, ak_handle, ak_session):
            for _ in range(_QUOTE_TRIES):
                before, values = self._pcr_values(esys, bank, pcrs)
                attest, signature = esys.quote(
                    ak_handle, selection, t.TPM2B_DATA(nonce), session1=ak_session
                )
                after, _ = self._pcr_values(esys, bank, pcrs[:1])
                if before == after:
                    return Quote(
                        attest=bytes(attest),
                        signature=bytes(signature.marshal()),
                        pcr_bank=bank,
                        pcr_values=values,
                        nonce=bytes(nonce),
                        # An imported AK's private half is known outside: so is its word.
                        hardware_backed=ak_obj.hardware_backed,
                    )
        raise AttestationError(
            f"the PCRs kept changing while they were quoted ({_QUOTE_TRIES} tries)"
        )

    def _pcr_selection(self, pcrs: Sequence[int], bank: str) -> Any:
        if not pcrs or any(not 0 <= p <= 23 for p in pcrs) or len(set(pcrs)) != len(pcrs):
            raise InvalidData(f"PCR indices must be distinct and 0..23, not {list(pcrs)}")
        if bank not in ("sha1", "sha256", "sha384", "sha512"):
            raise UnsupportedAlgorithm(f"PCR bank {bank!r}")
        return self._t.TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, sorted(pcrs)))}")

    def _pcr_values(
        self, esys: Any, bank: str, pcrs: Sequence[int]
    ) -> tuple[int, dict[int, bytes]]:
        """The PCR update counter and values (TPM2_PCR_Read gives at most 8 per call)."""
        t = self._t
        wanted = sorted(pcrs)
        values: dict[int, bytes] = {}
        counter = None
        for start in range(0, len(wanted), 8):
            part = wanted[start : start + 8]
            spec = f"{bank}:{','.join(map(str, part))}"
            update, _, digests = esys.pcr_read(t.TPML_PCR_SELECTION.parse(spec))
            if counter is None:
                counter = int(update)
            elif counter != int(update):
                counter = -1  # changed mid-read: the caller's comparison fails and retries
            values.update(zip(part, (bytes(d) for d in digests), strict=True))
        return counter if counter is not None else -1, values

    def certify(self, key: EntraPrivateKey, ak: EntraPrivateKey, nonce: bytes) -> Certification:
        """TPM2_Certify: the AK signs that this key (by name) lives in this TPM."""
        check_nonce(nonce)
        ak_obj = self._attestation_key(ak)
        if not isinstance(key, TPMRSAKey | TPMECKey) or key._provider is not self:
            raise UnsupportedAlgorithm("only keys of this TPM provider can be certified by it")
        t = self._t
        with (
            key._use("certify") as (esys, key_handle, key_session),
            ak_obj._use("certify") as (_, ak_handle, ak_session),
        ):
            attest, signature = esys.certify(
                key_handle,
                ak_handle,
                t.TPM2B_DATA(nonce),
                t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL),
                session1=key_session,
                session2=ak_session,
            )
        return Certification(
            attest=bytes(attest),
            signature=bytes(signature.marshal()),
            key_public=key.tpm_public,
            nonce=bytes(nonce),
            # An imported key (or AK) is certified as what it is, never as hardware; a verifier
            # refuses it anyway (not sensitiveDataOrigin, or the AK not trusted).
            hardware_backed=key.hardware_backed and ak_obj.hardware_backed,
        )

    def _attestation_key(self, ak: EntraPrivateKey) -> TPMRSAKey | TPMECKey:
        if not isinstance(ak, TPMRSAKey | TPMECKey) or ak._provider is not self:
            raise UnsupportedAlgorithm("the attestation key must be a key of this TPM provider")
        ak._require(KeyUsage.ATTEST)
        return ak

    def info(self) -> ProviderInfo:
        """The TPM's manufacturer, vendor string, firmware and specification version."""
        t = self._t
        with self._tpm("read TPM properties") as esys:
            _, data = esys.get_capability(t.TPM2_CAP.TPM_PROPERTIES, t.TPM2_PT.FIXED, 64)
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}

        def text(*keys: int) -> str:
            raw = b"".join(props.get(k, 0).to_bytes(4, "big") for k in keys)
            return raw.replace(b"\0", b"").decode("ascii", "replace").strip()

        fixed = int(t.TPM2_PT.FIXED)
        fw1, fw2 = props.get(fixed + 11, 0), props.get(fixed + 12, 0)
        revision = props.get(fixed + 2, 0)
        return ProviderInfo(
            kind=self.kind,
            hardware_backed=True,
            manufacturer=text(fixed + 5),
            vendor=text(fixed + 6, fixed + 7, fixed + 8, fixed + 9),
            firmware_version=f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
            spec_version=f"{text(fixed)}, revision {revision // 100}.{revision % 100:02d}",
            tcti=self.tcti,
            storage_key=f"0x{self._srk_parent:08x}"
            + (" (persistent)" if not self._srk_owned else " (primary, owner hierarchy)"),
        )

    def transient_handles(self) -> list[int]:
        """The transient objects loaded in the TPM now (the storage key, and any pinned keys)."""
        t = self._t
        with self._tpm("list transient objects") as esys:
            _, data = esys.get_capability(t.TPM2_CAP.HANDLES, t.TPM2_HC.TRANSIENT_FIRST, 64)
        return [int(h) for h in data.data.handles]

    def _with_lockout_state(self, error: TPMError, what: str) -> TPMError:
        """Add the dictionary-attack state to an authorization error: tries left, or when the
        TPM lets one more try in and how to clear the lockout."""
        t = self._t
        try:
            _, data = self._esys.get_capability(t.TPM2_CAP.TPM_PROPERTIES, _PT_LOCKOUT_COUNTER, 4)
        except t.TSS2_Exception:
            return error
        props = {int(p.property): int(p.value) for p in data.data.tpmProperties}
        failures = props.get(_PT_LOCKOUT_COUNTER, 0)
        max_tries = props.get(_PT_LOCKOUT_COUNTER + 1, 0)
        interval = props.get(_PT_LOCKOUT_COUNTER + 2, 0)
        if isinstance(error, TPMLockout):
            return TPMLockout(
                f"{what}: the TPM is in dictionary-attack lockout after {max_tries} wrong "
                f"authorizations; it forgives one every {interval} s, or clear the lockout with "
                "the lockout authorization ('tpm2_dictionarylockout -c')",
                error.rc,
                retry_after=interval,
            )
        left = max(max_tries - failures, 0)
        return TPMAuthFailure(
            f"{what}: wrong PIN; {left} tries left before the TPM locks out", error.rc, left
        )

    def _drop_connection(self) -> None:
        """After an I/O failure the ESAPI context is unusable: close it so that every later
        call fails fast as unreachable (open a new provider once the TPM is back)."""
        esys, self._esys = self._esys, None
        self._srk = None
        if esys is not None:
            with contextlib.suppress(Exception):
                esys.close()

    def close(self) -> None:
        """Flushes the storage key this provider created and closes the TPM connection."""
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None:
            watchdog.stop()
        with self._lock:
            esys, self._esys = self._esys, None
            if esys is None:
                return
            try:
                if self._srk is not None:
                    if self._srk_owned:
                        esys.flush_context(self._srk)
                    else:
                        esys.tr_close(self._srk)
            except self._t.TSS2_Exception as exc:
                log.warning("could not release the storage key: %s", exc)
            finally:
                self._srk = None
                esys.close()
