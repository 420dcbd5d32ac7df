"""The weekly report in a real browser: Debian's headless Chromium, driven by Playwright.

The page is opened from ``file://`` with every request that is neither ``file:`` nor ``data:``
recorded and aborted: the report must fetch nothing. What is checked is read from the rendered
page (its text and the DOM after the script ran), not from the HTML source. Playwright drives the
system browser (``/usr/bin/chromium``, ``make browsers``); its own browser downloads are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.report_fixture import NEW_LEADS, SCRIPT_COMPANY, fixture_database, write_fixture_report

pytestmark = pytest.mark.integration


@dataclass
class Opened:
    page: Any
    outside: list[str]  # every request that was neither file: nor data: (each was aborted)
    errors: list[str]  # uncaught script errors
    folder: Path


def open_page(browser, url: str | None, folder: Path) -> Opened:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")
    opened = Opened(page=None, outside=[], errors=[], folder=folder)

    def guard(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            opened.outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    opened.page = context.new_page()
    opened.page.on("pageerror", lambda e: opened.errors.append(str(e)))
    if url:
        opened.page.goto(url, wait_until="load")
        opened.page.wait_for_load_state("networkidle")
    return opened


@pytest.fixture(scope="module")
def fixture_db(pg_server):
    with fixture_database(pg_server) as db:
        yield db


@pytest.fixture()
def report(tmp_path, browser, fixture_db):
    """The fixture report, written to a temporary folder and opened from file://."""
    files = write_fixture_report(fixture_db, tmp_path / "report")
    opened = open_page(browser, files.html.as_uri(), tmp_path)
    yield opened
    opened.page.context.close()


def column(page, header: str) -> list[str]:
    """The visible cells of one column of the leads table, top to bottom."""
    headers = [h.strip() for h in page.locator("#leads thead th").all_inner_texts()]
    i = next(k for k, h in enumerate(headers) if h.startswith(header))
    return [
        page.locator("#leads tbody tr").nth(k).locator("td").nth(i).inner_text().strip()
        for k in range(page.locator("#leads tbody tr").count())
        if page.locator("#leads tbody tr").nth(k).is_visible()
    ]


def visible_ids(page) -> list[str]:
    rows = page.locator("#leads tbody tr")
    return [rows.nth(k).get_attribute("data-lead-id") for k in range(rows.count()) if rows.nth(k).is_visible()]


def test_the_network_guard_sees_what_a_page_fetches(browser, tmp_path):
    opened = open_page(browser, None, tmp_path)
    try:
        opened.page.set_content(
            '<img src="http://192.0.2.1/pixel.png"><link rel="stylesheet" href="https://192.0.2.1/a.css">'
        )
        opened.page.wait_for_load_state("networkidle")
        assert sorted(opened.outside) == ["http://192.0.2.1/pixel.png", "https://192.0.2.1/a.css"]
    finally:
        opened.page.context.close()


def test_the_report_renders_offline_and_fetches_nothing(report):
    page = report.page
    shot = report.folder / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a rendered page with a chart and tables, not a blank one
    assert report.outside == []
    assert report.errors == []
    assert page.locator("#trend svg").is_visible()
    assert page.locator("#trend svg").bounding_box()["height"] > 100


def test_the_page_shows_the_count_and_every_new_lead(report):
    page = report.page
    assert page.inner_text("#new-count").strip() == str(len(NEW_LEADS))
    assert sorted(visible_ids(page)) == sorted(r["lead_id"] for r in NEW_LEADS)
    companies = column(page, "Company")
    assert any(c.startswith("Desert Sun Preschool") for c in companies)
    assert any(c.startswith(SCRIPT_COMPANY) for c in companies)  # shown as text, never run
    assert page.locator("#leads script").count() == 0
    row = page.locator('#leads tr[data-lead-id="nv_dpbh-dddddddddddddddddddddddd"]')
    assert row.locator('a[href="tel:+17025550104"]').inner_text() == "(702) 555-0104"
    assert row.locator('a[href="mailto:ana@desertsun.example"]').is_visible()
    assert "NV-77" in row.inner_text() and "Nevada Division of Public and Behavioral Health" in row.inner_text()
    assert "held" in page.inner_text("#quality") and "ok_dhs" in page.inner_text("#quality")
    assert page.locator("#previous-report").get_attribute("href") == "../20230630T120000Z-22222222/index.html"
    assert report.outside == [] and report.errors == []


def test_clicking_a_header_sorts_numbers_as_numbers(report):
    page = report.page
    before = column(page, "Capacity")
    page.locator("#leads thead th", has_text="Capacity").locator("button").click()
    ascending = column(page, "Capacity")
    assert ascending != before
    assert ascending == ["8", "12", "45", "120", ""]  # numeric, not "12" < "120" < "8"; blanks last
    page.locator("#leads thead th", has_text="Capacity").locator("button").click()
    assert column(page, "Capacity") == ["120", "45", "12", "8", ""]
    assert page.locator("#leads thead th", has_text="Capacity").get_attribute("aria-sort") == "descending"

    page.locator("#leads thead th", has_text="Company").locator("button").click()
    companies = [c.splitlines()[0] for c in column(page, "Company")]
    assert companies == sorted(companies, key=str.casefold)
    assert report.errors == []


def test_typing_in_the_filter_hides_the_rows_that_do_not_match(report):
    page = report.page
    page.locator("#filter").fill("las vegas")
    assert visible_ids(page) == ["nv_dpbh-dddddddddddddddddddddddd"]
    assert page.inner_text("#shown-count") == "1"
    hidden = page.locator('#leads tr[data-lead-id="tx_hhs-aaaaaaaaaaaaaaaaaaaaaaaa"]')
    assert hidden.count() == 1 and not hidden.is_visible()

    page.locator("#filter").fill("tx home")  # every word must match
    assert visible_ids(page) == ["tx_hhs-bbbbbbbbbbbbbbbbbbbbbbbb"]
    page.locator("#filter").fill("5125550101")  # the phone's digits, though it shows as (512) 555-0101
    assert visible_ids(page) == ["tx_hhs-aaaaaaaaaaaaaaaaaaaaaaaa"]
    page.locator("#filter").fill("no such lead")
    assert visible_ids(page) == [] and page.inner_text("#shown-count") == "0"
    page.locator("#filter").fill("")
    assert len(visible_ids(page)) == len(NEW_LEADS)
    assert report.errors == []
