"""report.html and the leaderboard in a real headless Chromium (Debian's, driven by its chromedriver).

What only a browser can show: the page's script runs under its own Content-Security-Policy without a
console error, the sample browser's filter selects the right samples, and a prediction made of
markup is displayed as text and never executed. CI installs chromium and chromium-driver (.ci/run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
if not CHROMIUM.exists():
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402
from test_report_html import GOOD, HOSTILE_NAME, INJECTED, WORSE, make_run, rename_row  # noqa: E402

from aigc_eval.report.html import write_run_report  # noqa: E402
from aigc_eval.report.leaderboard import build_leaderboard  # noqa: E402
from aigc_eval.report.tables import format_score  # noqa: E402
from aigc_eval.run_folder import RunFolder  # noqa: E402


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    assert CHROMEDRIVER.exists(), (
        "chromium is installed but chromedriver is not: apt-get install chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1800",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver: webdriver.Chrome, path: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.as_uri())
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")


def full_page_screenshot(driver: webdriver.Chrome, path: Path) -> None:
    """The whole page in one picture, to look at while changing the report."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 140, 12000))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1800)


def console_problems(driver: webdriver.Chrome) -> list[dict[str, object]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_report_in_chromium(browser: webdriver.Chrome, tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "runs", {"good": GOOD, "worse": WORSE})
    report = write_run_report(run_dir)
    open_page(browser, report)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sb-list .sample"))

    assert browser.execute_script("return window.__pwned") is None
    assert console_problems(browser) == []

    for entry in RunFolder.open(run_dir).read_record().results:
        for metric, value in entry.metrics.items():
            cell = browser.find_element(
                By.CSS_SELECTOR,
                f'#results-table td[data-model="{entry.model}"][data-metric="{metric}"] .score',
            )
            assert cell.text == format_score(value.score), (entry.model, metric)

    # The prediction made of markup is on the page as literal text, and no element came of it.
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".pred-text")]
    Select(browser.find_element(By.ID, "sb-diff")).select_by_value("off")
    texts += [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".pred-text")]
    assert INJECTED in texts
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []

    # Filter: the samples where 'worse' (B) scores lower BLEU than 'good' (A).
    samples = RunFolder.open(run_dir).read_samples()
    bleu = {(s.model, s.id): s.scores["bleu"] for s in samples}
    expected = [s.id for s in samples if s.model == "good" and bleu[("worse", s.id)] < bleu[("good", s.id)]]
    assert 0 < len(expected) < len(GOOD)
    metric = Select(browser.find_element(By.ID, "sb-metric"))
    metric.select_by_visible_text("bleu ↑")
    Select(browser.find_element(By.ID, "sb-a")).select_by_visible_text("good")
    Select(browser.find_element(By.ID, "sb-b")).select_by_visible_text("worse")
    Select(browser.find_element(By.ID, "sb-filter")).select_by_value("worse")
    shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#sb-list .sample")]
    assert shown == expected
    assert browser.find_element(By.ID, "sb-count").text.startswith(f"{len(expected)} of {len(GOOD)} samples")

    search = browser.find_element(By.ID, "sb-search")
    search.send_keys("umbrella")
    shown = [e.get_attribute("data-id") for e in browser.find_elements(By.CSS_SELECTOR, "#sb-list .sample")]
    assert shown == ["s2"]
    search.send_keys(Keys.CONTROL, "a", Keys.DELETE)
    Select(browser.find_element(By.ID, "sb-filter")).select_by_value("all")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#sb-list .sample")) == len(GOOD)

    assert browser.execute_script("return window.__pwned") is None
    assert console_problems(browser) == []
    full_page_screenshot(browser, tmp_path / "report.png")


def test_leaderboard_in_chromium(browser: webdriver.Chrome, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    name = HOSTILE_NAME
    rename_row(
        make_run(runs / "a", {"good": WORSE, "evil": WORSE}, finished="2026-01-01T00:00:00+00:00"),
        "evil",
        name,
    )
    latest = make_run(runs / "b", {"good": GOOD, "evil": WORSE}, finished="2026-01-02T00:00:00+00:00")
    rename_row(latest, "evil", name)
    write_run_report(latest)
    board = tmp_path / "leaderboard.html"
    board.write_text(build_leaderboard(runs, "html", output=board), encoding="utf-8")
    open_page(browser, board)

    assert browser.execute_script("return window.__pwned") is None
    assert console_problems(browser) == []
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody th")]
    assert labels == ["good", name]
    for entry in RunFolder.open(latest).read_record().results:
        label = json.dumps(entry.model)
        cell = browser.find_element(By.CSS_SELECTOR, f'td[data-setting={label}][data-metric="bleu"] a')
        assert cell.text == format_score(entry.metrics["bleu"].score)
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.leaderboard svg.sparkline")) > 0

    # Links open the run's report; sorting by a column reorders the rows.
    link = browser.find_element(By.CSS_SELECTOR, 'td[data-setting="good"][data-metric="bleu"] a')
    assert link.get_attribute("href") == (latest / "report.html").as_uri()
    header = browser.find_element(By.CSS_SELECTOR, 'table.leaderboard th[data-col="1"]')
    first = "table.leaderboard tbody tr:first-child th"
    header.click()  # ascending BLEU: the worse outputs first
    assert browser.find_element(By.CSS_SELECTOR, first).text == name
    header.click()
    assert browser.find_element(By.CSS_SELECTOR, first).text == "good"
    full_page_screenshot(browser, tmp_path / "leaderboard.png")
    assert console_problems(browser) == []
