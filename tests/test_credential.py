"""Credential protection: our MakeCredential opens in a real TPM, tpm2-tools' opens in ours.

make_credential is proven against swtpm's own EKs (RSA-2048 low range, P-384 high range) with
tpm2_activatecredential and an AK from tpm2_createak; activate_credential_with_key is proven
against tpm2_makecredential -T none (saved vectors and fresh ones). KDFa and KDFe are checked
against cryptography's KBKDFHMAC and ConcatKDFHash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode
from hypothesis import given
from hypothesis import strategies as st

from entra_keys import KeyUsage, UnsupportedAlgorithm
from entra_keys.errors import AttestationError, EntraKeysError, InvalidData
from entra_keys.providers.software_attest import software_endorsement_key, software_tpmt_public
from entra_keys.tcg import (
    TPMTPublic,
    activate_credential_with_key,
    credential_file,
    make_credential,
    parse_credential_file,
)
from entra_keys.tcg.credential import kdfa, kdfe
from entra_keys.tcg.structures import TPMA_OBJECT, hash_info, tpm2b
from entra_keys.testing.swtpm import Swtpm

from .helpers import IN_CI, load_vectors, transient_handles

VECTORS: dict[str, Any] = load_vectors("makecredential_tpm2_tools.json")
SWTPM_VECTORS: dict[str, Any] = load_vectors("swtpm_tpm2_tools.json")
AK_NAME = bytes.fromhex(VECTORS["ak_name"])
EKS: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
    "rsa2048": rsa.generate_private_key(65537, 2048),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
}


def private(pem: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


# --- the software inverse against tpm2_makecredential ------------------------------------------


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["ek"])
def test_tpm2_makecredential_vectors_activate_in_software(case: dict[str, str]) -> None:
    blob, secret = parse_credential_file(bytes.fromhex(case["credential_file"]))
    got = activate_credential_with_key(
        private(case["ek_private_pem"]), bytes.fromhex(case["ek_public"]), AK_NAME, blob, secret
    )
    assert got == bytes.fromhex(case["secret"])


@pytest.mark.parametrize("ek", sorted(EKS))
def test_fresh_tpm2_makecredential_activates_in_software(ek: str, tmp_path: Path) -> None:
    if shutil.which("tpm2_makecredential") is None:
        if IN_CI:
            pytest.fail("CI=true and tpm2-tools is not installed", pytrace=False)
        pytest.skip("tpm2-tools is not installed")
    endorsement = software_endorsement_key(EKS[ek])
    (tmp_path / "ek.pub").write_bytes(tpm2b(endorsement.public))  # TPM2B_PUBLIC
    secret = os.urandom(32)
    (tmp_path / "secret").write_bytes(secret)
    subprocess.run(
        ["tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret",
         "-n", AK_NAME.hex(), "-o", "cred"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    blob, encrypted = parse_credential_file((tmp_path / "cred").read_bytes())
    assert (
        activate_credential_with_key(EKS[ek], endorsement.public, AK_NAME, blob, encrypted)
        == secret
    )


# --- make_credential against the swtpm's real EKs ------------------------------------------------


def tools(swtpm: Swtpm, *args: str, cwd: Path) -> str:
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti}
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, capture_output=True, check=False)
    assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def tool_ak(swtpm: Swtpm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An ECC AK made by tpm2_createak under the swtpm's RSA EK, its context saved."""
    folder = tmp_path_factory.mktemp("credential-ak")
    tools(swtpm, "tpm2_createak", "-C", "0x81010001", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256",
          "-s", "ecdsa", "-u", "ak.pub", "-f", "tpmt", "-n", "ak.name", cwd=folder)  # fmt: skip
    yield folder
    assert transient_handles(swtpm.tcti) == []


@pytest.mark.parametrize(("ek_handle", "low_range"), [("0x81010001", True), ("0x81010016", False)])
def test_our_credential_activates_in_the_tpm(
    swtpm: Swtpm, tool_ak: Path, ek_handle: str, low_range: bool
) -> None:
    cwd = tool_ak
    tools(swtpm, "tpm2_readpublic", "-c", ek_handle, "-f", "tpmt", "-o", "ek.pub", cwd=cwd)
    ek_public = TPMTPublic.parse((cwd / "ek.pub").read_bytes())
    ak_name = (cwd / "ak.name").read_bytes()
    assert ak_name == TPMTPublic.parse((cwd / "ak.pub").read_bytes()).name()
    secret = os.urandom(hash_info(ek_public.name_alg).digest_size)  # 32, or 48 for P-384
    blob, encrypted = make_credential(ek_public, ak_name, secret)
    (cwd / "cred").write_bytes(credential_file(blob, encrypted))
    command = ["tpm2_activatecredential", "-c", "ak.ctx", "-C", ek_handle, "-i", "cred",
               "-o", "out"]  # fmt: skip
    if low_range:  # the low-range EK's authPolicy is PolicySecret(TPM_RH_ENDORSEMENT)
        tools(swtpm, "tpm2_startauthsession", "--policy-session", "-S", "session.ctx", cwd=cwd)
        try:
            tools(swtpm, "tpm2_policysecret", "-S", "session.ctx", "-c", "e", cwd=cwd)
            tools(swtpm, *command, "-P", "session:session.ctx", cwd=cwd)
        finally:
            tools(swtpm, "tpm2_flushcontext", "session.ctx", cwd=cwd)
    else:  # the high-range EK has userWithAuth and an empty password
        tools(swtpm, *command, cwd=cwd)
    assert (cwd / "out").read_bytes() == secret
    assert transient_handles(swtpm.tcti) == []


