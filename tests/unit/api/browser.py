"""Headless Chromium through selenium and Debian's chromedriver, isolated and offline."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1800"]


@contextmanager
def chromium(tmp: Path) -> Iterator[Any]:
    import pytest
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(binary).exists() and Path(driver).exists()):
        pytest.skip("chromium / chromedriver not installed (make sysdeps installs chromium and chromium-driver)")
    profile = tmp / "chromium-profile"
    profile.mkdir()
    opts = webdriver.ChromeOptions()
    for f in [*FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(f)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=opts, service=Service(driver))
    browser.set_page_load_timeout(60)
    try:
        yield browser
    finally:
        browser.quit()
