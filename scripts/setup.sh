#!/usr/bin/env bash
# Install what entra_keys needs on a Debian machine (as root): the TPM packages, a virtual
# environment in .venv, and the package with its extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

want=(swtpm swtpm-tools libtss2-dev tpm2-tools tpm2-openssl pkg-config openssl gcc)
python3 -c 'import venv, ensurepip' 2>/dev/null || want+=(python3-venv)
python3 -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
  2>/dev/null || want+=(python3-dev)
missing=()
for pkg in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "setup: run as root to install them" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[tpm,test]'
echo "setup: ready ($(.venv/bin/python -c 'import entra_keys; print("entra_keys", entra_keys.__version__)'))"
