#!/usr/bin/env bash
# Installs Debian's chromium and its chromedriver for the dashboard's browser test
# (tests/browser/test_dashboard.py), which runs this when either is missing. Debian's packages,
# not a browser download: CI and developer machines reach the Debian archive and no other host.
# Idempotent; needs root or password-less sudo. Exits non-zero, with apt's own message, when the
# packages cannot be installed -- the test then fails and shows this script's output.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)  # -n: fail at once instead of waiting for a password nobody will type
else
    echo "install_chromium.sh: not root and no sudo; install the Debian packages chromium and" \
         "chromium-driver by hand" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends chromium chromium-driver

for tool in /usr/bin/chromium /usr/bin/chromedriver; do
    if [ ! -x "$tool" ]; then
        echo "install_chromium.sh: $tool is still missing after apt-get install" >&2
        exit 1
    fi
done
echo "installed: $(/usr/bin/chromedriver --version)"
