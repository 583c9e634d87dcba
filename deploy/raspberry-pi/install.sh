#!/usr/bin/env bash
# Install malaria-edge from this offline bundle: no network needed.
#
#   ./install.sh                     # into ~/malaria-edge (a venv that also sees apt's python3-picamera2)
#   ./install.sh --prefix /opt/malaria-edge
#   ./install.sh --dry-run           # print what would be done, change nothing
#   ./install.sh --no-system-site    # a venv that sees no system packages (machines without a camera)
#   sudo ./install.sh --service      # into /opt/malaria-edge, plus the unattended `watch` service: a dedicated
#                                    # unprivileged user malaria-edge, data in /var/lib/malaria-edge
#   sudo ./install.sh --serve pi     # into /opt/malaria-edge, plus the reviewer web app for user pi's slides
#                                    # (malaria-edge-serve@pi, http://localhost:8080/)
#
# Installs exactly the wheels in requirements.txt, each checked against its sha256 (pip --require-hashes).
# Safe to run again: it reuses the venv and reinstalls the bundle's version.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prefix="$HOME/malaria-edge"
dry=0
site="--system-site-packages"
service=0
serve_user=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --service) service=1; prefix="/opt/malaria-edge"; shift ;;
    --serve) serve_user="${2:?--serve needs the user whose slides it serves}"; prefix="/opt/malaria-edge"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --no-system-site) site=""; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

step() {
  echo "+ $*"
  if [ "$dry" = 0 ]; then "$@"; fi
}

if { [ "$service" = 1 ] || [ -n "$serve_user" ]; } && [ "$dry" = 0 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: --service and --serve install a system service: run it with sudo" >&2
  exit 2
fi
if [ -n "$serve_user" ] && ! id "$serve_user" >/dev/null 2>&1; then
  echo "install.sh: --serve $serve_user: no such user" >&2
  exit 2
fi

cd "$here"
echo "checking the bundle's files against SHA256SUMS"
if ! sha256sum --quiet -c SHA256SUMS; then
  echo "install.sh: the bundle is damaged (checksum mismatch above): copy it again" >&2
  exit 1
fi

python3 - <<'EOF' || { echo "install.sh: Python 3.10 or newer is needed (Raspberry Pi OS Bookworm has 3.11)" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF

if [ -x "$prefix/bin/python" ]; then
  echo "reusing the virtual environment at $prefix"
else
  # shellcheck disable=SC2086  # $site is one flag or none
  step python3 -m venv $site "$prefix"
fi
step "$prefix/bin/python" -m pip install --no-index --find-links "$here/wheels" --require-hashes --upgrade --quiet -r "$here/requirements.txt"
if [ "$service" = 1 ]; then
  if ! id malaria-edge >/dev/null 2>&1; then
    step useradd --system --user-group --home-dir /var/lib/malaria-edge --no-create-home --shell /usr/sbin/nologin malaria-edge
  fi
  step install -m 0644 "$here/malaria-edge-watch.service" /etc/systemd/system/malaria-edge-watch.service
  step systemctl daemon-reload
  step systemctl enable --now malaria-edge-watch
fi
if [ -n "$serve_user" ]; then
  step install -m 0644 "$here/malaria-edge-serve@.service" /etc/systemd/system/malaria-edge-serve@.service
  step systemctl daemon-reload
  step systemctl enable --now "malaria-edge-serve@$serve_user"
fi
if [ "$dry" = 0 ]; then
  echo
  "$prefix/bin/malaria-edge" doctor --output-dir "$HOME" || true  # report, do not undo the install
  echo
  echo "installed: $prefix/bin/malaria-edge"
  if [ "$service" = 1 ]; then
    echo "service: malaria-edge-watch, classifying /var/lib/malaria-edge/inbox into /var/lib/malaria-edge/results (journalctl -u malaria-edge-watch)"
  else
    echo "for unattended use: sudo ./install.sh --service"
  fi
  if [ -n "$serve_user" ]; then
    echo "reviewer app: http://localhost:8080/ for $serve_user's slides (journalctl -u malaria-edge-serve@$serve_user)"
  fi
fi
