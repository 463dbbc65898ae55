"""WebAuthn "tpm" attestation statements (W3C Web Authentication §8.3): Windows Hello's proof
that a credential key lives in the TPM, checked by the same verifier as a TPM2_Certify.

A relying party that receives a registration verifies it in three lines::

    policy = TrustPolicy.with_tpm_vendor_cas(allow_sha1=True)  # Windows signs with RS1
    result = verify_attestation_object(attestation_object, client_data_hash, policy=policy)
    assert result.hardware_backed                            # the AK certificate chained

The statement ``{ver, alg, x5c, sig, certInfo, pubArea}`` is a TPM2_Certify of the credential
key (``pubArea``) by an AK known only by its certificate (``x5c[0]``, issued by Microsoft's AIK
CA through ``x5c[1:]``), over the hash of the authenticator data and the client data hash.
Checked in this order, each refusal an ``AttestationCheckFailed`` naming its check:

1. structure: ``ver`` is "2.0", every member of its type; the authenticator data parses, with
   attested credential data whose public key is a COSE RSA or EC2 key (STRUCTURE);
   the client data hash is 32 bytes (NONCE);
2. ``alg`` is a COSE algorithm a TPM signs with (RS1 = -65535, RS256/384/512, PS256/384/512,
   ES256/384/512) and fits the AK certificate's key (SIGNATURE);
3. the AK certificate's WebAuthn profile (§8.3.1; CERTIFICATE): an empty subject, a
   subjectAltName with the TPM's names, tcg-kp-AIKCertificate (2.23.133.8.3) in
   extendedKeyUsage, the authenticator's AAGUID where it carries id-fido-gen-ce-aaguid;
4. ``verify_certify``: the AK certificate's profile and chain to the policy's AK CAs at the
   policy's time (trust, CERTIFICATE), the signature's hash (SHA-1 only with ``allow_sha1``:
   HASH), ``sig`` over ``certInfo`` (SIGNATURE), magic, type ATTEST_CERTIFY, the certified name
   is nameAlg || H(pubArea) (NAME), extraData is the hash of authData || clientDataHash with
   ``alg``'s hash (NONCE), the key attributes (KEY_ATTRIBUTES), its strength (KEY_STRENGTH) and
   ``pubArea``'s key is the credential's public key (KEY);
5. the credential key signs: ``pubArea`` has sign set (KEY_ATTRIBUTES).

What a Windows Hello pubArea must be: real ones (Dell XPS 13 / Nuvoton, Lenovo X1 / ST33,
Surface Pro 4 / Intel PTT) are RSA-2048 keys with objectAttributes 0x60472 or 0x60432:
fixedTPM, fixedParent, sensitiveDataOrigin, noDA, decrypt and sign (userWithAuth on some), an
authPolicy and no scheme. Of a device key's checks, those that fit a credential are kept: made
in this TPM and never to leave it (fixedTPM, fixedParent, sensitiveDataOrigin), unrestricted,
and sign set, since a credential signs assertions. decrypt, the authorization bits and the
authPolicy say how Windows uses and unlocks the key, not where it lives: they are not checked.
A pubArea that could leave the TPM (no fixedTPM) is refused: nothing would show the credential
stays in hardware.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa, utils

from ..errors import AttestationCheckFailed, Check, InvalidData, MalformedAttestation
from ..tcg.public import PublicKey
from ..tcg.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA1,
    TPM_ALG_SHA256,
    TPM_ALG_SHA384,
    TPM_ALG_SHA512,
    TPMA_OBJECT,
    HashInfo,
    TPMTSignature,
    hash_info,
)
from .cbor import decode, decode_prefix
from .ekcert import TCG_KP_AIK_CERTIFICATE, AKCertificateInfo, read_certificate
from .policy import AKEvidence, TrustPolicy
from .verifier import CertifyResult, verify_certify

__all__ = [
    "COSE_ALGORITHMS",
    "AuthenticatorData",
    "CoseAlgorithm",
    "WebAuthnResult",
    "cose_public_key",
    "verify_attestation_object",
    "verify_tpm_attestation",
]


@dataclass(frozen=True)
class CoseAlgorithm:
    """A COSE signature algorithm (IANA COSE Algorithms) as a TPM signs with it."""

    name: str
    sig_alg: int
    hash_alg: int

    @property
    def is_rsa(self) -> bool:
        """True for the RSA algorithms (RS*, PS*)."""
        return self.sig_alg != TPM_ALG_ECDSA

    @property
    def hash(self) -> HashInfo:
        """Its hash (the one extraData is made with)."""
        return hash_info(self.hash_alg)


#: The COSE algorithms of a "tpm" attestation, by COSE id.
COSE_ALGORITHMS: Mapping[int, CoseAlgorithm] = {
    -65535: CoseAlgorithm("RS1", TPM_ALG_RSASSA, TPM_ALG_SHA1),
    -257: CoseAlgorithm("RS256", TPM_ALG_RSASSA, TPM_ALG_SHA256),
    -258: CoseAlgorithm("RS384", TPM_ALG_RSASSA, TPM_ALG_SHA384),
    -259: CoseAlgorithm("RS512", TPM_ALG_RSASSA, TPM_ALG_SHA512),
    -37: CoseAlgorithm("PS256", TPM_ALG_RSAPSS, TPM_ALG_SHA256),
    -38: CoseAlgorithm("PS384", TPM_ALG_RSAPSS, TPM_ALG_SHA384),
    -39: CoseAlgorithm("PS512", TPM_ALG_RSAPSS, TPM_ALG_SHA512),
    -7: CoseAlgorithm("ES256", TPM_ALG_ECDSA, TPM_ALG_SHA256),
    -35: CoseAlgorithm("ES384", TPM_ALG_ECDSA, TPM_ALG_SHA384),
    -36: CoseAlgorithm("ES512", TPM_ALG_ECDSA, TPM_ALG_SHA512),
}
_COSE_CURVES: Mapping[int, ec.EllipticCurve] = {
    1: ec.SECP256R1(),
    2: ec.SECP384R1(),
    3: ec.SECP521R1(),
}
#: id-fido-gen-ce-aaguid: the authenticator model's AAGUID in an attestation certificate.
_FIDO_AAGUID = "1.3.6.1.4.1.45724.1.1.4"
_FLAG_AT, _FLAG_ED = 0x40, 0x80


def cose_public_key(key: Mapping[Any, Any] | bytes) -> PublicKey:
    """The public key of a COSE_Key (RFC 9053): EC2 on P-256/384/521 or RSA, as a map or its
    CBOR; a MalformedAttestation for anything else."""
    if isinstance(key, bytes | bytearray | memoryview):
        key = _cbor(bytes(key), "the COSE key")
    if not isinstance(key, Mapping):
        raise MalformedAttestation("the COSE key is not a map")
    kty = key.get(1)
    try:
        if kty == 2:
            crv = key.get(-1)
            curve = _COSE_CURVES.get(crv) if isinstance(crv, int) else None
            x, y = key.get(-2), key.get(-3)
            if curve is None or not isinstance(x, bytes) or not isinstance(y, bytes):
                raise MalformedAttestation("the COSE EC2 key is not on P-256/384/521 with x, y")
            size = (curve.key_size + 7) // 8
            if len(x) != size or len(y) != size:
                raise MalformedAttestation(f"the COSE EC2 key's x and y are not {size} bytes")
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            )
            return numbers.public_key()
        if kty == 3:
            n, e = key.get(-1), key.get(-2)
            if not isinstance(n, bytes) or not isinstance(e, bytes) or not n or not e:
                raise MalformedAttestation("the COSE RSA key has no n and e")
            return rsa.RSAPublicNumbers(
                int.from_bytes(e, "big"), int.from_bytes(n, "big")
            ).public_key()
    except ValueError as exc:
        raise MalformedAttestation(f"the COSE key is not a valid key ({exc})") from exc
    raise MalformedAttestation(f"the COSE key type {kty!r} is not RSA (3) or EC2 (2)")


def _cbor(data: bytes, what: str) -> Any:
    try:
        return decode(data, what)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc


@dataclass(frozen=True)
class AuthenticatorData:
    """Authenticator data (WebAuthn §6.1) with attested credential data (§6.5.1)."""

    raw: bytes
    rp_id_hash: bytes
    flags: int
    sign_count: int
    aaguid: bytes
    credential_id: bytes
    #: The credential's public key as the COSE_Key CBOR the authenticator wrote.
    credential_public_key: bytes
    #: The extensions' CBOR, when the ED flag says there are any.
    extensions: bytes | None

    @classmethod
    def parse(cls, data: bytes) -> AuthenticatorData:
        """Authenticator data that must hold attested credential data (AT), exactly the input;
        a MalformedAttestation saying what is wrong."""
        what = "the authenticator data"
        if len(data) < 37 + 18:
            raise MalformedAttestation(f"{what} is {len(data)} bytes: too short for a credential")
        flags = data[32]
        if not flags & _FLAG_AT:
            raise MalformedAttestation(f"{what} has no attested credential data (AT flag)")
        length = int.from_bytes(data[53:55], "big")
        key_at = 55 + length
        if key_at > len(data):
            raise MalformedAttestation(f"{what}: the credential id runs past the end")
        try:
            _, key_end = decode_prefix(data, key_at, "the credential public key")
            extensions = None
            end = key_end
            if flags & _FLAG_ED:
                _, end = decode_prefix(data, key_end, "the extensions")
                extensions = data[key_end:end]
        except InvalidData as exc:
            raise MalformedAttestation(str(exc)) from exc
        if end != len(data):
            raise MalformedAttestation(f"{what}: {len(data) - end} bytes after its last field")
        return cls(
            raw=data,
            rp_id_hash=data[:32],
            flags=flags,
            sign_count=int.from_bytes(data[33:37], "big"),
            aaguid=data[37:53],
            credential_id=data[55:key_at],
            credential_public_key=data[key_at:key_end],
            extensions=extensions,
        )


@dataclass(frozen=True)
class WebAuthnResult:
    """A verified "tpm" attestation: the TPM2_Certify of the credential key, and the credential
    as the authenticator data gives it. It pickles (bytes and the certify result only)."""

    certify: CertifyResult
    authenticator_data: AuthenticatorData
    #: The statement's COSE algorithm.
    alg: int

    @property
    def hardware_backed(self) -> bool:
        """True when the AK certificate chained to a trusted AK CA (and no software made it)."""
        return self.certify.hardware_backed

    @property
    def ak_evidence(self) -> AKEvidence:
        """``AKEvidence.CERTIFICATE`` for a verified statement."""
        return self.certify.ak_evidence

    @property
    def ak_certificate_info(self) -> AKCertificateInfo | None:
        """The AK certificate and the TPM it names (maker, model, firmware version)."""
        return self.certify.ak_certificate_info

    @property
    def credential_id(self) -> bytes:
        return self.authenticator_data.credential_id

    @property
    def credential_public_key(self) -> PublicKey:
        """The credential's public key (the certified key, the same as ``pubArea``'s)."""
        return cose_public_key(self.authenticator_data.credential_public_key)

    @property
    def aaguid(self) -> bytes:
        return self.authenticator_data.aaguid


def verify_attestation_object(
    attestation_object: bytes, client_data_hash: bytes, *, policy: TrustPolicy | None = None
) -> WebAuthnResult:
    """Verifies a WebAuthn attestation object (CBOR {fmt, attStmt, authData}) whose format is
    "tpm" (``verify_tpm_attestation``); ``client_data_hash`` is SHA-256 of the client data
    JSON. Any other format is a STRUCTURE refusal."""
    if not isinstance(attestation_object, bytes | bytearray | memoryview):
        raise MalformedAttestation("the attestation object is CBOR bytes")
    try:
        owned = bytes(attestation_object)
    except ValueError:  # a released memoryview
        raise MalformedAttestation("the attestation object is a released memoryview") from None
    document = _cbor(owned, "the attestation object")
    if not isinstance(document, dict) or set(document) - {"fmt", "attStmt", "authData"}:
        raise MalformedAttestation("the attestation object is not a map {fmt, attStmt, authData}")
    if document.get("fmt") != "tpm":
        raise MalformedAttestation(f"the attestation format is {document.get('fmt')!r}, not tpm")
    statement, auth_data = document.get("attStmt"), document.get("authData")
    if not isinstance(statement, dict) or not isinstance(auth_data, bytes):
        raise MalformedAttestation("the attestation object's attStmt or authData is missing")
    return verify_tpm_attestation(statement, auth_data, client_data_hash, policy=policy)


def verify_tpm_attestation(
    att_stmt: Mapping[str, Any],
    auth_data: bytes,
    client_data_hash: bytes,
    *,
    policy: TrustPolicy | None = None,
) -> WebAuthnResult:
    """Verifies a "tpm" attestation statement (the attStmt map, as decoded from CBOR) over the
    authenticator data and the client data hash, in the order the module gives; the result says
    ``hardware_backed`` when the AK certificate chains to the policy's AK CAs."""
    statement = _statement(att_stmt)
    if not isinstance(auth_data, bytes | bytearray | memoryview):
        raise MalformedAttestation("the authenticator data is bytes")
    data = AuthenticatorData.parse(bytes(auth_data))
    credential_key = cose_public_key(data.credential_public_key)
    if (
        not isinstance(client_data_hash, bytes | bytearray | memoryview)
        or len(client_data_hash) != 32
    ):
        raise AttestationCheckFailed(
            "the client data hash is the 32-byte SHA-256 of the client data", Check.NONCE
        )
    alg = COSE_ALGORITHMS.get(statement["alg"])
    if alg is None:
        raise AttestationCheckFailed(
            f"alg {statement['alg']} is not a COSE algorithm a TPM signs with", Check.SIGNATURE
        )
    x5c = statement["x5c"]
    ak_certificate = read_certificate(x5c[0], "the AK certificate (x5c[0])")
    ak_key = ak_certificate.certificate.public_key()
    if alg.is_rsa != isinstance(ak_key, rsa.RSAPublicKey) or not isinstance(
        ak_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    ):
        raise AttestationCheckFailed(
            f"alg {alg.name} does not fit the AK certificate's {type(ak_key).__name__}",
            Check.SIGNATURE,
        )
    _check_webauthn_profile(ak_certificate.certificate, data.aaguid)
    signature = _tpmt_signature(alg, statement["sig"], ak_key)
    extra_data = alg.hash.digest(data.raw + bytes(client_data_hash))
    certified = verify_certify(
        statement["certInfo"], signature, ak_key, statement["pubArea"], extra_data,
        policy=policy, expected_key=credential_key, ak_certificate=ak_certificate,
        ak_intermediates=list(x5c[1:]),
    )  # fmt: skip
    if not certified.key_public.object_attributes & TPMA_OBJECT.SIGN_ENCRYPT:
        raise AttestationCheckFailed(
            "the credential key (pubArea) is not a signing key", Check.KEY_ATTRIBUTES
        )
    return WebAuthnResult(certify=certified, authenticator_data=data, alg=statement["alg"])


