#!/usr/bin/env bash
# Makes sure headless Chromium and its WebDriver (`chromedriver`) are installed, for the
# status page's browser test (tests/status_page.rs), and prints chromedriver's path last.
#
# Idempotent: when chromedriver is already there it only says where. Otherwise it installs
# Debian's `chromium` and `chromium-driver` packages (Ubuntu's need snap: there, install a
# chromedriver yourself and set TANDEM_TEST_CHROMEDRIVER). Uses sudo when not root.
set -euo pipefail

find_driver() {
    local p
    for p in "$(command -v chromedriver 2>/dev/null || true)" /usr/bin/chromedriver \
        /usr/lib/chromium/chromedriver; do
        if [[ -n "$p" && -x "$p" ]]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

if driver="$(find_driver)"; then
    echo "install-chromium: chromedriver found" >&2
    echo "$driver"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-chromium: need root to install chromium and chromium-driver" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: chromedriver not found and apt-get is not available" >&2
    exit 1
fi
echo "install-chromium: installing packages 'chromium' and 'chromium-driver'" >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    chromium chromium-driver >&2
if ! driver="$(find_driver)"; then
    echo "install-chromium: packages installed, but chromedriver is still not found" >&2
    exit 1
fi
echo "$driver"