def test_credential_for_another_name_is_refused_by_the_tpm(swtpm: Swtpm, tool_ak: Path) -> None:
    cwd = tool_ak
    ek_public = bytes.fromhex(SWTPM_VECTORS["ek_ecc"]["public"])
    other_name = b"\x00\x0b" + os.urandom(32)
    (cwd / "cred").write_bytes(credential_file(*make_credential(ek_public, other_name, b"s" * 32)))
    env = {**os.environ, "TPM2TOOLS_TCTI": swtpm.tcti}
    done = subprocess.run(
        ["tpm2_activatecredential", "-c", "ak.ctx", "-C", "0x81010016", "-i", "cred", "-o", "out"],
        cwd=cwd, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    subprocess.run(["tpm2_flushcontext", "-t"], env=env, capture_output=True, check=False)
    assert done.returncode != 0 and "integrity" in done.stderr.lower()


# --- round trips and refusals --------------------------------------------------------------------


@pytest.mark.parametrize("ek", sorted(EKS))
def test_make_then_activate_in_software(ek: str) -> None:
    public = software_endorsement_key(EKS[ek]).public
    secret = os.urandom(16)
    blob, encrypted = make_credential(public, AK_NAME, secret)
    assert activate_credential_with_key(EKS[ek], public, AK_NAME, blob, encrypted) == secret
    other_name = AK_NAME[:2] + bytes(32)
    with pytest.raises(AttestationError, match="integrity check failed"):
        activate_credential_with_key(EKS[ek], public, other_name, blob, encrypted)
    damaged = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(AttestationError):
        activate_credential_with_key(EKS[ek], public, AK_NAME, damaged, encrypted)


def test_refusals() -> None:
    public = software_endorsement_key(EKS["rsa2048"]).public
    with pytest.raises(
        InvalidData, match=r"the secret is 33 bytes; this EK \(sha256\) takes 1 to 32"
    ):
        make_credential(public, AK_NAME, bytes(33))
    with pytest.raises(InvalidData, match="does not begin with a known hash"):
        make_credential(public, b"\x00\x99" + bytes(32), b"s")
    with pytest.raises(InvalidData, match="the AK name is 33 bytes"):
        make_credential(public, AK_NAME[:-1], b"s")
    not_an_ek = software_tpmt_public(EKS["rsa2048"].public_key(), KeyUsage.DECRYPT)
    with pytest.raises(UnsupportedAlgorithm, match="not a restricted decryption key"):
        make_credential(not_an_ek, AK_NAME, b"s")
    blob, encrypted = make_credential(public, AK_NAME, b"s")
    with pytest.raises(AttestationError, match="not the EK's"):
        activate_credential_with_key(EKS["p256"], public, AK_NAME, blob, encrypted)
    with pytest.raises(InvalidData, match="no badcc0de 00000001 header"):
        parse_credential_file(b"\x00" * 20)
    assert TPMA_OBJECT.DECRYPT & TPMTPublic.parse(public).object_attributes


@given(
    which=st.sampled_from(["blob", "secret"]),
    flips=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 7)), min_size=1, max_size=3),
    cut=st.integers(0, 5),
)
def test_damaged_credentials_never_give_a_wrong_secret(
    which: str, flips: list[tuple[int, int]], cut: int
) -> None:
    key = EKS["p256"]
    public = software_endorsement_key(key).public
    blob, encrypted = make_credential(public, AK_NAME, b"the secret")
    target = bytearray(blob if which == "blob" else encrypted)
    for where, bit in flips:
        target[where % len(target)] ^= 1 << bit
    damaged = bytes(target[: len(target) - cut])
    args = (damaged, encrypted) if which == "blob" else (blob, damaged)
    try:
        got = activate_credential_with_key(key, public, AK_NAME, *args)
    except EntraKeysError:
        return
    assert got == b"the secret" and damaged == (blob if which == "blob" else encrypted)


# --- the KDFs, against cryptography's own ------------------------------------------------------


@given(
    key=st.binary(min_size=1, max_size=64),
    u=st.binary(max_size=40),
    bits=st.sampled_from([128, 256, 384, 520]),
)
def test_kdfa_is_sp800_108_counter_mode(key: bytes, u: bytes, bits: int) -> None:
    ours = kdfa(hash_info(0x000B), key, b"STORAGE", u, b"", bits)
    theirs = KBKDFHMAC(
        algorithm=hashes.SHA256(), mode=Mode.CounterMode, length=bits // 8, rlen=4, llen=4,
        location=CounterLocation.BeforeFixed, label=b"STORAGE", context=u, fixed=None,
    ).derive(key)  # fmt: skip
    assert ours == theirs


@given(z=st.binary(min_size=32, max_size=48), u=st.binary(max_size=48), v=st.binary(max_size=48))
def test_kdfe_is_sp800_56a_concatenation(z: bytes, u: bytes, v: bytes) -> None:
    ours = kdfe(hash_info(0x000C), z, b"IDENTITY", u, v, 384)
    theirs = ConcatKDFHash(hashes.SHA384(), 48, otherinfo=b"IDENTITY\0" + u + v).derive(z)
    assert ours == theirs
