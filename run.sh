#!/bin/sh
# One entry point that sets up a fresh Debian/Ubuntu machine and then works:
#   ./run.sh matrix [vhba-lab run options]   the default kernel matrix -> reports/latest/index.html
#   ./run.sh test   [pytest options]         unit tests + real-guest integration tests
#   ./run.sh setup                           only the set-up (CI jobs)
# Set-up is idempotent: apt packages only when missing, the venv only when pyproject changes.
set -eu
cd "$(dirname "$0")"

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

APT_PACKAGES="qemu-system-x86 qemu-utils mmdebstrap e2fsprogs openssh-client python3-venv \
python3-pip ca-certificates xz-utils zstd chromium"

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    echo "run.sh: installing apt packages:$missing" >&2
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi

stamp=".venv/.pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "run.sh: preparing the Python environment in .venv" >&2
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi

what="${1:-}"
[ $# -gt 0 ] && shift
case "$what" in
    matrix) exec .venv/bin/vhba-lab run "$@" ;;
    test)   exec .venv/bin/python -m pytest tests "$@" ;;
    setup)  exit 0 ;;  # the set-up above only (CI jobs that then call .venv/bin/vhba-lab)
    *)      echo "usage: $0 matrix|test|setup [options]" >&2; exit 3 ;;
esac
