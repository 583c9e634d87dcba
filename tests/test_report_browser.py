"""The slide report in a real browser (Debian's headless Chromium): everything shows, nothing is fetched from outside the file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from benchmarks.synthetic_fields import compose_field
from edge_app.cli import main
from tests.conftest import BLUE, RED, cell

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=390,844"):  # a phone's screen
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.get("about:blank")
    driver.get_log("performance")  # drop the start page's own requests: only the report's are checked
    yield driver
    driver.quit()


def _slide(tmp_path, tiny_model, *extra):
    folder = tmp_path / "fields"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for f in range(2):
        cells = [(np.asarray(cell(RED if i % 6 == 0 else BLUE, (44, 50), seed=10 * f + i)), "") for i in range(24)]
        Image.fromarray(compose_field(cells, (400, 560), rng)[0]).save(folder / f"field{f}.png")
    out = tmp_path / "slide"
    res = CliRunner().invoke(main, ["smear", str(folder), "--out", str(out), "--model", str(tiny_model),
                                    "--segmenter", "classical", *extra])
    assert res.exit_code == 0, res.output
    return out


def _requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_report_shows_fields_intervals_and_cells_offline_on_a_phone(browser, tiny_model, tmp_path):
    out = _slide(tmp_path, tiny_model)
    alone = tmp_path / "copied-to-a-phone"
    alone.mkdir()
    shutil.copy(out / "report.html", alone / "report.html")  # the page alone, without the slide's folder

    browser.get((alone / "report.html").as_uri())
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    browser.implicitly_wait(2)
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.className])")
    summary = json.loads((out / "summary.json").read_text())
    parasitized = summary["total"]["parasitized"]
    assert len(images) == 2 + parasitized and parasitized > 0
    assert all(complete and width > 0 for complete, width, _ in images), images  # every image decoded from the file itself
    text = browser.find_element("tag name", "body").text
    for field in summary["fields"]:
        lo, hi = field["ci95"]
        assert f"{100 * lo:.2f} % to {100 * hi:.2f} %" in text
    assert "field0.png\nP = " in text  # each thumbnail labelled with its field and probability
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scrolling
    urls = _requests(browser)
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls


def test_a_linked_report_opens_its_fields_from_the_slide_folder(browser, tiny_model, tmp_path):
    out = _slide(tmp_path, tiny_model, "--no-embed")
    browser.get((out / "report.html").as_uri())
    link = browser.find_element("partial link text", "field0.png")
    assert link.get_attribute("href") == (out / "annotated" / "0000-field0.png").as_uri()
    assert all(u.startswith(("file://", "data:")) for u in _requests(browser))
