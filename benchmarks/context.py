"""What every case shares in one run: the TPM, settings, progress, keys made once, tpm2-tools.

Keys are made once per run and kept as PEM (entra_keys) or blobs (raw ESAPI), since an RSA key
takes the swtpm a second to make; each case loads what it needs and releases it before it ends,
so that no case starts with another's objects in the TPM's three slots.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

import entra_keys
from entra_keys import EntraPrivateKey, KeyStore, KeyType, KeyUsage, Provider, open_provider

from .progress import Progress
from .rawtpm import RawTPM
from .settings import Settings

__all__ = ["MESSAGE", "Context"]

#: What is signed: about the size of a JWS signing input of a device-registration request.
MESSAGE = bytes(range(256)) * 2

_TOOLS = ("tpm2_sign", "tpm2_createprimary", "tpm2_create", "tpm2_load", "tpm2_flushcontext")


class Context:
    """The run's shared state; ``tcti`` is None when no TPM could be had (why: ``no_tpm``)."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        progress: Progress,
        tcti: str | None,
        no_tpm: str = "",
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.progress = progress
        self.tcti = tcti
        self.no_tpm = no_tpm
        self.tools = all(shutil.which(tool) for tool in (*_TOOLS, "tpm2_getcap"))
        self._tpm_pems: dict[tuple[KeyType, KeyUsage], bytes] = {}
        self._raw_blobs: dict[tuple[KeyType, KeyUsage], tuple[Any, Any]] = {}
        self._software: dict[KeyType, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {}
        self._stores: dict[str, Path] = {}

    # -- what a case may need ------------------------------------------------------------------

    def lacks(self, needs: frozenset[str]) -> str:
        """Why the needs cannot be met here, or "" when they can."""
        if "tpm" in needs and self.tcti is None:
            return self.no_tpm or "no TPM"
        if "tpm2-tools" in needs and not self.tools:
            return "tpm2-tools are not installed"
        return ""

    @property
    def the_tcti(self) -> str:
        """The TCTI (only called by cases that need a TPM)."""
        if self.tcti is None:
            raise RuntimeError("this case needs a TPM")
        return self.tcti

    def tpm_provider(self) -> Provider:
        """A new entra_keys TPM provider on the run's TPM (close it before the case ends)."""
        return open_provider("tpm", tcti=self.the_tcti)

    def raw_tpm(self) -> RawTPM:
        """A new bare ESAPI connection on the run's TPM."""
        return RawTPM(self.the_tcti)

    # -- keys made once per run ----------------------------------------------------------------

    def tpm_key(self, provider: Provider, key_type: KeyType, usage: KeyUsage) -> EntraPrivateKey:
        """A TPM key of that type, made on first use and reloaded from its PEM after."""
        slot = (key_type, usage)
        if slot not in self._tpm_pems:
            self._tpm_pems[slot] = provider.key_to_pem(provider.create_key(key_type, usage))
        key = provider.key_from_pem(self._tpm_pems[slot], usage)
        # The load check leaves the key in the provider's key cache; the raw ESAPI contenders
        # of a case, on their own connection, need those slots for their setup (swtpm has 3).
        provider.connection.flush_cache()  # type: ignore[attr-defined]
        return key

    def raw_blobs(self, raw: RawTPM, key_type: KeyType, usage: KeyUsage) -> tuple[Any, Any]:
        """The (private, public) blobs of a raw ESAPI key, made on first use."""
        slot = (key_type, usage)
        if slot not in self._raw_blobs:
            parent = raw.primary()
            try:
                self._raw_blobs[slot] = raw.create(parent, key_type, usage)
            finally:
                raw.flush(parent)
        return self._raw_blobs[slot]

    def software_key(self, key_type: KeyType) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        """A plain ``cryptography`` key of that type, made on first use."""
        if key_type not in self._software:
            self._software[key_type] = (
                rsa.generate_private_key(65537, key_type.bits)
                if key_type.is_rsa
                else ec.generate_private_key(key_type.curve)
            )
        return self._software[key_type]

    def software_pem(self, key_type: KeyType) -> bytes:
        """The PKCS#8 PEM of ``software_key`` (the software provider loads the same key)."""
        return self.software_key(key_type).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def key_store(self, kind: str) -> Path:
        """A store of that provider kind with ``device-rsa2048`` and ``device-ecc256``, made once
        per run by a provider closed again (nothing of it stays in the TPM)."""
        if kind not in self._stores:
            path = self.workdir / f"store-{kind}"
            provider = self.tpm_provider() if kind == "tpm" else open_provider("software")
            try:
                store = KeyStore(provider, path)
                for key_type in (KeyType.RSA2048, KeyType.ECC256):
                    if kind == "tpm":
                        key = self.tpm_key(provider, key_type, KeyUsage.SIGN)
                    else:
                        pem = self.software_pem(key_type)
                        key = provider.key_from_pem(pem, KeyUsage.SIGN)
                    store.save(f"device-{key_type.value}", key)
            finally:
                provider.close()
            self._stores[kind] = path
        return self._stores[kind]

    def child_env(self) -> dict[str, str]:
        """A measured child's environment: entra_keys importable as here, bytecode cached in the
        run's directory as an installed package has it (not recompiled in every child)."""
        source = str(Path(entra_keys.__file__).resolve().parents[1])
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{source}{os.pathsep}{path}" if path else source
        env["PYTHONPYCACHEPREFIX"] = str(self.workdir / "pycache")
        return env

    # -- objects and sessions in the TPM, as tpm2-tools see them ---------------------------------

    def tool_env(self) -> dict[str, str]:
        """The environment for tpm2-tools: the run's TCTI."""
        return {**os.environ, "TPM2TOOLS_TCTI": self.the_tcti}

    def transient_handles(self) -> list[int] | None:
        """The TPM's transient objects from a fresh ``tpm2_getcap`` (None without tpm2-tools)."""
        return self._getcap("handles-transient")

    def loaded_handles(self) -> list[int] | None:
        """Transient objects and loaded sessions: what a case must not leave behind."""
        objects = self._getcap("handles-transient")
        sessions = self._getcap("handles-loaded-session")
        return None if objects is None or sessions is None else objects + sessions

    def _getcap(self, capability: str) -> list[int] | None:
        if not self.tools or self.tcti is None:
            return None
        out = subprocess.run(
            ["tpm2_getcap", capability],
            env=self.tool_env(),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return [int(line.strip("- ").strip(), 16) for line in out.splitlines() if line.strip()]

    def flush(self, handles: list[int]) -> None:
        """Flush these objects or sessions (left behind by a case) with tpm2_flushcontext."""
        for handle in handles:
            subprocess.run(
                ["tpm2_flushcontext", f"0x{handle:08x}"],
                env=self.tool_env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
