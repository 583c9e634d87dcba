#!/usr/bin/env bash
# Install the aarch64 bundle into an emulated Raspberry Pi OS-like userland, classify a few images
# and, given FIELDS_DIR, count a smear from its field images.
#
#   deploy/emulate_pi.sh BUNDLE.tar.gz IMAGES_DIR [WORKDIR [FIELDS_DIR]]
#   PI_CPU=cortex-a76 deploy/emulate_pi.sh ...     # a Pi 5's core (default: cortex-a72, a Pi 4's)
#
# Debian Bookworm's arm64 Python 3.11 (what Raspberry Pi OS Bookworm 64-bit
# ships) is unpacked with `dpkg -x` into WORKDIR/sysroot and run through
# `qemu-aarch64-static -L sysroot` (Debian's qemu-user-static): user-mode
# emulation of each process, no binfmt handler registered, no root image, no
# VM. The bundle's install.sh cannot be used as is (it calls `python3`, which
# would be this machine's, and user-mode emulation cannot exec a child aarch64
# process), so its steps are run the same way by hand: checksums, a venv,
# then `pip install --no-index` from the bundle's wheels only.
#
# Needs a Debian host (apt-get, dpkg) and access to Debian's archive; nothing
# is installed on the host: qemu-user-static is downloaded and unpacked with
# `dpkg -x` too, so its postinst never runs and no binfmt handler is registered.
set -euo pipefail

bundle="$(realpath "$1")"
images="$(realpath "$2")"
work="$(realpath -m "${3:-/tmp/malaria-edge-emulated-pi}")"
fields="${4:+$(realpath "$4")}"
mkdir -p "$work"
cd "$work"

# 1. Debian arm64 packages for python3.11 and what the wheels link against, resolved by apt, unpacked by dpkg.
apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures=arm64 -o Dir::State::Lists="$work/apt/lists"
          -o Dir::Cache="$work/apt/cache" -o Dir::State::Status="$work/apt/status" -o Debug::NoLocking=1)
mkdir -p apt/lists/partial apt/cache/archives/partial debs
touch apt/status
if [ ! -f sysroot/.done ]; then
  apt-get "${apt_opts[@]}" -qq update
  roots=(python3.11 python3.11-venv libpython3.11-stdlib python3-pip-whl python3-setuptools-whl libstdc++6 libgcc-s1 zlib1g libjpeg62-turbo)
  mapfile -t pkgs < <(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${roots[@]}" | grep -E '^[a-z0-9]' | sort -u)
  (cd debs && apt-get "${apt_opts[@]}" -qq download "${pkgs[@]}" 2>&1 | grep -v -E "^(W|N):" || true)
  rm -rf sysroot && mkdir sysroot
  for deb in debs/*.deb; do dpkg -x "$deb" sysroot; done
  touch sysroot/.done
fi
if [ ! -x qemu/usr/bin/qemu-aarch64-static ]; then
  # the host's own architecture, from the host's own package lists
  host_opts=(-o Dir::State::Lists="$work/apt/host-lists" -o Dir::Cache="$work/apt/cache" -o Dir::State::Status="$work/apt/status" -o Debug::NoLocking=1)
  mkdir -p apt/host-lists/partial
  apt-get "${host_opts[@]}" -qq update
  (cd debs && apt-get "${host_opts[@]}" -qq download qemu-user-static)
  dpkg -x debs/qemu-user-static_*.deb qemu
fi
qemu="$work/qemu/usr/bin/qemu-aarch64-static"
# A Raspberry Pi 4's core. qemu's default "max" CPU advertises SVE/i8mm, and under qemu 7.2 the int8
# kernels XNNPACK picks for them give wrong answers: emulate the real chip, not the richest one.
cpu="${PI_CPU:-cortex-a72}"
run() { "$qemu" -cpu "$cpu" -L "$work/sysroot" "$@"; }
echo "emulated ($cpu): $(run "$work/sysroot/usr/bin/python3.11" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')"

# 2. The bundle's install steps: venv, then pip --no-index from its wheels only.
rm -rf bundle venv && mkdir bundle
tar xzf "$bundle" -C bundle --strip-components=1
(cd bundle && sha256sum --quiet -c SHA256SUMS)
# Without binfmt, an emulated process cannot exec another aarch64 binary, so nothing may spawn one:
# the venv is made without ensurepip, and pip runs in-process from Debian's pip wheel.
run "$work/sysroot/usr/bin/python3.11" -m venv --without-pip venv
pip_whl="$(ls "$work"/sysroot/usr/share/python-wheels/pip-*.whl)"
start=$(date +%s)
run venv/bin/python3.11 "$pip_whl/pip" install -q --no-index --no-compile --find-links bundle/wheels malaria-edge
echo "pip install --no-index under emulation: $(( $(date +%s) - start )) s"

# 3. Classify with the installed app, under emulation.
run venv/bin/python3.11 -c "import numpy, ai_edge_litert, cv2; print('numpy', numpy.__version__, 'opencv', cv2.__version__)"
run venv/bin/python3.11 -m edge_app.cli classify "$images" --threads 1
if [ -n "$fields" ]; then
  run venv/bin/python3.11 -m edge_app.cli smear "$fields" --out "$work/slide" --overwrite --threads 1
  echo "summary.json:"
  cat "$work/slide/summary.json"
fi
