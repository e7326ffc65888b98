#!/usr/bin/env bash
# One-time (and idempotent) set-up on a fresh Debian machine:
#   1. uv, the package manager that installs the locked environment,
#   2. the Debian GL libraries MuJoCo needs to render without a display (EGL on Mesa),
#   3. the locked Python environment in .venv (uv.lock; never re-resolved here).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

need_gl=()
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libgl1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_gl+=("$pkg")
done
if [ ${#need_gl[@]} -gt 0 ]; then
  log "installing Debian GL libraries: ${need_gl[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_gl[@]}" >/dev/null
fi

log "syncing the locked environment (uv sync --frozen --inexact)"
uv sync --frozen --inexact --quiet
# --inexact: the ROS wheels install under distribution names (e.g. "std-msgs") that differ
# from their registry names ("ros-std-msgs"), so an exact sync takes them for strays and
# deletes their files. If an older sync already did that, rebuild .venv once.
if ! uv run --frozen python -c "import rclpy" >/dev/null 2>&1; then
  log "rclpy import failed after sync; rebuilding .venv from scratch"
  rm -rf .venv
  uv sync --frozen --inexact --quiet
fi
log "ready"
