"""The weekly report's HTML, CSV and files, without a browser (tests/test_report_browser.py has one).

The leads are read from a real PostgreSQL (tests/report_fixture.py), as the job reads them.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from datetime import date
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from leadpipe.run_report import copy_csv, publish
from leadpipe.state import RunSummary
from leadpipe.weekly_report import CSV_COLUMNS, REPORT_TABLE_ROWS, ReportFiles, _text, render_html
from tests.report_fixture import (
    NEW_LEADS,
    PREVIOUS_REPORT,
    RUN,
    RUN_ID,
    SCHEMA,
    SCRIPT_COMPANY,
    TABLE,
    URL_IN_DATA,
    fixture_database,
    load,
    report_input,
    write_fixture_report,
)


class Page(HTMLParser):
    """The parts of a page the tests look at: every tag with its attributes, and tables' cell texts."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.texts: dict[str, str] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._open_ids: list[tuple[str, str]] = []  # (tag, id) of elements with an id still open
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        if a.get("id") and tag not in ("table", "input", "svg"):
            self._open_ids.append((tag, a["id"]))
            self.texts[a["id"]] = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, i in self._open_ids:
            self.texts[i] += data


@pytest.fixture(scope="module")
def fixture_db(pg_server):
    with fixture_database(pg_server) as db:
        yield db


@pytest.fixture(scope="module")
def html(fixture_db) -> str:
    return render_html(report_input(fixture_db))


@pytest.fixture(scope="module")
def page(html) -> Page:
    return Page(html)


def test_the_headline_counts_new_leads_per_state_and_facility_type(page):
    assert page.texts["new-count"] == "5"
    assert page.tables["by-state-type"] == [
        ["State", "Center", "Home", "Total"],
        ["TX", "2", "1", "3"],
        ["NV", "1", "1", "2"],
        ["Total", "3", "2", "5"],
    ]
    changes = {row[0]: row[1:] for row in page.tables["changes"][1:]}
    # new, changed, returned, restandardized, removed, unchanged
    assert changes["tx_hhsTexas Health and Human Services"] == ["3", "11", "1", "5", "2", "968"]
    assert changes["nv_dpbhNevada Division of Public and Behavioral Health"] == ["2", "4", "0", "0", "1", "201"]
    assert page.texts["removed-count"] == "3" and page.texts["changed-count"] == "15"


def test_the_data_quality_section_shows_rows_quarantine_held_sources_and_fill_rates(page, html):
    rows = {row[0]: row[1:] for row in page.tables["rows"][1:]}
    assert rows["tx_hhs"] == ["1,000", "990", "10 (1%)", "duplicate_business_key: 7malformed_record: 3"]
    assert rows["ok_dhs"][:3] == ["40", "40", "0"]
    assert 'class="alert held"' in html
    assert "ok_dhs 2023-07-07 held: 40 rows, fewer than 0.5" in page.texts["quality"]
    fill = {row[0]: row[1:] for row in page.tables["fill-rates"][1:]}
    # new leads, phone, email, address (address1), contact name (first or last name)
    assert fill["nv_dpbh"] == ["2", "50%", "50%", "100%", "100%"]
    assert fill["tx_hhs"] == ["3", "67%", "67%", "67%", "67%"]
    assert fill["all sources"] == ["5", "60%", "60%", "80%", "80%"]


def test_the_leads_table_has_every_lead_with_its_license_and_contact_links(page):
    leads = [a for tag, a in page.tags if tag == "tr" and "data-lead-id" in a]
    assert sorted(a["data-lead-id"] for a in leads) == sorted(r["lead_id"] for r in NEW_LEADS)
    hrefs = {a["href"] for tag, a in page.tags if tag == "a"}
    assert {"tel:+15125550101", "tel:+17025550104", "mailto:ana@desertsun.example"} <= hrefs
    assert "mailto:o'brien&co@example.com" in hrefs  # escaped in the source, the same value once parsed
    body = page.tables["leads"][1:]
    desert = next(r for r in body if r[0].startswith("Desert Sun Preschool"))
    assert "(702) 555-0104" in desert
    assert "NV-77Nevada Division of Public and Behavioral Health" in desert
    assert ("input", {"id": "filter"}) in [(t, {"id": a.get("id")}) for t, a in page.tags if t == "input"]


def test_the_page_references_nothing_outside_itself(page, html):
    assert not [a for tag, a in page.tags if "src" in a or "srcset" in a]
    assert not [tag for tag, a in page.tags if tag in ("link", "iframe", "object", "embed", "img", "base", "form")]
    links = [a[name] for _, a in page.tags for name in ("href", "xlink:href", "action", "poster") if name in a]
    assert links
    outside = [
        u for u in links if not u.startswith(("#", "tel:", "mailto:")) and re.match(r"[a-z][a-z0-9+.-]*:|//", u, re.I)
    ]
    assert outside == []  # in-page fragments, tel:, mailto: and relative links only
    # The only web address anywhere is the one in the lead data, shown as text.
    assert re.findall(r"https?://[^\s<\"']+", html) == [URL_IN_DATA]
    assert "@import" not in html and re.findall(r"url\((?!#)", html) == []  # the chart's own clip paths only
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert html.count("<svg") == 1


