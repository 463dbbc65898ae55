"""Keys that only look like TPM keys: a software key brought in with TPM2_Import is refused.

The attack is done for real: a key made by pyca is wrapped to the TPM provider's own storage key
(``tpm2_pytss.utils.wrap``), imported with TPM2_Import on the provider's connection (swtpm takes
one client at a time) and written into the key store as a TSS2 PRIVATE KEY with the store's two
header lines. The TPM then signs with it, but its private half is known outside.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from entra_keys import (
    AttestationCheckFailed,
    ForeignKey,
    ImportedKey,
    KeyStore,
    KeyType,
    KeyUsage,
    Provider,
    TPMError,
)
from entra_keys.attestation.verifier import verify_certify
from entra_keys.providers.tpm import TPMProvider

NONCE = bytes(range(32))
IMPORTED = "imported into the TPM (TPM2_Import): its private half was known outside the TPM"
SoftwareKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def as_tpm(provider: Provider) -> TPMProvider:
    assert isinstance(provider, TPMProvider)
    return provider


def software_key(key_type: KeyType) -> SoftwareKey:
    """A key made outside any TPM, by pyca."""
    if key_type.is_rsa:
        return rsa.generate_private_key(65537, key_type.bits)
    return ec.generate_private_key(key_type.curve)


def tpm_import(provider: Provider, key: SoftwareKey, usage: KeyUsage, extra: Any = 0) -> bytes:
    """TPM2_Import of a software key under the provider's storage key: its TSS2 PRIVATE KEY PEM.

    The public area is what the provider's own keys carry for that usage, without fixedTPM,
    fixedParent and sensitiveDataOrigin (plus ``extra`` attributes, to try lies).
    """
    from tpm2_pytss import (
        TPM2_ALG,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE,
        TPMA_OBJECT,
        TPMT_SYM_DEF_OBJECT,
    )
    from tpm2_pytss.tsskey import TSSPrivKey
    from tpm2_pytss.utils import wrap

    tpm = as_tpm(provider)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    attrs = TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.NODA | extra
    scheme = None
    if usage is KeyUsage.DECRYPT:
        attrs |= TPMA_OBJECT.DECRYPT
    else:
        attrs |= TPMA_OBJECT.SIGN_ENCRYPT
    if usage is KeyUsage.ATTEST:
        attrs |= TPMA_OBJECT.RESTRICTED
        scheme = "rsassa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ecdsa-sha256"
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes=attrs, scheme=scheme)
    sensitive = TPM2B_SENSITIVE.from_pem(pem)
    conn = tpm.connection
    with conn.command("import a software key") as esys:  # no object is loaded: nothing to flush
        parent, _, _ = esys.read_public(conn.storage_key)
        encryption_key, duplicate, seed = wrap(parent.publicArea, public, sensitive)
        private = esys.import_(
            conn.storage_key,
            encryption_key,
            public,
            duplicate,
            seed,
            TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
        )
    blob = TSSPrivKey(private, public, empty_auth=True, parent=conn.storage_parent)
    return bytes(blob.to_pem())


def plant(store: KeyStore, name: str, key_type: KeyType, usage: KeyUsage, pem: bytes) -> None:
    """Write a key file as KeyStore does: the two header lines, then the PEM; 0700 / 0600."""
    store.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    header = f"Entra-Keys-Type: {key_type.value}\nEntra-Keys-Usage: {usage.value}\n".encode()
    fd = os.open(store.path / f"{name}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(header + pem)


def use(key: Any, usage: KeyUsage, public: Any) -> None:
    """Sign (verified with the software key's public half) or decrypt with a loaded key."""
    if usage is KeyUsage.DECRYPT:
        oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        assert key.decrypt(public.encrypt(b"secret", oaep), oaep) == b"secret"
    elif isinstance(public, rsa.RSAPublicKey):
        sig = key.sign(b"m", padding.PKCS1v15(), hashes.SHA256())
        public.verify(sig, b"m", padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(b"m", ec.ECDSA(hashes.SHA256()))
        public.verify(sig, b"m", ec.ECDSA(hashes.SHA256()))


CASES = [
    (KeyType.RSA2048, KeyUsage.SIGN),
    (KeyType.ECC256, KeyUsage.SIGN),
    (KeyType.RSA2048, KeyUsage.DECRYPT),
    (KeyType.RSA2048, KeyUsage.ATTEST),
    (KeyType.ECC256, KeyUsage.ATTEST),
]


def ids(value: KeyType | KeyUsage) -> str:
    """Test ids by enum value (rsa2048, sign, ...)."""
    return str(value.value)


@pytest.mark.parametrize(("key_type", "usage"), CASES, ids=ids)
def test_imported_key_file_is_refused(
    tpm_provider: Provider, tmp_path: Path, key_type: KeyType, usage: KeyUsage
) -> None:
    pem = tpm_import(tpm_provider, software_key(key_type), usage)
    store = KeyStore(tpm_provider, tmp_path / "store")
    plant(store, "device", key_type, usage, pem)
    missing = "lacks fixedTPM, fixedParent, sensitiveDataOrigin"
    with pytest.raises(ImportedKey, match=rf"'device'.*{missing}.*allow_imported") as info:
        store.load("device")
    assert info.value.key_name == "device"
    assert IMPORTED in str(info.value)
    with pytest.raises(ImportedKey, match=missing):
        tpm_provider.key_from_pem(pem, usage)
    # Listed without loading, the TSS2 file's label does not make it hardware: its public area
    # says imported (what `status` and `keys list` show).
    assert [(i.name, i.kind, i.hardware_backed) for i in store.list()] == [("device", "tpm", False)]


@pytest.mark.parametrize(("key_type", "usage"), CASES[:3], ids=ids)
def test_imported_key_loads_when_allowed_and_is_not_hardware(
    tpm_provider: Provider, tmp_path: Path, key_type: KeyType, usage: KeyUsage
) -> None:
    outside = software_key(key_type)
    store = KeyStore(tpm_provider, tmp_path / "store")
    plant(store, "device", key_type, usage, tpm_import(tpm_provider, outside, usage))
    key = store.load("device", allow_imported=True)
    assert key.hardware_backed is False
    assert key.hardware_reason == IMPORTED
    assert "software" in repr(key)
    # The TPM does the operation, yet the key made outside verifies it: its private half is known.
    use(key, usage, outside.public_key())
    with key.loaded():
        use(key, usage, outside.public_key())


def test_import_that_claims_sensitive_data_origin_is_still_refused(
    tpm_provider: Provider,
) -> None:
    """TPM2_Import does not check sensitiveDataOrigin: fixedTPM is what proves the origin."""
    from tpm2_pytss import TPMA_OBJECT

    outside = software_key(KeyType.ECC256)
    pem = tpm_import(tpm_provider, outside, KeyUsage.SIGN, TPMA_OBJECT.SENSITIVEDATAORIGIN)
    with pytest.raises(ImportedKey, match=r"lacks fixedTPM, fixedParent:") as info:
        tpm_provider.key_from_pem(pem, KeyUsage.SIGN)
    assert "sensitiveDataOrigin" not in str(info.value).partition(":")[0]
    key = tpm_provider.key_from_pem(pem, KeyUsage.SIGN, allow_imported=True)
    assert key.hardware_backed is False
    assert key.hardware_reason.startswith("duplicable (not fixedTPM, fixedParent)")
    use(key, KeyUsage.SIGN, outside.public_key())


def test_tpm_refuses_to_import_a_key_that_claims_fixed_tpm(tpm_provider: Provider) -> None:
    """Why the check is sound: no imported object can carry fixedTPM or fixedParent."""
    from tpm2_pytss import TPM2_RC, TPMA_OBJECT

    for claim in (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT, TPMA_OBJECT.FIXEDPARENT):
        with pytest.raises(TPMError, match="inconsistent attributes") as info:
            tpm_import(tpm_provider, software_key(KeyType.ECC256), KeyUsage.SIGN, claim)
        rc = info.value.rc
        assert rc is not None and rc & ~(TPM2_RC.P | TPM2_RC.N_MASK) == TPM2_RC.ATTRIBUTES


def test_key_file_whose_public_area_lies_does_not_load(
    tpm_provider: Provider, tmp_path: Path
) -> None:
    """An imported blob with fixedTPM|fixedParent|sensitiveDataOrigin written into the file's
    public area: the TPM binds the blob to the name of its real public area and refuses it."""
    from tpm2_pytss import TPMA_OBJECT
    from tpm2_pytss.tsskey import TSSPrivKey

    pem = tpm_import(tpm_provider, software_key(KeyType.RSA2048), KeyUsage.SIGN)
    blob = TSSPrivKey.from_pem(pem)
    area = blob.public.publicArea
    area.objectAttributes = (
        area.objectAttributes
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
    )
    forged = bytes(TSSPrivKey(blob.private, blob.public, True, blob.parent).to_pem())
    store = KeyStore(tpm_provider, tmp_path / "store")
    plant(store, "device", KeyType.RSA2048, KeyUsage.SIGN, forged)
    for allow in (False, True):
        with pytest.raises(ForeignKey, match=r"'device'.*refuses the key blob"):
            store.load("device", allow_imported=allow)


def test_certify_of_an_imported_key_claims_no_hardware(tpm_provider: Provider) -> None:
    ak = tpm_provider.create_key(KeyType.ECC256, KeyUsage.ATTEST)
    pem = tpm_import(tpm_provider, software_key(KeyType.RSA2048), KeyUsage.SIGN)
    key = tpm_provider.key_from_pem(pem, KeyUsage.SIGN, allow_imported=True)
    certification = tpm_provider.certify(key, ak, NONCE)
    assert certification.hardware_backed is False
    with pytest.raises(AttestationCheckFailed, match="sensitiveDataOrigin") as caught:
        verify_certify(
            certification.attest,
            certification.signature,
            ak.tpm_public,
            certification.key_public,
            NONCE,
        )
    assert caught.value.check == "key-attributes"
    made = tpm_provider.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    assert tpm_provider.certify(made, ak, NONCE).hardware_backed is True


def test_imported_ak_makes_no_hardware_claims(tpm_provider: Provider) -> None:
    pem = tpm_import(tpm_provider, software_key(KeyType.ECC256), KeyUsage.ATTEST)
    with pytest.raises(ImportedKey):
        tpm_provider.key_from_pem(pem, KeyUsage.ATTEST)
    ak = tpm_provider.key_from_pem(pem, KeyUsage.ATTEST, allow_imported=True)
    assert ak.hardware_backed is False and ak.hardware_reason == IMPORTED
    assert tpm_provider.quote(ak, [0], NONCE).hardware_backed is False
    made = tpm_provider.create_key(KeyType.RSA2048, KeyUsage.SIGN)
    assert tpm_provider.certify(made, ak, NONCE).hardware_backed is False
