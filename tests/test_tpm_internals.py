"""The TPM provider's use of tpm2-pytss: the private fast path agrees with the public API.

The signing hot path (``providers/tpm/_signing.py``, class ``Signer``) reads tpm2-pytss private
internals (``_cdata``, ``ffi.memmove``, ``ffi.buffer``, ``lib.Esys_Sign`` on ``ESAPI._ctx``).
Checked on tpm2-pytss 3.0.0 (the range pyproject.toml allows, ``>=3.0,<3.1``): there the fast
path is taken and gives what the public path gives; on any version the public path is used where
the probe fails. The templates the
package builds with the public API are compared with what the provider used before (tpm2-pytss's
own private key-file parent templates, and hand-rolled EK templates), so a TPM recreates the
same storage key and EKs.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from entra_keys import KeyType, KeyUsage, Provider
from entra_keys.provider import SignatureScheme
from entra_keys.providers import tpm as tpm_package
from entra_keys.providers.tpm import TPMProvider, _endorsement
from entra_keys.providers.tpm._signing import Signer
from entra_keys.providers.tpm._templates import (
    key_template,
    session_key_template,
    storage_template,
)
from entra_keys.testing.swtpm import Swtpm

from .helpers import cached_key

#: The tpm2-pytss versions the fast path was checked on (it must be taken there).
CHECKED_ON = ("3.0.0",)
#: The names of tpm2-pytss internals; only ``_signing.py`` may use them.
PRIVATE_NAMES = re.compile(
    r"_cdata|\bffi\b|\blib\b|_ctx\b|Esys_|tsskey\._|_getparenttemplate|internal\."
)

DIGEST = bytes(range(32))


def tss() -> Any:
    import tpm2_pytss

    return tpm2_pytss


def as_tpm(provider: Provider) -> TPMProvider:
    assert isinstance(provider, TPMProvider)
    return provider


class WithoutPrivates:
    """tpm2_pytss as a version without ``ffi`` would look."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if name == "ffi":
            raise AttributeError(name)
        return getattr(self._module, name)


@pytest.fixture
def signers(tpm_provider: Provider) -> tuple[Signer, Signer]:
    """(fast, public) signers for the provider's tpm2_pytss."""
    public = Signer(tss(), fast=False)
    fast = Signer(tss())
    assert not public.fast
    return fast, public


def test_the_fast_path_is_taken_on_the_checked_versions(tpm_provider: Provider) -> None:
    version = metadata.version("tpm2-pytss")
    if version not in CHECKED_ON:
        pytest.skip(f"tpm2-pytss {version} is not one of {CHECKED_ON}: re-check and add it")
    assert as_tpm(tpm_provider).connection.signer.fast
    assert Signer(tss()).fast


def test_without_the_internals_the_public_path_is_used(tpm_provider: Provider) -> None:
    key = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    assert isinstance(key, rsa.RSAPrivateKey)
    conn = as_tpm(tpm_provider).connection
    fallback = Signer(WithoutPrivates(tss()))
    assert not fallback.fast
    with pytest.raises(AttributeError):
        Signer(WithoutPrivates(tss()), fast=True)  # asked for, and not there
    fast = conn.signer
    want = key.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    conn.signer = fallback
    try:
        assert key.sign(b"m", padding.PKCS1v15(), hashes.SHA256()) == want
    finally:
        conn.signer = fast


def _signatures(
    provider: Provider, signers: tuple[Signer, Signer], key_type: KeyType, scheme: SignatureScheme
) -> tuple[Any, Any, Any]:
    """(pyca public key, signature by the fast path, by the public path) of DIGEST, one key."""
    key = cached_key(provider, key_type, KeyUsage.SIGN)
    conn = as_tpm(provider).connection
    fast, public = signers
    with key.loaded(), conn.command("sign twice") as esys:
        handle = key._handle  # type: ignore[union-attr]
        by_fast = fast.sign(esys, handle, DIGEST, fast.scheme(scheme, hashes.SHA256()))
        by_public = public.sign(esys, handle, DIGEST, public.scheme(scheme, hashes.SHA256()))
    return key.public_key(), by_fast, by_public


