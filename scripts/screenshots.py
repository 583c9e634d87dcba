"""Remake the README's screenshots of `malaria-edge serve`: a slide's page and its review grid, phone and desktop width.

    python scripts/screenshots.py            # docs/screenshots/*.png

Counts the first 6 real fields of ../shared (drawn fields without it) into a
slide with the shipped models, starts `serve`, records a few decisions as a
reviewer would (three flagged cells confirmed, the fourth rejected) and
photographs the pages in Debian's headless Chromium.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.serve import _fields  # noqa: E402
from tests.chromium import DESKTOP, PHONE, headless_chromium  # noqa: E402
from tests.serving import start_serve  # noqa: E402

OUT = REPO / "docs" / "screenshots"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    app = str(Path(sys.executable).parent / "malaria-edge")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "MALARIA_EDGE_REGISTER": str(tmp / "register.sqlite3")}
        fields = _fields(None, 6, tmp)
        subprocess.run([app, "smear", str(fields), "--out", str(tmp / "slide"), "--sample", "KS-0193",
                        "--operator", "A. Mwangi"], env=env, check=True, capture_output=True)
        proc, url = start_serve([app], "--reviewer", "Dr Otieno", env=env)
        try:
            for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
                driver = headless_chromium(tmp / f"profile-{name}", size)
                try:
                    driver.get(url + "/slides")
                    driver.find_element("partial link text", "KS-0193").click()
                    if name == "desktop":  # decide a few cells once; the phone sees them decided
                        flagged = driver.find_elements("css selector", ".cell.flagged")
                        for cell, button in zip(flagged[:4], ("confirm", "confirm", "confirm", "reject")):
                            cell.find_element("css selector", f"button.{button}").click()
                            time.sleep(0.5)
                        driver.refresh()
                    driver.execute_script("window.scrollTo(0, 0)")
                    time.sleep(0.3)
                    driver.save_screenshot(str(OUT / f"slide-{name}.png"))
                    driver.execute_script("document.getElementById('review').scrollIntoView()")
                    driver.execute_script("document.querySelectorAll('.cell')[4].focus({preventScroll: true})")
                    time.sleep(1.0)  # lazy images in view
                    driver.save_screenshot(str(OUT / f"review-{name}.png"))
                finally:
                    driver.quit()
        finally:
            proc.terminate()
            proc.wait(10)
    for p in sorted(OUT.glob("*.png")):
        print(f"{p.relative_to(REPO)} ({p.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
