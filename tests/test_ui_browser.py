"""The web view in a real browser: Debian's Chromium, driven through chromedriver.

A real ``duron ui`` process serves a SQLite store whose jobs a real worker process
runs (tests/ui_jobs.py). The browser opens the list, filters it, opens a job and
its timeline, and watches a running job's page change as the job runs, with no
reload; with ``--allow-actions`` it completes a future through the confirmation.

.ci/run installs ``chromium`` and ``chromium-driver``: in CI (``CI=true``) a
missing browser fails these tests instead of skipping them. Selenium Manager is
kept offline and given both paths, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
import ui_jobs

from duron.contrib.storage import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TESTS = Path(__file__).parent

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing in CI: .ci/run installs "
            "chromium and chromium-driver"
        )
    pytest.skip(
        f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="duron-ui-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1300,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _fill(db: Path) -> None:
    async def fill() -> None:
        store = SQLiteStore(db)
        await store.submit(ui_jobs.order.options(job_id="order-1"), "order-1", 3)
        await store.submit(ui_jobs.broken.options(job_id="broken-1"), "bad input")
        await store.submit(ui_jobs.stepper.options(job_id="stepper-1"), 3)
        await store.close()

    anyio.run(fill)


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    """A store with three jobs and a worker process running them."""
    path = tmp_path / "jobs.db"
    _fill(path)
    worker = subprocess.Popen(
        [sys.executable, str(TESTS / "ui_jobs.py"), str(path)], env=_env()
    )
    try:
        yield path
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _serve(db: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "duron", "ui", f"sqlite:///{db}", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
    assert match is not None, line
    return proc, match[1]


@pytest.fixture
def read_only(db: Path) -> Iterator[str]:
    proc, url = _serve(db)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def with_actions(db: Path) -> Iterator[str]:
    proc, url = _serve(db, "--allow-actions", "--import", "ui_jobs")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(driver: WebDriver, what: str, check: object, timeout: float = 20) -> None:
    WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: check(d),  # type: ignore[operator]
        message=what,
    )


def _rows(driver: WebDriver) -> list[str]:
    # Read in one script: the live refresh may replace the rows at any moment.
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#jobs tbody tr'), "
        "r => r.dataset.job)"
    )
    return [str(r) for r in rows]


def _text(driver: WebDriver, css: str) -> str:
    text = driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
        css,
    )
    return str(text).strip()


def test_list_filter_job_and_timeline(browser: WebDriver, read_only: str) -> None:
    browser.get(read_only)
    _wait(
        browser,
        "the list shows the three jobs",
        lambda d: sorted(_rows(d)) == ["broken-1", "order-1", "stepper-1"],
    )
    _wait(browser, "broken-1 fails", lambda d: "failed 1" in _text(d, "#counts"))
    Select(browser.find_element(By.NAME, "status")).select_by_value("failed")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    _wait(browser, "only the failed job", lambda d: _rows(d) == ["broken-1"])
    assert "status=failed" in browser.current_url
    browser.find_element(By.LINK_TEXT, "broken-1").click()
    _wait(browser, "the job's page", lambda d: _text(d, "#job-id") == "broken-1")
    assert _text(browser, "#job-status") == "failed"
    assert _text(browser, "#outcome summary") == "ValueError: bad input"
    first = browser.find_element(By.ID, "op-0")
    assert "charge(item=0)" in first.text
    bar = first.find_element(By.CSS_SELECTOR, ".track .bar, .track .mark")
    assert bar.size["width"] >= 2  # drawn on the axis
    # The payload opens on a click.
    inputs = first.find_element(By.CSS_SELECTOR, "details.payload")
    assert inputs.get_attribute("open") is None
    inputs.find_element(By.TAG_NAME, "summary").click()
    assert inputs.get_attribute("open") == "true"
    assert '"item": 0' in inputs.find_element(By.TAG_NAME, "pre").text
    assert browser.find_elements(By.ID, "actions") == []  # read-only by default


def test_running_job_updates_live_and_an_action_is_confirmed(
    browser: WebDriver, with_actions: str, db: Path
) -> None:
    browser.get(with_actions + "job?id=stepper-1")
    _wait(
        browser,
        "stepper-1 waits for its first future",
        lambda d: "step-0" in _text(d, "#waiting"),
    )
    browser.execute_script("window.notReloaded = true")
    # Complete the first future through the page: a form, then a confirmation.
    form = browser.find_element(By.ID, "action-complete")
    form.find_element(By.NAME, "future").send_keys("0")
    form.find_element(By.NAME, "result").send_keys("5")
    form.find_element(By.TAG_NAME, "button").click()
    _wait(browser, "the confirmation", lambda d: _text(d, "#confirm-what") != "")
    assert _text(browser, "#confirm-what") == (
        "Complete future 0 of job stepper-1 with result 5?"
    )
    browser.find_element(By.ID, "confirm-yes").click()
    _wait(
        browser,
        "the notice",
        lambda d: _text(d, "#notice") == "future 0 completed; the job records it",
    )
    _wait(
        browser,
        "the job charges 5 and waits for step-1",
        lambda d: (
            "charge(item=5)" in _text(d, "#ops") and "step-1" in _text(d, "#waiting")
        ),
    )
    # The next input comes from elsewhere: the open page follows, without a reload.
    browser.execute_script("window.notReloaded = true")
    refreshed = int(
        browser.execute_script(
            "return +document.getElementById('live').dataset.refreshed || 0"
        )
    )

    async def complete(future: str, value: int) -> None:
        store = SQLiteStore(db, create=False)
        try:
            await store.complete_future("stepper-1", future, result=value)
        finally:
            await store.close()

    anyio.run(complete, "2", 7)
    _wait(
        browser,
        "the page shows charge(item=7) without a reload",
        lambda d: (
            "charge(item=7)" in _text(d, "#ops") and "step-2" in _text(d, "#waiting")
        ),
    )
    assert browser.execute_script("return window.notReloaded") is True
    assert (
        int(
            browser.execute_script(
                "return +document.getElementById('live').dataset.refreshed"
            )
        )
        > refreshed
    )
    anyio.run(complete, "4", 9)
    _wait(
        browser, "the job completes", lambda d: _text(d, "#job-status") == "completed"
    )
    assert browser.execute_script("return window.notReloaded") is True
    assert _text(browser, "#outcome summary") == "21"
    assert browser.find_elements(By.ID, "waiting") == []
