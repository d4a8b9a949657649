#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: the README's test command (`bash scripts/test.sh`)
# and what CI runs (.ci/run calls this script; keep the two in sync).
#
#   1. installs the Debian packages of .ci/apt-packages.txt that are missing (apt-get, as root or
#      through non-interactive sudo); where that is not possible it prints one line naming the
#      missing packages and carries on, so the tests that need them skip or fail on their own;
#   2. pip-installs torch==2.13.0 and the package with its dev extras (editable);
#   3. runs `python3 -m pytest -q -n 2`, with any arguments given to this script appended
#      (e.g. `bash scripts/test.sh -k config` or `bash scripts/test.sh tests/bitstream`).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=$(grep -v '^\s*#' .ci/apt-packages.txt | xargs || true)

missing_packages() {
    local p out=""
    for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || out="$out $p"; done
    echo "${out# }"
}

if [ -n "$packages" ]; then
    if ! command -v dpkg >/dev/null 2>&1; then
        echo "scripts/test.sh: Debian packages not checked (no dpkg), install them yourself: $packages; the tests that need them will skip or fail" >&2
    else
        missing=$(missing_packages)
        if [ -n "$missing" ]; then
            as_root=""
            if [ "$(id -u)" -eq 0 ]; then
                as_root="env"
            elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
                as_root="sudo -n env"
            fi
            if ! command -v apt-get >/dev/null 2>&1; then
                why="no apt-get"
            elif [ -z "$as_root" ]; then
                why="not root and no passwordless sudo"
            else
                why="apt-get failed"
                apt_install() {
                    $as_root DEBIAN_FRONTEND=noninteractive \
                        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
                }
                if $as_root apt-get update -qq >/dev/null; then
                    # All at once; if that fails (e.g. one name unknown here), one at a time.
                    # shellcheck disable=SC2086  # $missing is a list of package names
                    apt_install $missing || for p in $missing; do apt_install "$p" || true; done
                fi
                missing=$(missing_packages)
            fi
            if [ -n "$missing" ]; then
                echo "scripts/test.sh: Debian packages missing ($why): $missing; the tests that need them will skip or fail" >&2
            fi
        fi
    fi
fi

python3 -m pip install -q torch==2.13.0 -e '.[dev]'
exec python3 -m pytest -q -n 2 "$@"
