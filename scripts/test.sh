#!/usr/bin/env bash
# Install what the tests need (Debian's Chromium for the browser tests, Python packages) and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements-test.txt
python -m pytest "$@"