def test_every_value_is_escaped(html, page):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert SCRIPT_COMPANY not in html
    assert html.count("<script") == 1  # the page's own sorting and filtering script
    assert any(row[0].startswith(SCRIPT_COMPANY) for row in page.tables["leads"][1:])


def test_run_details_and_the_previous_report_link(page):
    assert page.texts["run-id"] == RUN_ID
    assert RUN["input"] in page.texts["run"] and "2023-07-07" in page.texts["run"]
    assert [a["href"] for t, a in page.tags if t == "a" and a.get("id") == "previous-report"] == [PREVIOUS_REPORT]
    snapshots = page.tables["snapshots"]
    assert snapshots[2][:3] == ["ok_dhs", "2023-07-07", "held"]


def test_the_history_chart_is_inline_svg_and_the_page_is_deterministic(html, page, fixture_db):
    assert '<div class="chart"' in html and "<svg" in html
    assert [row[0] for row in page.tables["history"][1:]] == [h["run_id"] for h in report_input(fixture_db).history]
    assert render_html(report_input(fixture_db)) == html


def test_no_previous_report_no_link_and_urls_with_a_scheme_are_refused(fixture_db):
    page = Page(render_html(report_input(fixture_db, previous_report=None)))
    assert not [a for t, a in page.tags if a.get("id") == "previous-report"]
    for bad in (
        "javascript:alert(1)",
        "https://reports.example/x.html",
        "//evil.example/x",
        " JavaScript:x",
        "java\nscript:x",
        "/\\evil.example",
    ):
        with pytest.raises(ValueError, match="relative URL"):
            render_html(report_input(fixture_db, previous_report=bad))


def test_an_empty_run_renders(fixture_db):
    run = {"run_id": "r1", "status": "failed", "errors": ["PostgreSQL unreachable"], "sources": {}, "snapshots": []}
    page = Page(render_html(report_input(fixture_db, run=run, new_leads=[], history=[])))
    assert page.texts["new-count"] == "0"
    assert page.tables["leads"] == [
        ["Company", "Contact", "Phone", "Email", "Address", "State", "Type", "Capacity", "Ages served", "License"]
    ]
    assert "No run history yet." in page.texts["trend"]
    assert "PostgreSQL unreachable" in page.texts["run"]


def write_csv(db, path: Path, run_id: str = RUN_ID) -> int:
    """The run's new_leads.csv, streamed from PostgreSQL as the job writes it."""
    with db.connect() as conn, path.open("wb") as f:
        return copy_csv(conn, SCHEMA, TABLE, run_id, f)


def test_write_csv_writes_the_contact_columns_with_a_header(tmp_path, db):
    path = tmp_path / "leads.csv"
    extra = dict(NEW_LEADS[0], lead_id="tx_hhs-ffffffffffffffffffffffff", company='Guardería Niños, "Sol"', phone=None)
    load(db, [*NEW_LEADS, extra])
    assert write_csv(db, path) == 6
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0][:5] == ["lead_id", "source", "licensing_authority", "license_number", "company"]
    assert len(rows) == 7
    assert rows[1:] == sorted(rows[1:], key=lambda r: (r[1], r[0]))  # by source, then lead_id
    first = dict(zip(rows[0], next(r for r in rows if r[0] == "tx_hhs-aaaaaaaaaaaaaaaaaaaaaaaa"), strict=True))
    assert first == {
        "lead_id": "tx_hhs-aaaaaaaaaaaaaaaaaaaaaaaa",
        "source": "tx_hhs",
        "licensing_authority": "Texas Health and Human Services",
        "license_number": "TX-1001",
        "company": "Bright Horizons Austin",
        "first_name": "Maria",
        "last_name": "Lopez",
        "title": "Director",
        "phone": "+15125550101",
        "email": "maria@brighthorizons.example",
        "address1": "100 Congress Ave",
        "address2": "",
        "city": "Austin",
        "state": "TX",
        "zip": "78701",
        "county": "Travis",
        "facility_type": "Center",
        "capacity": "120",
        "ages_served": "Infant, Toddler, Pre-K",
        "first_seen": "2023-07-07",
    }
    last = dict(zip(rows[0], rows[-1], strict=True))
    assert last["company"] == 'Guardería Niños, "Sol"' and last["phone"] == ""
    assert write_csv(db, tmp_path / "none.csv", "no-such-run") == 0
    assert (tmp_path / "none.csv").read_text(encoding="utf-8").splitlines() == [",".join(CSV_COLUMNS)]


