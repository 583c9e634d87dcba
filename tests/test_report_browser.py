"""The slide report in a real browser (Debian's headless Chromium): everything shows, nothing is fetched from outside the file."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.chromium import CHROMEDRIVER, CHROMIUM, headless_chromium, requested_urls
from tests.conftest import drawn_slide

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium.webdriver")
    driver = headless_chromium(tmp_path / "chromium-profile")  # a phone's screen
    yield driver
    driver.quit()


def test_report_shows_fields_intervals_and_cells_offline_on_a_phone(browser, tiny_model, tmp_path):
    out = drawn_slide(tmp_path, tiny_model)
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
    urls = requested_urls(browser)
    assert urls and all(u.startswith(("file://", "data:")) for u in urls), urls


def test_a_linked_report_opens_its_fields_from_the_slide_folder(browser, tiny_model, tmp_path):
    out = drawn_slide(tmp_path, tiny_model, 2, "--no-embed")
    browser.get((out / "report.html").as_uri())
    link = browser.find_element("partial link text", "field0.png")
    assert link.get_attribute("href") == (out / "annotated" / "0000-field0.png").as_uri()
    assert all(u.startswith(("file://", "data:")) for u in requested_urls(browser))


def test_the_report_names_sample_operator_and_date_and_prints_its_summary_on_one_page(browser, tiny_model, tmp_path):
    """A clinic files the report: who, what and when at the top, the headline first, and the summary on its own A4 page
    when printed (the fields start on the next)."""
    import base64

    out = drawn_slide(tmp_path, tiny_model, 2, "--sample", "P-017", "--operator", "Amina")
    summary = json.loads((out / "summary.json").read_text())
    browser.get((out / "report.html").as_uri())
    assert browser.title.startswith("Sample P-017")
    assert browser.find_element("id", "sample").text == "P-017" and browser.find_element("id", "operator").text == "Amina"
    assert browser.find_element("id", "counted").text.startswith(summary["counted"][:10])
    assert browser.find_element("id", "headline").text == "8 flagged"  # awaiting review: never a bare percentage
    assert "awaits a microscopist's review" in browser.find_element("id", "headline-text").text
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert browser.execute_script("return getComputedStyle(document.getElementById('fields')).breakBefore") == "page"
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    pdf = base64.b64decode(browser.execute_cdp_cmd("Page.printToPDF", {"preferCSSPageSize": True})["data"])
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") + pdf.count(b"/Type/Page") >= 2
