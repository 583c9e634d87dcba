"""End to end in a real browser: `malaria-edge serve` (waitress, as deployed) and Debian's headless Chromium review a
slide counted from drawn fields, on a phone's screen; the reviewed parasitemia shows in the page and in `slides export`."""

from __future__ import annotations

import json
import sys
import time

import pytest
from click.testing import CliRunner

from edge_app.cli import main
from edge_app.slide import read_summary
from tests.chromium import CHROMEDRIVER, CHROMIUM, headless_chromium, requested_urls
from tests.conftest import drawn_slide
from tests.serving import start_serve

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium and chromium-driver")


def start_server(*args: str, port: int | None = None):
    return start_serve([sys.executable, "-m", "edge_app.cli"], *args, port=port)


@pytest.fixture
def browser(tmp_path):
    pytest.importorskip("selenium.webdriver")
    driver = headless_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def _decided(browser) -> int:
    return browser.execute_script("return document.querySelectorAll('.cell.decided-confirm, .cell.decided-reject').length")


def _replaced(element) -> bool:
    """Whether the page holding `element` has been replaced by another."""
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


def _wait(condition, timeout: float = 20.0):
    """Poll until `condition()` holds. An element of the page being replaced (a form just submitted) is not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    def holds() -> bool:
        try:
            return bool(condition())
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    deadline = time.monotonic() + timeout
    while not holds():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_a_microscopist_reviews_a_slide_in_the_browser(browser, tmp_path, tiny_model):
    slide = drawn_slide(tmp_path, tiny_model, 2, "--sample", "E2E-1")
    proc, url = start_server("--model", str(tiny_model))
    try:
        browser.get(url + "/slides")
        browser.find_element("partial link text", "E2E-1").click()
        assert "Not reviewed yet" in browser.page_source or "not reviewed yet" in browser.page_source
        name = browser.find_element("id", "reviewer")
        name.send_keys("Dr Kamau")
        name.submit()
        _wait(lambda: _replaced(name))  # the form posts and the page comes back: wait for the new one
        _wait(lambda: browser.find_element("id", "reviewer").get_attribute("value") == "Dr Kamau")

        cells = browser.find_elements("css selector", ".cell")
        flagged = browser.find_elements("css selector", ".cell.flagged")
        assert len(flagged) == 8 and len(cells) == 8 + 12
        flagged[0].find_element("css selector", "button.reject").click()  # a stain blob, not a parasite
        _wait(lambda: _decided(browser) == 1)
        flagged[1].find_element("css selector", "button.confirm").click()
        _wait(lambda: _decided(browser) == 2)
        assert "decided-reject" in flagged[0].get_attribute("class")
        assert "decided-confirm" in flagged[1].get_attribute("class")
        assert "in review: 2 of 20" in browser.find_element("id", "review-status").text

        for n in range(3, len(cells) + 1):  # the rest by keyboard: focus moves on to the next undecided cell
            browser.switch_to.active_element.send_keys("c")
            _wait(lambda n=n: _decided(browser) == n)
        _wait(lambda: "reviewed parasitemia" in browser.find_element("id", "review-status").text)
        assert browser.find_element("id", "reviewed-figure").text == "14.58 %"  # 7 of 48 cells
        assert "by Dr Kamau" in browser.find_element("id", "review-status").text

        proc.terminate()  # a restart (a reboot of the Pi) mid-session: the decisions and the reviewer's session stay
        proc.wait(10)
        proc, url = start_server("--model", str(tiny_model), port=int(url.rsplit(":", 1)[1]))
        browser.refresh()
        assert "decided-reject" in browser.find_elements("css selector", ".cell.flagged")[0].get_attribute("class")
        assert browser.find_element("id", "reviewed-figure").text == "14.58 %"
        assert browser.find_element("id", "reviewer").get_attribute("value") == "Dr Kamau"
        for img in browser.find_elements("css selector", ".cell img"):  # lazy, and never cached (no-store): each loads in view
            browser.execute_script("arguments[0].scrollIntoView()", img)
        _wait(lambda: all(browser.execute_script("return Array.from(document.querySelectorAll('.cell img'))"
                                                 ".map(i => i.complete && i.naturalWidth > 0)")))
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        assert browser.execute_script("return Array.from(document.querySelectorAll('.cell, .decide button'))"
                                      ".every(e => e.getBoundingClientRect().right <= window.innerWidth + 1)")  # nothing cut off
        assert all(u.startswith((url, "data:")) for u in requested_urls(browser))  # nothing from elsewhere
    finally:
        proc.terminate()
        proc.wait(10)

    exported = CliRunner().invoke(main, ["slides", "export", "--format", "json"])
    row = json.loads(exported.output)[0]
    assert row["sample"] == "E2E-1" and row["status"] == "reviewed" and row["reviewers"] == "Dr Kamau"
    assert row["reviewed_parasitemia"] == pytest.approx(7 / 48) and row["parasitemia"] == pytest.approx(8 / 48)
    assert read_summary(slide)["review"]["flagged_rejected"] == 1
