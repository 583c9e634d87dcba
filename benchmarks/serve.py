"""`malaria-edge serve`: start-up time, memory, and how long a 20-field slide's page takes to load.

    python benchmarks/serve.py                  # 20 real fields from ../shared (drawn fields without it)
    python benchmarks/serve.py --fields DIR --repeat 5

Counts the fields into a slide with `malaria-edge smear` (its own register
in a temporary folder), then, `--repeat` times: starts `serve` (waitress, as
deployed) and times it until /slides answers; loads the slide's page and
every image on it (the annotated fields and the review grid's cells) over
six connections as a browser does, cold (a fresh server) and warm (again);
reads the server's resident memory (VmRSS) after start-up and after the
page. With Debian's Chromium present it also times the page's `load` event
in a real browser (only the images in view load there: the rest are lazy).
Prints the median and range of each.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.serving import start_serve  # noqa: E402

REAL_FIELDS = REPO.parent / "shared" / "datasets" / "iml_malaria" / "images"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read()


def _fields(source: Path | None, n: int, into: Path) -> Path:
    """The first n fields of `source`, the real ones by default, else drawn ones (benchmarks/synthetic_fields.py)."""
    source = source or (REAL_FIELDS if REAL_FIELDS.is_dir() else None)
    folder = into / "fields"
    folder.mkdir()
    if source:
        for f in sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))[:n]:
            os.symlink(f.resolve(), folder / f.name)
        print(f"fields: the first {n} of {source}")
    else:
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "synthetic_fields.py"), "--out", str(folder),
                        "--fields", str(n)], check=True, capture_output=True)
        print(f"fields: {n} drawn fields ({REAL_FIELDS} not found)")
    return folder


def _page_load(url: str, page: str) -> float:
    start = time.perf_counter()
    html = _get(url + page).decode()
    images = re.findall(r'<img[^>]+src="(/[^"]+)"', html)
    with ThreadPoolExecutor(6) as pool:
        sizes = list(pool.map(lambda src: len(_get(url + src)), images))
    assert images and all(sizes)
    return time.perf_counter() - start


def _browser_load(url: str, page: str, profile: Path) -> float | None:
    from tests.chromium import CHROMEDRIVER, CHROMIUM, DESKTOP, headless_chromium

    if not (CHROMIUM and CHROMEDRIVER):
        return None
    driver = headless_chromium(profile, DESKTOP)
    try:
        driver.get(url + page)
        return driver.execute_script("const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd") / 1000
    finally:
        driver.quit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fields", type=Path, default=None, help="Folder of field images (default: the real ones in ../shared).")
    ap.add_argument("--n", type=int, default=20, help="Fields in the slide.")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    app = shutil.which("malaria-edge", path=str(Path(sys.executable).parent)) or "malaria-edge"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "MALARIA_EDGE_REGISTER": str(tmp / "register.sqlite3")}
        fields = _fields(args.fields, args.n, tmp)
        subprocess.run([app, "smear", str(fields), "--out", str(tmp / "slide"), "--min-cells", "1"], env=env,
                       check=True, capture_output=True)
        results = {k: [] for k in ("start", "rss_start", "cold", "warm", "rss_page", "browser")}
        cells = 0
        for i in range(args.repeat):
            started = time.perf_counter()
            proc, url = start_serve([app], env=env)
            try:
                listing = _get(url + "/slides").decode()
                results["start"].append(time.perf_counter() - started)
                results["rss_start"].append(_rss_mb(proc.pid))
                page = re.search(r'href="(/slides/[^"]+)"', listing).group(1)
                cells = len(re.findall(r'class="cell ', _get(url + page).decode()))
                results["cold"].append(_page_load(url, page))
                results["warm"].append(_page_load(url, page))
                results["rss_page"].append(_rss_mb(proc.pid))
                load = _browser_load(url, page, tmp / f"profile{i}")
                if load is not None:
                    results["browser"].append(load)
            finally:
                proc.terminate()
                proc.wait(10)
    print(f"slide: {args.n} fields, {cells} cells in the review grid; {args.repeat} server starts")
    names = {"start": ("start-up until /slides answers", "s"), "rss_start": ("memory after start-up (VmRSS)", "MB"),
             "cold": ("slide page + every image, fresh server", "s"), "warm": ("slide page + every image, again", "s"),
             "rss_page": ("memory after the page (VmRSS)", "MB"), "browser": ("Chromium load event, desktop", "s")}
    for key, (label, unit) in names.items():
        v = results[key]
        if v:
            print(f"{label:<42} median {statistics.median(v):7.2f} {unit} (range {min(v):.2f}-{max(v):.2f})")


if __name__ == "__main__":
    main()
