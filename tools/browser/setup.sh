#!/usr/bin/env bash
# Headless Chromium and its WebDriver, from Debian's packages, for the web
# console's end-to-end test (tests/console_browser.rs). Installs only what is
# missing; needs root (CI runs as root) or sudo.
set -euo pipefail
if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
/usr/bin/chromedriver --version