def _statement(att_stmt: object) -> dict[str, Any]:
    """The statement's members checked for their types (a MalformedAttestation if not)."""
    if not isinstance(att_stmt, Mapping):
        raise MalformedAttestation("the attestation statement is not a map")
    if "ecdaaKeyId" in att_stmt:
        raise MalformedAttestation("ECDAA attestation is not taken (removed from WebAuthn)")
    wanted = {"ver": str, "alg": int, "x5c": list, "sig": bytes, "certInfo": bytes}
    wanted["pubArea"] = bytes
    out: dict[str, Any] = {}
    for name, kind in wanted.items():
        value = att_stmt.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise MalformedAttestation(f"the attestation statement's {name} is not {kind.__name__}")
        out[name] = value
    if out["ver"] != "2.0":
        raise MalformedAttestation(f"the attestation statement's ver is {out['ver']!r}, not 2.0")
    if not out["x5c"] or not all(isinstance(c, bytes) for c in out["x5c"]):
        raise MalformedAttestation("x5c is not a non-empty list of certificates (bytes)")
    return out


def _check_webauthn_profile(certificate: Any, aaguid: bytes) -> None:
    """The AIK certificate requirements of WebAuthn §8.3.1 beyond an AK certificate's."""
    from cryptography import x509

    if len(certificate.subject) != 0:
        raise AttestationCheckFailed(
            f"the AK certificate's subject is {certificate.subject.rfc4514_string()!r}: "
            "WebAuthn's is empty",
            Check.CERTIFICATE,
        )
    extensions = {e.oid.dotted_string: e.value for e in certificate.extensions}
    if "2.5.29.17" not in extensions:
        raise AttestationCheckFailed(
            "the AK certificate has no subjectAltName with the TPM's names", Check.CERTIFICATE
        )
    purposes = extensions.get("2.5.29.37")
    if purposes is None or TCG_KP_AIK_CERTIFICATE not in {p.dotted_string for p in purposes}:
        raise AttestationCheckFailed(
            "the AK certificate does not name tcg-kp-AIKCertificate (2.23.133.8.3)",
            Check.CERTIFICATE,
        )
    named = extensions.get(_FIDO_AAGUID)
    if isinstance(named, x509.UnrecognizedExtension):
        value = named.value  # an OCTET STRING holding the 16 bytes
        if not (len(value) == 18 and value[:2] == b"\x04\x10" and value[2:] == aaguid):
            raise AttestationCheckFailed(
                "the AK certificate's AAGUID is not the authenticator's", Check.CERTIFICATE
            )


def _tpmt_signature(alg: CoseAlgorithm, sig: bytes, key: PublicKey) -> bytes:
    """The statement's signature as the TPMT_SIGNATURE ``verify_certify`` takes: RSA bytes as
    they are, a DER ECDSA signature as r and s."""
    if alg.is_rsa:
        return TPMTSignature(alg.sig_alg, alg.hash_alg, sig).to_bytes()
    try:
        utils.decode_dss_signature(sig)
        return TPMTSignature.from_signature(alg.sig_alg, alg.hash_alg, sig, key).to_bytes()
    except (ValueError, InvalidData, OverflowError) as exc:
        raise AttestationCheckFailed(
            "sig is not a DER ECDSA signature on the AK's curve", Check.SIGNATURE
        ) from exc
