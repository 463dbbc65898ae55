"""The TPM's keys: RSA and EC keys that are ``cryptography`` private keys, and the session key.

A key is known by its blob (TPM2B_PRIVATE, TPM2B_PUBLIC), the parent its key file names and its
connection. A key is loaded on first use under that parent and the connection's key cache keeps
it loaded while the connection's object budget allows (a swtpm holds three transient objects and
has no resource manager), flushing the least recently used key to make room. ``with
key.loaded():`` pins a key outside the cache for a run. An operation that fails as a TPM restart
makes it fail runs once more after the connection recovered (``Connection.retrying``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.utils import Buffer

from ...errors import (
    DecryptionError,
    EntraKeysError,
    KeysUnusable,
    KeyUsageError,
    TPMError,
    UnsupportedAlgorithm,
)
from ...provider import (
    EntraECKey,
    EntraRSAKey,
    KeyType,
    KeyUsage,
    SessionKey,
    SignatureScheme,
)
from ...tcg import model
from ...tcg.signature import TPMTSignature
from ...tcg.wire import TPMA_OBJECT  # the constants, not the parsers (cold start)
from . import _errors
from ._connection import Connection

__all__ = [
    "TPMECKey",
    "TPMRSAKey",
    "TPMSessionKey",
    "make_key",
    "public_key_of",
    "wipe",
]

# The spec's names of the attributes that make a key "made in this TPM" (tcg.model).
_SPEC_NAMES = {
    int(TPMA_OBJECT.FIXEDTPM): "fixedTPM",
    int(TPMA_OBJECT.FIXEDPARENT): "fixedParent",
    int(TPMA_OBJECT.SENSITIVEDATAORIGIN): "sensitiveDataOrigin",
}
_REASON_MADE_HERE = "made in this TPM (fixedTPM, fixedParent, sensitiveDataOrigin)"
_REASON_IMPORTED = "imported into the TPM (TPM2_Import): its private half was known outside the TPM"


def make_key(
    conn: Connection,
    private: Any,
    public: Any,
    usage: KeyUsage,
    auth: bytes | None = None,
    parent: int | None = None,
) -> TPMRSAKey | TPMECKey:
    """The RSA or EC key class for a blob, by its public area's type; ``parent`` is the one its
    key file names (the connection's default parent for a key made now)."""
    if public.publicArea.type == conn.tss.TPM2_ALG.RSA:
        return TPMRSAKey(conn, private, public, usage, auth, parent)
    return TPMECKey(conn, private, public, usage, auth, parent)


def public_key_of(public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The pyca public key of a TPM2B_PUBLIC."""
    key = serialization.load_der_public_key(bytes(public.to_der()))
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise UnsupportedAlgorithm(f"TPM key of type {type(key).__name__}")
    return key


def wipe(tpm2b: Any) -> None:
    """Overwrite a TPM2B buffer that held a secret (best effort: Python may keep copies)."""
    with contextlib.suppress(Exception):
        tpm2b.buffer[:] = bytes(len(tpm2b.buffer))


def _missing_origin(public: Any, usage: KeyUsage) -> tuple[str, ...]:
    """The spec's names of the "made in this TPM" attributes a TPM2B_PUBLIC lacks."""
    attrs = int(public.publicArea.objectAttributes)
    wanted = int(model.origin_attributes(usage))
    return tuple(name for bit, name in _SPEC_NAMES.items() if wanted & bit and not attrs & bit)


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


def _signature_parts(marshaled: bytes) -> tuple[bytes, bytes]:
    """The RSA signature (and b"") or ECDSA's r and s of a marshaled TPMT_SIGNATURE, read by
    the one TPMT_SIGNATURE reader (tpm2-pytss's attribute access costs five times as much)."""
    signature = TPMTSignature.parse(marshaled)
    if signature.is_rsa:
        return signature.signature, b""
    return signature.signature_r, signature.signature_s


class _TPMObject:
    """A TPM object known by its blob (private, public): loaded for one use, or pinned."""

    _conn: Connection
    _private: Any
    _public: Any
    _parent: int
    _handle: Any
    _handle_generation: int
    _pins: int
    _auth: bytes | None

    def _init_object(
        self,
        conn: Connection,
        private: Any,
        public: Any,
        auth: bytes | None = None,
        parent: int | None = None,
    ) -> None:
        self._conn = conn
        self._private = private
        self._public = public
        #: The parent its key file names: it loads under that one (the default one when new).
        self._parent = conn.storage_parent if parent is None else parent
        self._handle = None
        self._handle_generation = -1
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

    @property
    def tpm_name(self) -> bytes:
        """The object's name (nameAlg || H(TPMT_PUBLIC)): what the TPM's ReadPublic
        answers for its handle."""
        return bytes(self._public.get_name())

    def _key_file(self) -> bytes:
        """The object's TSS2 PRIVATE KEY PEM (TCG TPM 2.0 key file) under its parent."""
        conn = self._conn
        blob = conn.tss.tsskey.TSSPrivKey(
            self._private, self._public, empty_auth=self._auth is None, parent=self._parent
        )
        return bytes(blob.to_pem())

    def _load(self, esys: Any) -> Any:
        """TPM2_Load under the object's parent, with its PIN set on the handle (lock held)."""
        return self._conn.load(esys, self._private, self._public, self._auth, self._parent)

    @contextlib.contextmanager
    def loaded(self) -> Iterator[None]:
        """Keep the object loaded in the TPM until the block ends (one object slot)."""
        conn = self._conn

        def pin() -> None:
            with conn.command("load key") as esys:
                if self._pins == 0:
                    handle = conn.keys.take(self)
                    if handle is None:
                        handle = self._load(esys)
                    self._handle = handle
                    self._handle_generation = conn.generation
                    conn.pinned.add(self)
                self._pins += 1

        conn.retrying(pin)
        try:
            yield
        except BaseException:
            self._unpin(quiet=True)  # keep the block's own error, not a failed flush's
            raise
        self._unpin(quiet=False)

    def _unpin(self, *, quiet: bool) -> None:
        """End one pin; the last one hands the handle back to the cache, or flushes it."""
        conn = self._conn
        with conn.lock:
            self._pins -= 1
            if self._pins:
                return
            conn.pinned.discard(self)
            handle, self._handle = self._handle, None
            if handle is None or conn.closed or self._handle_generation != conn.generation:
                return  # the connection lost it with its other handles
            try:
                with conn.command("keep key loaded") as esys:
                    conn.keep(esys, self, handle)
            except EntraKeysError:
                if not quiet:
                    raise

    def _handle_now(self, esys: Any) -> tuple[Any, bool]:
        """The object's handle: pinned, kept by the cache, or loaded now into the cache; True
        with it where the cache has no slot and the caller must flush it after this use."""
        conn = self._conn
        if conn.lost is not None:
            raise KeysUnusable(conn.lost)
        if self._pins:
            if self._handle is None or self._handle_generation != conn.generation:
                self._handle = self._load(esys)  # the connection lost the pinned handle
                self._handle_generation = conn.generation
                conn.pinned.add(self)
            return self._handle, False
        handle = conn.keys.get(self)
        if handle is not None:
            return handle, False
        handle = self._load(esys)
        return handle, not conn.keys.put(self, handle)

    def _use(self, what: str, *, encrypted: bool = False, command: bool = True) -> _Use:
        """(ESAPI context, handle, authorization session) for one use of this object.

        The object is pinned, kept by the cache, or loaded now; the cache does not flush it for
        another key while the block runs. It is authorized by the plain password session when
        it has no PIN; with a PIN, or when ``encrypted`` asks for parameter encryption (of the
        response, and of the command unless ``command`` is False), by the connection's salted
        HMAC session, so that neither PIN nor secret crosses bare.
        """
        return _Use(self, what, encrypted, command)


class _Use:
    """One ``_TPMObject._use`` block. A class, not a generator: it runs on every signature."""

    __slots__ = (
        "_command",
        "_encrypted",
        "_esys",
        "_flush",
        "_handle",
        "_in_use",
        "_obj",
        "_param",
        "_session",
    )

    def __init__(self, obj: _TPMObject, what: str, encrypted: bool, command: bool) -> None:
        self._obj = obj
        self._command = obj._conn.command(what)
        self._encrypted = encrypted
        self._param = command
        self._session: Any = None
        self._flush = False

    def __enter__(self) -> tuple[Any, Any, Any]:
        obj = self._obj
        conn = obj._conn
        esys = self._esys = self._command.__enter__()
        try:
            self._handle, self._flush = obj._handle_now(esys)
        except BaseException as exc:
            self._command.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._in_use = conn.keys.in_use(obj)
        self._in_use.__enter__()
        if not self._encrypted and obj._auth is None:
            return esys, self._handle, conn.tss.ESYS_TR.PASSWORD
        try:
            self._session = conn.session(esys, encrypt=self._encrypted, command=self._param)
        except BaseException as exc:
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return esys, self._handle, self._session

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        """Release the object (flushed where the cache did not keep it) and end the command,
        which translates a TSS error: the block's, else one of the release's."""
        try:
            self._in_use.__exit__()
            if exc is not None and self._session is not None:
                self._obj._conn.drop_session(self._esys)
            if self._flush:
                self._obj._conn.flush_object(self._esys, self._handle)
        except BaseException as error:
            self._command.__exit__(type(error), error, error.__traceback__)
            raise
        self._command.__exit__(kind, exc, tb)


class _TPMKeyBase(_TPMObject):
    """What TPM RSA and EC keys share beyond the object: the public half, type and usage."""

    _pub: rsa.RSAPublicKey | ec.EllipticCurvePublicKey

    def __init__(
        self,
        conn: Connection,
        private: Any,
        public: Any,
        usage: KeyUsage,
        auth: bytes | None = None,
        parent: int | None = None,
    ) -> None:
        self._init_object(conn, private, public, auth, parent)
        self._pub = public_key_of(public)
        self.key_type = KeyType.of(self._pub)
        self.usage = usage
        # Read from the public area every load hands the TPM, so these are the attributes the
        # TPM enforces (key_from_pem checks them only after the TPM has accepted that area).
        self._missing = _missing_origin(public, usage)
        t = conn.tss
        #: TPMT_SIG_SCHEME per (scheme, hash name), built on first use.
        self._schemes: dict[tuple[SignatureScheme, str], Any] = {}
        #: The null ticket: the digest was not made by the TPM (the key is not restricted).
        self._ticket = t.TPMT_TK_HASHCHECK(tag=t.TPM2_ST.HASHCHECK, hierarchy=t.TPM2_RH.NULL)
        #: The digest to sign, refilled under the connection's lock (a digest is no secret).
        self._digest = t.TPM2B_DIGEST()

    @property
    def hardware_backed(self) -> bool:
        """True when the key was made in this TPM and cannot leave it (fixedTPM, fixedParent,
        sensitiveDataOrigin); False for an imported or duplicable key."""
        return not self._missing

    @property
    def hardware_reason(self) -> str:
        """Why the key is or is not hardware-backed, from its TPM object attributes."""
        return _origin_reason(self._missing)

    def _sign(
        self, what: str, digest: bytes, scheme: SignatureScheme, hash_alg: hashes.HashAlgorithm
    ) -> tuple[bytes, bytes]:
        """TPM2_Sign of a digest: the RSA signature (and b"") or ECDSA's r and s.

        The hot path: the scheme, the null ticket and the digest's TPM2B are built once per key
        (the digest refilled under the connection's lock), and the signature is read from its
        marshaled form, not through tpm2-pytss's attribute wrappers (which cost several times
        as much CPU per signature). Where no resource manager keeps handles per connection, the
        signature is verified with the key's public half before it is returned: one that does
        not verify came from another object given this key's handle by a TPM reset, and the
        connection forgets its handles and signs once more."""
        sig_scheme = self._schemes.get((scheme, hash_alg.name))
        if sig_scheme is None:
            t = self._conn.tss
            sig_scheme = t.TPMT_SIG_SCHEME(scheme=getattr(t.TPM2_ALG, scheme.name))
            sig_scheme.details.any.hashAlg = getattr(t.TPM2_ALG, hash_alg.name.upper())
            self._schemes[(scheme, hash_alg.name)] = sig_scheme
        conn = self._conn
        for attempt in (1, 2):
            generation = conn.generation
            try:  # Connection.retrying, inlined: no closure per signature
                signature = self._sign_once(what, digest, sig_scheme)
            except TPMError as exc:
                if not (conn.recover(exc, generation) or conn.reused(exc, generation)):
                    raise
                signature = self._sign_once(what, digest, sig_scheme)
            parts = _signature_parts(bytes(signature.marshal()))
            if conn.resource_manager or self._verifies(digest, scheme, hash_alg, parts):
                return parts
            with conn.lock:
                if generation == conn.generation and attempt == 1:
                    conn.forget_reused()
        raise TPMError(f"{what}: the TPM's signature does not verify with the key's public half")

    def _verifies(
        self,
        digest: bytes,
        scheme: SignatureScheme,
        hash_alg: hashes.HashAlgorithm,
        parts: tuple[bytes, bytes],
    ) -> bool:
        """True where a signature the TPM returned is this key's (one public-key operation)."""
        prehashed = utils.Prehashed(hash_alg)
        key = self._pub
        try:
            if isinstance(key, rsa.RSAPublicKey):
                pad: AsymmetricPadding = rsa_padding.PKCS1v15()
                if scheme is SignatureScheme.RSAPSS:  # the TPM's salt length: digest or max
                    pad = rsa_padding.PSS(rsa_padding.MGF1(hash_alg), rsa_padding.PSS.AUTO)
                key.verify(parts[0], digest, pad, prehashed)
            else:
                r, s = (int.from_bytes(part, "big") for part in parts)
                key.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(prehashed))
        except InvalidSignature:
            return False
        return True

    def _sign_once(self, what: str, digest: bytes, sig_scheme: Any) -> Any:
        with self._use(what) as (esys, handle, session):
            self._digest.buffer = digest
            return esys.sign(handle, self._digest, sig_scheme, self._ticket, session1=session)

    def _refuse_export(self) -> KeyUsageError:
        return KeyUsageError(
            "the private half of a TPM key never leaves the TPM: store the key with KeyStore (a "
            "TSS2 PRIVATE KEY blob only this TPM can load); to sign a JWT with it, use "
            "entra_keys.formats.jws_sign(key, claims, alg, header) or PyJWT "
            '(jwt.encode(claims, key, algorithm="RS256")), which only call sign(); libraries '
            "that read the private numbers (jwcrypto, joserfc, Authlib) cannot use a TPM key"
        )

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        """Refused: a TPM key's private half cannot be read."""
        raise self._refuse_export()

    def __copy__(self) -> Self:
        return self  # one TPM object: a copy is the same key

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class TPMRSAKey(_TPMKeyBase, EntraRSAKey):
    """An RSA key inside the TPM; a ``cryptography`` ``RSAPrivateKey`` that cannot be exported."""

    def __init__(
        self,
        conn: Connection,
        private: Any,
        public: Any,
        usage: KeyUsage,
        auth: bytes | None = None,
        parent: int | None = None,
    ) -> None:
        super().__init__(conn, private, public, usage, auth, parent)
        self._oaep: dict[str, Any] = {}  # TPMT_RSA_DECRYPT per hash name, built on first use
        self._label = conn.tss.TPM2B_DATA()  # the empty OAEP label

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: hashes.HashAlgorithm | utils.Prehashed | utils.NoDigestInfo,
    ) -> bytes:
        """Signs the data in the TPM (PKCS#1 v1.5, or PSS with a digest-length salt)."""
        scheme, hash_alg, digest = self.rsa_sign_args(data, padding, algorithm)
        return self._sign("RSA sign", digest, scheme, hash_alg)[0]

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """Decrypts an RSA-OAEP ciphertext in the TPM (SHA-1 or SHA-256, empty label)."""
        plain = self._decrypt(ciphertext, self.rsa_decrypt_args(padding))
        return bytes(plain)

    def _decrypt(self, ciphertext: bytes, hash_alg: hashes.HashAlgorithm) -> Any:
        """TPM2_RSA_Decrypt in a session that encrypts the plaintext on its way out of the TPM."""
        t = self._conn.tss
        scheme = self._oaep.get(hash_alg.name)
        if scheme is None:  # built once per hash: decryption is a hot path too
            scheme = t.TPMT_RSA_DECRYPT(scheme=t.TPM2_ALG.OAEP)
            scheme.details.oaep.hashAlg = getattr(t.TPM2_ALG, hash_alg.name.upper())
            self._oaep[hash_alg.name] = scheme
        if len(ciphertext) != self.key_size // 8:
            raise DecryptionError("the ciphertext is not as long as the key's modulus")

        def decrypt() -> Any:
            with self._use("RSA decrypt", encrypted=True) as (esys, handle, session):
                return esys.rsa_decrypt(
                    handle, t.TPM2B_PUBLIC_KEY_RSA(ciphertext), scheme, self._label,
                    session1=session,
                )  # fmt: skip

        try:
            return self._conn.retrying(decrypt)
        except TPMError as exc:
            # Only the TPM's own refusal means a bad ciphertext; TSS and I/O errors stay what
            # they are (a TPM that went away mid-command is not a wrong ciphertext).
            if not _errors.is_tpm_refusal(exc):
                raise
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