def test_rsassa_signatures_are_the_same_by_both_paths(
    tpm_provider: Provider, signers: tuple[Signer, Signer]
) -> None:
    fast, public = signers
    pub, by_fast, by_public = _signatures(
        tpm_provider, signers, KeyType.RSA2048, SignatureScheme.RSASSA
    )
    assert fast.parts(by_fast) == public.parts(by_public)  # PKCS#1 v1.5 is deterministic
    assert fast.parts(by_public) == public.parts(by_fast)
    assert bytes(by_fast.marshal()) == bytes(by_public.marshal())
    prehashed = utils.Prehashed(hashes.SHA256())
    pub.verify(fast.parts(by_fast)[0], DIGEST, padding.PKCS1v15(), prehashed)


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [(KeyType.RSA2048, SignatureScheme.RSAPSS), (KeyType.ECC256, SignatureScheme.ECDSA)],
    ids=["rsapss", "ecdsa"],
)
def test_randomized_signatures_read_the_same_by_both_paths(
    tpm_provider: Provider, signers: tuple[Signer, Signer], key_type: KeyType,
    scheme: SignatureScheme,
) -> None:  # fmt: skip
    fast, public = signers
    prehashed = utils.Prehashed(hashes.SHA256())
    pub, by_fast, by_public = _signatures(tpm_provider, signers, key_type, scheme)
    for signature in (by_fast, by_public):
        parts = fast.parts(signature)
        assert parts == public.parts(signature)
        if isinstance(pub, rsa.RSAPublicKey):
            pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            pub.verify(parts[0], DIGEST, pss, prehashed)
        else:
            r, s = (int.from_bytes(p, "big") for p in parts)
            pub.verify(utils.encode_dss_signature(r, s), DIGEST, ec.ECDSA(prehashed))


@pytest.mark.parametrize(
    ("key_type", "scheme"),
    [
        (KeyType.RSA2048, SignatureScheme.RSASSA),
        (KeyType.RSA2048, SignatureScheme.RSAPSS),
        (KeyType.ECC256, SignatureScheme.ECDSA),
    ],
    ids=["rsassa", "rsapss", "ecdsa"],
)
def test_one_call_signing_gives_what_the_public_path_gives(
    tpm_provider: Provider, signers: tuple[Signer, Signer], key_type: KeyType,
    scheme: SignatureScheme,
) -> None:  # fmt: skip
    """``sign_parts`` (Esys_Sign called directly, its output freed at once) against
    ``parts(sign())`` by the public API: equal where deterministic, and each verifies."""
    fast, public = signers
    key = cached_key(tpm_provider, key_type, KeyUsage.SIGN)
    conn = as_tpm(tpm_provider).connection
    with key.loaded(), conn.command("sign by both paths") as esys:
        handle = key._handle  # type: ignore[union-attr]
        by_fast = [
            fast.sign_parts(esys, handle, DIGEST, fast.scheme(scheme, hashes.SHA256()))
            for _ in range(3)
        ]
        by_public = public.sign_parts(esys, handle, DIGEST, public.scheme(scheme, hashes.SHA256()))
        wrapped = public.parts(public.sign(esys, handle, DIGEST, public.scheme(
            scheme, hashes.SHA256())))  # fmt: skip
    if scheme is SignatureScheme.RSASSA:  # PKCS#1 v1.5 is deterministic
        assert by_fast == [by_public] * 3
        assert by_public == wrapped
    prehashed = utils.Prehashed(hashes.SHA256())
    pub = key.public_key()
    for signature, second in (*by_fast, by_public):
        if isinstance(pub, rsa.RSAPublicKey):
            assert second == b""
            pad: padding.AsymmetricPadding = padding.PKCS1v15()
            if scheme is SignatureScheme.RSAPSS:
                pad = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
            pub.verify(signature, DIGEST, pad, prehashed)
        else:
            r, s = int.from_bytes(signature, "big"), int.from_bytes(second, "big")
            der = utils.encode_dss_signature(r, s)
            pub.verify(der, DIGEST, ec.ECDSA(prehashed))