def test_write_report_writes_both_files_into_a_new_folder_and_logs_no_pii(tmp_path, caplog, fixture_db):
    folder = tmp_path / "reports" / RUN_ID
    with caplog.at_level(logging.DEBUG, logger="leadpipe.weekly_report"):
        files = write_fixture_report(fixture_db, folder)
    assert files == ReportFiles(html=folder / "index.html", csv=folder / "new_leads.csv")
    assert files.html.read_text(encoding="utf-8") == render_html(report_input(fixture_db))
    assert len(files.csv.read_text(encoding="utf-8").splitlines()) == 1 + len(NEW_LEADS)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "5 new leads" in logged
    for lead in NEW_LEADS:
        for column in ("company", "first_name", "last_name", "phone", "email", "address1"):
            if lead[column]:
                assert lead[column] not in logged


def test_the_template_ships_with_the_package():
    assert (resources.files("leadpipe") / "templates" / "weekly_report.html.j2").is_file()


def test_the_csv_is_byte_for_byte_what_the_csv_module_wrote(tmp_path, db):
    """new_leads.csv comes from PostgreSQL's COPY; it is what the report wrote with Python's csv module
    before: \\r\\n line ends, quotes only where needed, text trimmed as str.strip() trims, blank and
    missing values empty, ISO dates, numbers as Python prints them."""
    odd = [
        "  padded\t",
        "\u00a0no-break spaces\u3000",
        "   ",
        "",
        'a "quote" inside',
        "a comma, inside",
        "a line\nbreak",
        "a crlf\r\nbreak",
        "\\.",
        "\\N",
        "NULL",
        "#hash",
        "Ünïcödé 😀",
        "=1+1",
    ]
    leads = []
    for i, value in enumerate(odd):
        lead = dict(NEW_LEADS[i % len(NEW_LEADS)], lead_id=f"tx_hhs-{i:024d}", source="tx_hhs")
        lead.update({c: value for c in ("company", "first_name", "address2", "city", "ages_served")})
        lead.update(
            capacity=[None, 0, -3, 2147483647][i % 4], first_seen=[None, date(2023, 7, 7), date(999, 1, 2)][i % 3]
        )
        leads.append(lead)
    load(db, leads, "odd-run")
    path = tmp_path / "odd.csv"
    assert write_csv(db, path, "odd-run") == len(odd)
    want = io.StringIO()
    writer = csv.writer(want)
    writer.writerow(CSV_COLUMNS)
    for lead in sorted(leads, key=lambda r: (r["source"], r["lead_id"])):
        writer.writerow([_text(lead.get(c)) for c in CSV_COLUMNS])
    assert path.read_bytes() == want.getvalue().encode("utf-8")


def test_a_run_that_fits_the_table_shows_every_lead_and_no_truncation_line(page):
    assert REPORT_TABLE_ROWS == 2000
    assert "table-truncated" not in page.texts
    assert page.texts["shown-count"] == "5"


def test_a_run_with_more_leads_than_the_table_holds_shows_the_first_and_the_csv_has_all(tmp_path, db):
    companies = ["alpha Care", "Bravo Kids", "bravo kids", None, "Zulu", "éclair", "Echo"]  # shown: None, alpha, bravo
    leads = [
        dict(
            NEW_LEADS[i % len(NEW_LEADS)],
            lead_id=f"{NEW_LEADS[i % len(NEW_LEADS)]['source']}-{i:024d}",
            company=companies[i % len(companies)],
        )
        for i in range(40)
    ]
    load(db, leads, "big-run")
    load(db, NEW_LEADS, "other-run")  # another run's leads are in neither the page nor the CSV
    state = RunSummary(
        run_id="big-run",
        warehouse=str(tmp_path / "warehouse"),
        status="succeeded",
        started_at="2023-07-14T12:00:00+00:00",
        finished_at="2023-07-14T12:05:00+00:00",
    )
    files = publish(db, SCHEMA, TABLE, state, str(tmp_path / "reports"), table_rows=20)

    page = Page(files.html.read_text(encoding="utf-8"))
    assert page.texts["table-truncated"] == "Showing the first 20 of 40 new leads; all of them are in new_leads.csv"
    assert page.texts["new-count"] == "40" and page.texts["shown-count"] == "20"
    first = sorted(leads, key=lambda r: ((r["company"] or "").casefold(), r["lead_id"]))[:20]
    shown = [a["data-lead-id"] for t, a in page.tags if t == "tr" and "data-lead-id" in a]
    assert shown == [r["lead_id"] for r in first]
    # the counts are over every lead of the run, not the table's
    assert page.tables["by-state-type"][-1] == ["Total", "24", "16", "40"]
    assert {row[0]: row[1] for row in page.tables["fill-rates"][1:]} == {
        "nv_dpbh": "16",
        "tx_hhs": "24",
        "all sources": "40",
    }

    with files.csv.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["lead_id"] for r in rows] == [
        r["lead_id"] for r in sorted(leads, key=lambda r: (r["source"], r["lead_id"]))
    ]
    assert len(rows) == 40 and {r["company"] for r in rows} == {c or "" for c in companies}
