"""The TPM provider's use of tpm2-pytss: its public API only, and what it builds with it.

No module of the package uses tpm2-pytss private names (``_cdata``, ``_ctx``, ``ffi``, ``lib``,
its ``internal`` modules). Signatures come from the public ``ESAPI.sign``: each scheme verifies
with pyca and ECDSA signatures are DER as pyca encodes them. The templates the package builds
with the public API are compared with what the provider used before (tpm2-pytss's own private
key-file parent templates, and hand-rolled EK templates), so a TPM recreates the same storage
key and EKs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

import entra_keys
from entra_keys import KeyType, KeyUsage, Provider
from entra_keys.providers.tpm import TPMProvider, _endorsement
from entra_keys.providers.tpm._templates import (
    key_template,
    session_key_template,
    storage_template,
)
from entra_keys.testing.swtpm import Swtpm

from .helpers import cached_key

#: tpm2-pytss private names as code uses them: attributes, its cffi objects, libtss2 symbols,
#: its private modules and key-file internals.
PRIVATE_NAMES = re.compile(
    r"\._cdata\b|\._ctx\b|\bffi\.|\blib\.|\bEsys_|tsskey\._|_getparenttemplate"
    r"|tpm2_pytss\.(?:internal|_)"
)

MESSAGE = b"signed through the public ESAPI"


def tss() -> Any:
    import tpm2_pytss

    return tpm2_pytss


def as_tpm(provider: Provider) -> TPMProvider:
    assert isinstance(provider, TPMProvider)
    return provider


def test_no_private_tpm2_pytss_name_in_the_package() -> None:
    package = Path(entra_keys.__file__).parent
    for path in sorted(package.rglob("*.py")):
        found = PRIVATE_NAMES.findall(path.read_text())
        assert not found, f"{path.relative_to(package)} uses tpm2-pytss internals: {found}"


def test_the_private_name_check_can_fail() -> None:
    uses = (
        "esys._ctx",
        "TPM2B_DIGEST()._cdata",
        "tss.ffi.memmove",
        "tss.lib.Esys_Sign",
        "from tpm2_pytss.internal.utils import x",
        "tsskey._parent_rsa_template",
    )
    for code in uses:
        assert PRIVATE_NAMES.search(code), code
    for text in ("_check_ctx(ctx)", "/var/lib) and", 'the default provider ("EVP lib")'):
        assert not PRIVATE_NAMES.search(text), text


@pytest.mark.parametrize(
    ("key_type", "pad"),
    [
        (KeyType.RSA2048, padding.PKCS1v15()),
        (KeyType.RSA2048, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)),
        (KeyType.ECC256, None),
        (KeyType.ECC384, None),
    ],
    ids=["rsassa", "rsapss", "ecdsa-p256", "ecdsa-p384"],
)
def test_signatures_of_each_scheme_verify_pinned_and_cached(
    tpm_provider: Provider, key_type: KeyType, pad: padding.AsymmetricPadding | None
) -> None:
    """Pinned and from the key cache, each signature verifies with pyca; PKCS#1 v1.5 gives
    the same bytes every time; ECDSA gives DER exactly as pyca encodes its (r, s)."""
    key = cached_key(tpm_provider, key_type, KeyUsage.SIGN)
    signatures = []
    for pinned in (True, False, False):
        if pinned:
            with key.loaded():
                signatures.append(_sign(key, pad))
        else:
            signatures.append(_sign(key, pad))
    public = key.public_key()
    for signature in signatures:
        if isinstance(public, rsa.RSAPublicKey):
            assert pad is not None
            assert len(signature) == key_type.bits // 8
            public.verify(signature, MESSAGE, pad, hashes.SHA256())
        else:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            r, s = utils.decode_dss_signature(signature)
            assert utils.encode_dss_signature(r, s) == signature
            public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    if isinstance(pad, padding.PKCS1v15):
        assert len(set(signatures)) == 1  # deterministic
    else:
        assert len(set(signatures)) == len(signatures)  # randomized


def _sign(key: object, pad: padding.AsymmetricPadding | None) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        assert pad is not None
        return key.sign(MESSAGE, pad, hashes.SHA256())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.sign(MESSAGE, ec.ECDSA(hashes.SHA256()))


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
            ours = _endorsement._ek_template(conn, esys, key_type)
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
            template = _endorsement._ek_template(conn, esys, KeyType.RSA2048)
            assert bytes(template.publicArea.unique.rsa) == nonce + bytes(256 - len(nonce))
            default = _hand_rolled_ek_template(KeyType.RSA2048)
            with _endorsement._transient_ek(conn, esys, KeyType.RSA2048) as (_, made):
                assert bytes(made.publicArea.marshal()) != bytes(default.publicArea.marshal())
