#!/usr/bin/env bash
# The main job: set up, then run a whole Entra join's device side (keys, attestation, session
# key) on a throwaway swtpm that the command starts itself (or the software provider where
# there is no swtpm), ending with the status report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
.venv/bin/entra-keys --store "$store/keys" demo