def test_one_call_signing_raises_the_tss_error(
    tpm_provider: Provider, signers: tuple[Signer, Signer]
) -> None:
    """A refused TPM2_Sign (a decryption key asked to sign) raises TSS2_Exception by both
    paths, with the same response code, and the key still signs after."""
    fast, public = signers
    key = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.DECRYPT)
    conn = as_tpm(tpm_provider).connection
    codes = []
    with key.loaded(), conn.command("sign with a decryption key") as esys:
        handle = key._handle  # type: ignore[union-attr]
        for signer in (fast, public):
            scheme = signer.scheme(SignatureScheme.RSASSA, hashes.SHA256())
            with pytest.raises(tss().TSS2_Exception) as caught:
                signer.sign_parts(esys, handle, DIGEST, scheme)
            codes.append(caught.value.rc)
    assert codes[0] == codes[1]
    signing = cached_key(tpm_provider, KeyType.RSA2048, KeyUsage.SIGN)
    assert isinstance(signing, rsa.RSAPrivateKey)
    signature = signing.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
    signing.public_key().verify(signature, b"m", padding.PKCS1v15(), hashes.SHA256())


def test_a_digest_too_long_for_the_buffer_is_refused_before_the_tpm() -> None:
    """The reused TPM2B_DIGEST holds 64 bytes; a longer digest is a ValueError, never written
    past the buffer (ffi.memmove does not check bounds) nor sent."""
    fast = Signer(tss())
    assert fast.fast
    scheme = fast.scheme(SignatureScheme.ECDSA, hashes.SHA256())
    with pytest.raises(ValueError, match="65-byte digest"):
        fast.sign_parts(None, None, bytes(65), scheme)
    with pytest.raises(ValueError, match="65-byte digest"):
        fast.sign(None, None, bytes(65), scheme)


def test_other_signature_schemes_read_the_same_by_both_paths(
    signers: tuple[Signer, Signer],
) -> None:
    fast, public = signers
    r, s = bytes(range(1, 33)), bytes(range(33, 65))
    for alg in (0x001C, 0x001B):  # TPM_ALG_ECSCHNORR, TPM_ALG_SM2: the wire-form reader
        wire = alg.to_bytes(2, "big") + b"\x00\x0b\x00\x20" + r + b"\x00\x20" + s
        signature, _ = tss().TPMT_SIGNATURE.unmarshal(wire)
        assert fast.parts(signature) == public.parts(signature) == (r, s)


def test_private_tpm2_pytss_names_only_in_the_signing_module() -> None:
    package = Path(tpm_package.__file__).parent
    for path in package.glob("*.py"):
        if path.name == "_signing.py":
            continue
        found = PRIVATE_NAMES.findall(path.read_text())
        assert not found, f"{path.name} uses tpm2-pytss internals: {found}"


def test_the_storage_template_is_the_tss2_key_file_parent() -> None:
    """Built publicly, it is byte for byte tpm2-pytss's own (private) key-file parent."""
    from tpm2_pytss import tsskey

    for ecc, theirs in ((True, tsskey._parent_ecc_template),
                        (False, tsskey._parent_rsa_template)):  # fmt: skip
        ours = storage_template(tss(), ecc=ecc)
        assert bytes(ours.publicArea.marshal()) == bytes(theirs.marshal())


@pytest.mark.parametrize("usage", [KeyUsage.SIGN, KeyUsage.DECRYPT, KeyUsage.ATTEST])
@pytest.mark.parametrize("key_type", KeyType.asymmetric(), ids=lambda k: k.value)
@pytest.mark.parametrize("pin", [False, True])
def test_key_templates_are_the_ones_the_provider_made_before(
    key_type: KeyType, usage: KeyUsage, pin: bool
) -> None:
    t = tss()
    attrs = (
        t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
        | t.TPMA_OBJECT.USERWITHAUTH
    )  # fmt: skip
    if not pin:
        attrs |= t.TPMA_OBJECT.NODA
    attrs |= t.TPMA_OBJECT.DECRYPT if usage is KeyUsage.DECRYPT else t.TPMA_OBJECT.SIGN_ENCRYPT
    scheme = "null"
    if usage is KeyUsage.ATTEST:
        attrs |= t.TPMA_OBJECT.RESTRICTED
        scheme = "rsassa-sha256" if key_type.is_rsa else "ecdsa-sha256"
    before = t.TPM2B_PUBLIC.parse(
        f"{key_type.value}:{scheme}", nameAlg=t.TPM2_ALG.SHA256, objectAttributes=attrs
    )
    before.publicArea.parameters.asymDetail.symmetric.algorithm = t.TPM2_ALG.NULL
    ours = key_template(t, key_type, usage, pin=pin)
    assert bytes(ours.publicArea.marshal()) == bytes(before.publicArea.marshal())


