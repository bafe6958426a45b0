"""A headless Chromium for UI tests: load a page, wait for rendered text, take screenshots.

    from browser import Browser, available

    if available():
        with Browser() as browser:
            text = browser.open("http://127.0.0.1:5000/#/models/m", "champion")

Uses the system's Chromium and chromedriver (Debian: ``apt-get install chromium
chromium-driver``) through an explicit ``Service`` and ``binary_location``, so that
selenium-manager never downloads a browser or a driver. Plain helper, no pytest fixtures.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    HAVE_SELENIUM = True
except ImportError:  # available() says False; Browser is then unusable
    HAVE_SELENIUM = False

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
SHOTS = Path("/tmp/browser-shots")


def _which(names: tuple[str, ...], fallback: str) -> str | None:
    for name in names:
        if found := shutil.which(name):
            return found
    return fallback if Path(fallback).exists() else None


def chromium_path() -> str | None:
    return _which(CHROMIUM_NAMES, "/usr/bin/chromium")


def chromedriver_path() -> str | None:
    return _which(("chromedriver",), "/usr/bin/chromedriver")


def available() -> bool:
    """Whether selenium, Chromium and chromedriver are all installed."""
    return HAVE_SELENIUM and chromium_path() is not None and chromedriver_path() is not None


class Browser:
    """Headless Chromium (1400x1000) as a context manager."""

    def __init__(self, shots: Path = SHOTS) -> None:
        self.shots = shots
        self.driver: webdriver.Chrome | None = None

    def __enter__(self) -> Browser:
        binary, driver = chromium_path(), chromedriver_path()
        if binary is None or driver is None:
            raise RuntimeError("chromium and chromedriver are not installed")
        options = webdriver.ChromeOptions()
        options.binary_location = binary
        for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1400,1000", "--lang=en-US"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.driver is not None:
            self.driver.quit()
            self.driver = None

    @property
    def _driver(self) -> webdriver.Chrome:
        if self.driver is None:
            raise RuntimeError("use Browser as a context manager")
        return self.driver

    def text(self) -> str:
        """The page's rendered body text ('' while there is no body)."""
        try:
            return self._driver.find_element(By.TAG_NAME, "body").text
        except WebDriverException:
            return ""

    def wait_for(self, *texts: str, timeout: float = 60) -> str:
        """Wait until the body text contains every one of ``texts``; return the body text.

        On timeout: save a screenshot and raise AssertionError naming the missing texts."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.text()
            missing = [t for t in texts if t not in body]
            if not missing:
                return body
            if time.monotonic() > deadline:
                shot = self.screenshot(f"timeout-{int(time.time() * 1000)}.png")
                raise AssertionError(
                    f"{self._driver.current_url}: {missing!r} not on the page after "
                    f"{timeout:.0f} s (screenshot {shot}); the page said:\n{body[:2000]}")
            time.sleep(0.25)

    def open(self, url: str, *texts: str, timeout: float = 60) -> str:
        """Load ``url``, wait until every one of ``texts`` shows; return the body text."""
        self._driver.get(url)
        return self.wait_for(*texts, timeout=timeout)

    def click_text(self, text: str, timeout: float = 30) -> None:
        """Click the innermost visible element whose whole text is exactly ``text`` (a tab,
        link or card title), waiting up to ``timeout`` seconds for one to appear."""
        # string value, not text(): Vue splits an element's text with empty anchor nodes
        literal = f'"{text}"' if '"' not in text else f"'{text}'"
        xpath = f"//*[normalize-space(.)={literal} and not(*[normalize-space(.)={literal}])]"
        self._click(By.XPATH, xpath, text, timeout)

    def click(self, css: str, timeout: float = 30) -> None:
        """Click the first visible element matching the CSS selector ``css`` (icon-only
        buttons, e.g. MLflow's expander of a parent run's child runs)."""
        self._click(By.CSS_SELECTOR, css, css, timeout)

    def _click(self, by: str, selector: str, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for element in self._driver.find_elements(by, selector):
                try:
                    if element.is_displayed():
                        element.click()
                        return
                except WebDriverException:
                    continue  # covered or detached: try the next one, or again
            if time.monotonic() > deadline:
                shot = self.screenshot(f"click-{int(time.time() * 1000)}.png")
                raise AssertionError(f"nothing clickable matches {what!r} on "
                                     f"{self._driver.current_url} (screenshot {shot})")
            time.sleep(0.25)

    def screenshot(self, path: str | Path) -> Path:
        """Save a PNG of the viewport; a relative path goes under ``self.shots``."""
        target = Path(path)
        if not target.is_absolute():
            target = self.shots / target
        target.parent.mkdir(parents=True, exist_ok=True)
        self._driver.save_screenshot(str(target))
        return target