class TPMECKey(_TPMKeyBase, EntraECKey):
    """An elliptic-curve key inside the TPM; a ``cryptography`` ``EllipticCurvePrivateKey``."""

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        """Signs the data with ECDSA in the TPM; the signature is DER, as from ``cryptography``."""
        hash_alg, digest = self.ecdsa_sign_args(data, signature_algorithm)
        r, s = self._sign("ECDSA sign", digest, SignatureScheme.ECDSA, hash_alg)
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


class TPMSessionKey(_TPMObject, SessionKey):
    """The PRT session key as a keyed-hash (HMAC-SHA256) object under the storage key."""

    def __init__(
        self, conn: Connection, private: Any, public: Any, parent: int | None = None
    ) -> None:
        self._init_object(conn, private, public, parent=parent)
        # One input buffer per key, refilled under the connection's lock: a new TPM2B_MAX_BUFFER
        # per call costs a fifth of a swtpm TPM2_HMAC. The input (a KDF block) is not secret.
        self._hmac_buffer = conn.tss.TPM2B_MAX_BUFFER()

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
        t = self._conn.tss
        # Response encryption: the derived key leaves the TPM only encrypted (the continued
        # salted session makes this cost no extra command). The input (label and context) is
        # no secret: it is not encrypted, which would cost tpm2-tss a cipher set-up per call.

        def hmac() -> bytes:
            with self._use("session key HMAC", encrypted=True, command=False) as (esys, h, s):
                self._hmac_buffer.buffer = data
                digest = esys.hmac(h, self._hmac_buffer, t.TPM2_ALG.SHA256, session1=s)
                return bytes(digest.buffer)

        return self._conn.retrying(hmac)
