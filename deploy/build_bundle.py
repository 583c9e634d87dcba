"""Build an offline install bundle: the app's wheel, its runtime dependencies' wheels, the install script, checksums.

Run on any machine with internet; copy the archive to the Pi (USB stick) and
run its install.sh there with no network:

    python deploy/build_bundle.py                    # Raspberry Pi OS Bookworm 64-bit: aarch64, CPython 3.11
    python deploy/build_bundle.py --target native    # this machine's platform and Python (for testing)

pip resolves the app wheel's own requirements (setup.cfg) for the target
platform, so this file never repeats the dependency list. The only additions
are the Pi's pins (PI_PINS), each with its reason.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "deploy" / "raspberry-pi" / "install.sh"
UNITS = [ROOT / "deploy" / "raspberry-pi" / name for name in ("malaria-edge-watch.service", "malaria-edge-serve@.service")]

# Bookworm's glibc is 2.36: every manylinux tag up to it runs there.
PI_PLATFORMS = [f"manylinux_2_{n}_aarch64" for n in range(17, 37)] + ["manylinux2014_aarch64", "linux_aarch64"]
PI_PINS = [
    "numpy==1.24.2",  # Debian Bookworm's python3-numpy: apt's picamera2 and simplejpeg break with numpy 2
    # The newest release whose aarch64 wheel runs under deploy/emulate_pi.sh (qemu 7.2, Cortex-A72):
    # 2.2.0 and 2.3.0 crash there when the interpreter is created. Real Pi hardware is not tested yet.
    "ai-edge-litert==2.1.6",
]


def run(cmd: list[str]) -> None:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)


def build_app_wheel(dest: Path) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(ROOT)])
    (wheel,) = dest.glob("malaria_edge-*.whl")
    return wheel


def download_dependencies(app_wheel: Path, dest: Path, target: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest), str(app_wheel)]
    if target == "pi":
        cmd += [f"--platform={p}" for p in PI_PLATFORMS]
        cmd += ["--python-version=3.11", "--implementation=cp", "--abi=cp311", *PI_PINS]
    run(cmd)


def wheel_is_for(name: str, target: str) -> bool:
    """Pure-Python wheels run anywhere; binary ones must match the target."""
    tags = name[:-4].split("-")[-3:]  # python tag, abi tag, platform tag
    if tags[2] == "any":
        return True
    if target == "pi":
        return "aarch64" in tags[2] and tags[0] in ("cp311", "cp310", "cp39", "cp38", "cp37") and tags[1] in ("cp311", "abi3", "none")
    return True


def requirements(wheels: Path) -> str:
    """Every wheel of the bundle pinned to its version and sha256: install.sh installs exactly these (pip --require-hashes)."""
    lines = []
    for w in sorted(wheels.glob("*.whl")):
        name, version = w.name.split("-")[:2]
        lines.append(f"{name.replace('_', '-')}=={version} --hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}\n")
    return "".join(lines)


def build(target: str, out: Path) -> Path:
    from edge_app import __version__

    out.mkdir(parents=True, exist_ok=True)
    name = f"malaria-edge-{__version__}-{'pi-aarch64-cp311' if target == 'pi' else 'native'}"
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / name
        wheels = stage / "wheels"
        wheels.mkdir(parents=True)
        app = build_app_wheel(wheels)
        download_dependencies(app, wheels, target)
        wrong = [w.name for w in wheels.glob("*.whl") if not wheel_is_for(w.name, target)]
        if wrong:
            raise SystemExit(f"wheels for the wrong platform in the bundle: {wrong}")
        if any(w.name.startswith(("tensorflow", "keras")) for w in wheels.glob("*.whl")):
            raise SystemExit("tensorflow ended up in the bundle: the app must not depend on it")
        (stage / "requirements.txt").write_text(requirements(wheels))
        shutil.copy2(INSTALLER, stage / "install.sh")
        for unit in UNITS:
            shutil.copy2(unit, stage / unit.name)
        sums = []
        for f in sorted(p for p in stage.rglob("*") if p.is_file()):
            sums.append(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(stage)}\n")
        (stage / "SHA256SUMS").write_text("".join(sums))
        archive = out / f"{name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(stage, arcname=name)
    print(f"bundle: {archive} ({archive.stat().st_size / 2**20:.1f} MiB)", file=sys.stderr)
    return archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", choices=["pi", "native"], default="pi")
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    build(args.target, args.out)


if __name__ == "__main__":
    main()