def test_the_session_key_template_is_the_one_the_provider_made_before() -> None:
    t = tss()
    public = t.TPMT_PUBLIC(type=t.TPM2_ALG.KEYEDHASH, nameAlg=t.TPM2_ALG.SHA256)
    public.objectAttributes = (
        t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT | t.TPMA_OBJECT.USERWITHAUTH
        | t.TPMA_OBJECT.NODA | t.TPMA_OBJECT.SIGN_ENCRYPT
    )  # fmt: skip
    public.parameters.keyedHashDetail.scheme.scheme = t.TPM2_ALG.HMAC
    public.parameters.keyedHashDetail.scheme.details.hmac.hashAlg = t.TPM2_ALG.SHA256
    assert bytes(session_key_template(t).publicArea.marshal()) == bytes(public.marshal())


def _hand_rolled_ek_template(key_type: KeyType) -> Any:
    """The low-range EK template as the provider wrote it out before (EK Credential Profile)."""
    t = tss()
    policy = bytes.fromhex("837197674484B3F81A90CC8D46A5D724FD52D76E06520B64F2A1DA1B331469AA")
    spec = "rsa2048:aes128cfb" if key_type.is_rsa else "ecc256:aes128cfb"
    template = t.TPM2B_PUBLIC.parse(spec, objectAttributes=0x000300B2, authPolicy=policy)
    if key_type.is_rsa:
        template.publicArea.unique.rsa = b"\0" * 256
    else:
        template.publicArea.unique.ecc.x = b"\0" * 32
        template.publicArea.unique.ecc.y = b"\0" * 32
    return template


def test_ek_templates_without_nv_are_the_profile_defaults(tpm_provider: Provider) -> None:
    """``create_ek_template`` with no template or nonce in NV gives the hand-rolled templates;
    the RSA one makes the very EK that swtpm_setup made persistent (0x81010001)."""
    conn = as_tpm(tpm_provider).connection
    with conn.command("EK templates") as esys:
        for key_type in (KeyType.RSA2048, KeyType.ECC256):
            ours = _endorsement._ek_template(esys, key_type)
            before = _hand_rolled_ek_template(key_type)
            assert bytes(ours.publicArea.marshal()) == bytes(before.publicArea.marshal())
        tr = esys.tr_from_tpmpublic(0x81010001)
        try:
            persistent, _, _ = esys.read_public(tr)
        finally:
            esys.tr_close(tr)
        with _endorsement._transient_ek(conn, esys, KeyType.RSA2048) as (_, made):
            assert bytes(made.publicArea.marshal()) == bytes(persistent.publicArea.marshal())


def test_ek_templates_honour_the_nonce_in_nv(own_swtpm: Swtpm) -> None:
    """A manufacturer's EK nonce (NV 0x01C00003, EK Credential Profile 2.2.1.5) fills the RSA
    EK's unique: the EK made from the template is not the default one."""
    t = tss()
    nonce = bytes(range(1, 17))
    with TPMProvider(own_swtpm.tcti) as provider:
        conn = as_tpm(provider).connection
        with conn.command("define the EK nonce") as esys:
            nv = t.TPMA_NV
            public = t.TPM2B_NV_PUBLIC(
                nvPublic=t.TPMS_NV_PUBLIC(
                    nvIndex=0x01C00003,
                    nameAlg=t.TPM2_ALG.SHA256,
                    attributes=nv.PPWRITE | nv.PPREAD | nv.OWNERREAD | nv.AUTHREAD
                    | nv.PLATFORMCREATE | nv.NO_DA,
                    dataSize=len(nonce),
                )
            )  # fmt: skip
            index = esys.nv_define_space(b"", public, auth_handle=t.ESYS_TR.PLATFORM)
            esys.nv_write(index, nonce, 0, auth_handle=t.ESYS_TR.PLATFORM)
            template = _endorsement._ek_template(esys, KeyType.RSA2048)
            assert bytes(template.publicArea.unique.rsa) == nonce + bytes(256 - len(nonce))
            default = _hand_rolled_ek_template(KeyType.RSA2048)
            with _endorsement._transient_ek(conn, esys, KeyType.RSA2048) as (_, made):
                assert bytes(made.publicArea.marshal()) != bytes(default.publicArea.marshal())
