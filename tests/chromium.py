"""Debian's headless Chromium under Selenium, as the browser tests and scripts/screenshots.py drive it (the system
browser and its driver: nothing is downloaded at run time)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PHONE = (390, 844)
DESKTOP = (1280, 900)


def headless_chromium(profile: Path, size: tuple[int, int] = PHONE):
    """A headless Chromium with its network log on, with no background traffic of its own."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # Headless windows are at least 500 px wide: a phone's width (and its touch, mobile viewport) is emulated.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                                  "deviceScaleFactor": 1, "mobile": size[0] < 600})
    driver.get("about:blank")
    driver.get_log("performance")  # drop the start page's own requests
    return driver


def requested_urls(driver) -> list[str]:
    """Every URL the page requested since the log was last read."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls
