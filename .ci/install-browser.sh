#!/usr/bin/env bash
# Install Debian's headless Chromium + chromedriver for the `browser` tests (tests/shared/test_gallery_browser.py).
# Idempotent: exits at once when both binaries are present. Without root it only says what to install;
# the browser test then skips (or fails when RLAB_REQUIRE_BROWSER=1, as CI sets).
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
    echo "install-browser: $("$CHROMIUM" --version 2>/dev/null || echo chromium) and chromedriver already present"
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
    echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
else
    echo "install-browser: $CHROMIUM or $CHROMEDRIVER missing and not root;" \
         "install them with: sudo apt-get install chromium chromium-driver" >&2
fi
exit 0
