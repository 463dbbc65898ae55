#!/usr/bin/env bash
# The main job: set up, then on a throwaway swtpm (or the software provider where there is no
# swtpm) create a device key and a transport key and print the status report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
work=$(mktemp -d)
trap 'swtpm/stop "$work/tpm" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
if command -v swtpm >/dev/null; then
  tcti=$(swtpm/start "$work/tpm")
  cli=(.venv/bin/entra-keys --provider tpm --tcti "$tcti" --store "$work/keys")
  echo "demo: swtpm started, TCTI $tcti"
else
  cli=(.venv/bin/entra-keys --provider software --store "$work/keys")
  echo "demo: swtpm is not installed; using the software provider (keys not hardware-backed)"
fi
"${cli[@]}" keys create device --type rsa2048 --usage sign
"${cli[@]}" keys create transport --type rsa2048 --usage decrypt
# openssl 3.0 'req -verify' exits 0 even on a bad signature: read what it says.
"${cli[@]}" csr device | openssl req -verify -noout 2>&1 | tee /dev/stderr | grep -q "verify OK"
"${cli[@]}" status
