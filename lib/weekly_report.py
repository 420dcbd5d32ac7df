"""The weekly new-leads report: one self-contained HTML page and a CSV for sales.

``write_report(folder, inp)`` writes ``index.html`` (``render_html``) and ``new_leads.csv``
(``write_csv``) into ``folder`` on the local file system.

Guarantees:

- The page opens offline and fetches nothing: the CSS, the sorting and filtering script and the
  chart (matplotlib, rendered to SVG and inlined) are all in the one file; it has no ``src`` and
  no ``href`` that leaves the page other than the leads' own ``tel:`` and ``mailto:`` links and the
  previous report's link, which must be relative (anything with a scheme or a host is refused).
  A Content-Security-Policy meta tag (``default-src 'none'``) makes the browser refuse any fetch
  all the same.
- Every value is escaped (Jinja2 autoescape); the lead data never reaches the script as code.
- The same input renders byte-identical HTML (fixed SVG hash salt, the chart's date is the run's
  ``finished_at``, every grouping sorted), so reports can be diffed and cached.
- Log lines carry counts and paths only: no emails, phone numbers, names or addresses.
- The CSV is UTF-8 with a header row, one row per new lead, the contact columns sales uses
  (``CSV_COLUMNS``) in that order; missing values are empty cells, dates are ISO ``yyyy-mm-dd``.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jinja2
import phonenumbers

from leadpipe.merge import COUNT_KINDS
from leadpipe.state import NEEDS_ATTENTION

log = logging.getLogger(__name__)

#: The columns of ``new_leads.csv``, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "lead_id",
    "source",
    "licensing_authority",
    "license_number",
    "company",
    "first_name",
    "last_name",
    "title",
    "phone",
    "email",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "county",
    "facility_type",
    "capacity",
    "ages_served",
    "first_seen",
)

#: Snapshot statuses that need someone's attention.
ATTENTION_STATUSES = NEEDS_ATTENTION
#: Per-source change counts shown in the headline, in order.
CHANGE_KINDS = COUNT_KINDS
#: Contact fields whose fill rate is reported: label -> the columns of which at least one must be filled.
CONTACT_FIELDS: dict[str, tuple[str, ...]] = {
    "phone": ("phone",),
    "email": ("email",),
    "address": ("address1",),
    "contact name": ("first_name", "last_name"),
}

HTML_NAME = "index.html"
CSV_NAME = "new_leads.csv"
UNKNOWN = "(unknown)"

_TEMPLATE = "weekly_report.html.j2"
_TEMPLATES = Path(__file__).resolve().parent / "templates"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SVG_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


@dataclass(frozen=True)
class ReportInput:
    """Everything one run's report shows.

    ``run``: the run's ``RunSummary.to_dict()``. ``new_leads``: the PostgreSQL ``leads`` rows this run
    delivered (canonical lead columns). ``history``: past runs, oldest first, this run last, each
    ``{run_id, finished_at, status, sources: {source: {new, removed}}}``. ``previous_report``: a
    relative URL of the previous run's report, or None.
    """

    run: dict
    new_leads: list[dict]
    history: list[dict]
    previous_report: str | None = None


@dataclass(frozen=True)
class ReportFiles:
    """The files ``write_report`` wrote."""

    html: Path
    csv: Path


def render_html(inp: ReportInput) -> str:
    """The report as one self-contained HTML page (see the module docstring for its guarantees)."""
    if inp.previous_report is not None and not _is_relative_url(inp.previous_report):
        raise ValueError("previous_report must be a relative URL (no scheme, no host)")
    run = inp.run
    sources = {
        str(sid): {kind: int((s or {}).get(kind) or 0) for kind in CHANGE_KINDS}
        for sid, s in sorted((run.get("sources") or {}).items())
    }
    snapshots = sorted(
        (
            {
                "source": _text(s.get("source")),
                "snapshot_date": _text(s.get("snapshot_date")),
                "status": _text(s.get("status")),
                "message": _text(s.get("message")),
            }
            for s in run.get("snapshots") or []
        ),
        key=lambda s: (s["source"], s["snapshot_date"]),
    )
    leads = sorted(inp.new_leads, key=lambda r: (_text(r.get("company")).casefold(), _text(r.get("lead_id"))))
    snapshot_dates = sorted({s["snapshot_date"] for s in snapshots if s["snapshot_date"]})
    finished_at = _text(run.get("finished_at"))
    context = {
        "run": {
            "run_id": _text(run.get("run_id")),
            "status": _text(run.get("status")) or "unknown",
            "input": _text(run.get("input")),
            "started_at": _text(run.get("started_at")),
            "finished_at": finished_at,
            "delivered": int(run.get("delivered") or 0),
            "errors": [_text(e) for e in run.get("errors") or []],
            "warnings": [_text(w) for w in run.get("warnings") or []],
        },
        "week": snapshot_dates[-1] if snapshot_dates else finished_at[:10],
        "snapshot_dates": snapshot_dates,
        "new_count": len(leads),
        "totals": {kind: sum(s[kind] for s in sources.values()) for kind in CHANGE_KINDS},
        "change_kinds": CHANGE_KINDS,
        "sources": sources,
        "authorities": _authorities(leads),
        "crosstab": _crosstab(leads),
        "chart_svg": _history_chart(inp.history, finished_at or None),
        "history": _history_rows(inp.history),
        "quality": _quality_rows(run.get("sources") or {}),
        "attention": [s for s in snapshots if s["status"] in ATTENTION_STATUSES],
        "snapshots": snapshots,
        "fill_rates": _fill_rates(leads),
        "contact_fields": list(CONTACT_FIELDS),
        "leads": [_lead_row(r) for r in leads],
        "previous_report": inp.previous_report,
    }
    return _environment().get_template(_TEMPLATE).render(context)


def write_csv(path: Path, new_leads: list[dict]) -> int:
    """Write ``new_leads`` to ``path`` as UTF-8 CSV with a header (``CSV_COLUMNS``); return the rows written."""
    path = Path(path)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in new_leads:
            writer.writerow([_text(row.get(col)) for col in CSV_COLUMNS])
    return len(new_leads)


def write_report(folder: Path, inp: ReportInput) -> ReportFiles:
    """Write ``index.html`` and ``new_leads.csv`` into ``folder`` (created when absent)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(html=folder / HTML_NAME, csv=folder / CSV_NAME)
    html = render_html(inp)
    rows = write_csv(files.csv, inp.new_leads)
    files.html.write_text(html, encoding="utf-8")
    log.info("weekly report: run %s, %d new leads, written to %s", inp.run.get("run_id"), rows, folder)
    return files


# ---------------------------------------------------------------------------------------------
# The page's content


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["pct"] = _pct
    env.filters["num"] = lambda n: f"{int(n or 0):,}"
    return env


def _text(value: Any) -> str:
    """One cell as text: None -> '', dates ISO, everything else ``str``, trimmed."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value).strip()


def _filled(row: dict, columns: tuple[str, ...]) -> bool:
    return any(_text(row.get(c)) for c in columns)


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _is_relative_url(url: str) -> bool:
    # Browsers drop tabs and newlines inside URLs ("java\nscript:" is "javascript:"): refuse every control
    # character and white space, then anything with a scheme or a host.
    return (
        bool(url) and not re.search(r"[\x00-\x20\x7f\\]", url) and not _SCHEME.match(url) and not url.startswith("//")
    )


def _authorities(leads: list[dict]) -> dict[str, str]:
    """source -> its licensing authority, as the leads name it."""
    out: dict[str, str] = {}
    for r in leads:
        source, authority = _text(r.get("source")), _text(r.get("licensing_authority"))
        if source and authority:
            out.setdefault(source, authority)
    return out


def _crosstab(leads: list[dict]) -> dict[str, Any]:
    """New leads per state (rows) and facility type (columns), with totals; busiest first."""
    cells = Counter((_text(r.get("state")) or UNKNOWN, _text(r.get("facility_type")) or UNKNOWN) for r in leads)
    by_state = Counter(_text(r.get("state")) or UNKNOWN for r in leads)
    by_type = Counter(_text(r.get("facility_type")) or UNKNOWN for r in leads)
    states = sorted(by_state, key=lambda s: (-by_state[s], s))
    types = sorted(by_type, key=lambda t: (-by_type[t], t))
    return {
        "states": states,
        "types": types,
        "cells": {s: {t: cells.get((s, t), 0) for t in types} for s in states},
        "by_state": dict(by_state),
        "by_type": dict(by_type),
    }


def _quality_rows(sources: dict[str, dict]) -> list[dict]:
    rows = []
    for sid in sorted(sources):
        s = sources[sid]
        read, rejected = int(s.get("rows_read") or 0), int(s.get("rows_rejected") or 0)
        reasons = s.get("rejected_by_reason") or {}
        rows.append(
            {
                "source": sid,
                "rows_read": read,
                "rows_loaded": int(s.get("rows_loaded") or 0),
                "rows_rejected": rejected,
                "rejected_share": rejected / read if read else None,
                "reasons": sorted(((k, int(v)) for k, v in reasons.items() if v), key=lambda kv: (-kv[1], kv[0])),
                "statuses": sorted((s.get("statuses") or {}).items()),
            }
        )
    return rows


def _fill_rates(leads: list[dict]) -> list[dict]:
    """Per source (and all sources together): the share of new leads with each contact field filled."""
    by_source: dict[str, list[dict]] = {}
    for r in leads:
        by_source.setdefault(_text(r.get("source")) or UNKNOWN, []).append(r)
    groups = [(sid, by_source[sid]) for sid in sorted(by_source)]
    if len(groups) > 1:
        groups.append(("all sources", leads))
    rows = []
    for name, rs in groups:
        rates = {label: sum(_filled(r, cols) for r in rs) / len(rs) for label, cols in CONTACT_FIELDS.items()}
        rows.append({"source": name, "leads": len(rs), "rates": rates, "total": name == "all sources"})
    return rows


def _lead_row(r: dict) -> dict[str, Any]:
    phone = _text(r.get("phone"))
    email = _text(r.get("email"))
    first_last = " ".join(p for p in (_text(r.get("first_name")), _text(r.get("last_name"))) if p)
    street = ", ".join(p for p in (_text(r.get("address1")), _text(r.get("address2"))) if p)
    capacity = _text(r.get("capacity"))
    return {
        "lead_id": _text(r.get("lead_id")),
        "company": _text(r.get("company")),
        "contact": first_last,
        "contact_sort": " ".join(p for p in (_text(r.get("last_name")), _text(r.get("first_name"))) if p),
        "title": _text(r.get("title")),
        "phone": phone,
        "phone_display": _phone_display(phone),
        "phone_href": _phone_href(phone),
        "email": email,
        "email_ok": bool(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email)),
        "street": street,
        "city": _text(r.get("city")),
        "state": _text(r.get("state")),
        "zip": _text(r.get("zip")),
        "county": _text(r.get("county")),
        "facility_type": _text(r.get("facility_type")),
        "license_type": _text(r.get("license_type")),
        "capacity": capacity,
        "ages_served": _text(r.get("ages_served")),
        "licensing_authority": _text(r.get("licensing_authority")),
        "license_number": _text(r.get("license_number")),
        "source": _text(r.get("source")),
        "first_seen": _text(r.get("first_seen")),
    }


def _phone_display(phone: str) -> str:
    """E.164 (as delivered) shown the way the country writes it: +17025550123 -> (702) 555-0123."""
    if not phone.startswith("+"):
        return phone
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return phone
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if number.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(number, fmt)


def _phone_href(phone: str) -> str | None:
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 7:
        return None
    return "tel:" + ("+" if phone.startswith("+") else "") + digits


def _history_rows(history: list[dict]) -> dict[str, Any]:
    sources = sorted({sid for h in history for sid in (h.get("sources") or {})})
    rows = []
    for h in history:
        per = h.get("sources") or {}
        rows.append(
            {
                "run_id": _text(h.get("run_id")),
                "finished_at": _text(h.get("finished_at")),
                "status": _text(h.get("status")),
                "counts": {
                    sid: (int((per.get(sid) or {}).get("new") or 0), int((per.get(sid) or {}).get("removed") or 0))
                    for sid in sources
                },
            }
        )
    return {"sources": sources, "rows": rows}


# ---------------------------------------------------------------------------------------------
# The chart


def _history_chart(history: list[dict], finished_at: str | None) -> str | None:
    """New (above the line) and removed (below) leads per source and run, as inline SVG markup."""
    if not history:
        return None
    import matplotlib
    import matplotlib.patches
    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = _history_rows(history)
    sources, rows = table["sources"], table["rows"]
    palette = ["#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777"]
    style = {
        "svg.hashsalt": "leadpipe-weekly-report",
        "svg.fonttype": "path",
        "font.family": "DejaVu Sans",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    labelled = len(rows) * max(len(sources), 1) <= 48  # numbers on the bars while they fit
    with matplotlib.rc_context(style):
        fig = Figure(figsize=(min(16.0, max(10.0, 0.6 * len(rows) + 3)), 3.8))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        n = max(len(sources), 1)
        bar = 0.8 / n
        top = bottom = 0
        for i, sid in enumerate(sources):
            color = palette[i % len(palette)]
            xs = [k + (i - (n - 1) / 2) * bar for k in range(len(rows))]
            new = [r["counts"][sid][0] for r in rows]
            removed = [-r["counts"][sid][1] for r in rows]
            top, bottom = max([top, *new]), min([bottom, *removed])
            up = ax.bar(xs, new, width=bar * 0.92, color=color, label=sid)
            down = ax.bar(xs, removed, width=bar * 0.92, color=color, alpha=0.35, hatch="////", edgecolor=color)
            if labelled:
                ax.bar_label(up, labels=[f"{v:,}" if v else "" for v in new], padding=2, fontsize=7.5)
                ax.bar_label(down, labels=[f"{-v:,}" if v else "" for v in removed], padding=2, fontsize=7.5)
        # A first load dwarfs the weekly changes: a log scale past 10 keeps both readable.
        ax.set_yscale("symlog", linthresh=10, linscale=0.8)
        ax.set_ylim(-max(20, -bottom * 4), max(20, top * 4))
        ax.axhline(0, color="#334155", linewidth=0.8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([_run_label(r) for r in rows])
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{abs(v):,.0f}"))
        ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylabel("▼ removed    new ▲\n(log scale)")
        ax.grid(axis="y", color="#e2e8f0", linewidth=0.6)
        ax.set_axisbelow(True)
        handles, _ = ax.get_legend_handles_labels()
        handles.append(
            matplotlib.patches.Patch(
                facecolor="#94a3b8", alpha=0.35, hatch="////", edgecolor="#64748b", label="removed"
            )
        )
        ax.legend(handles=handles, loc="lower left", frameon=False, ncols=len(handles), bbox_to_anchor=(0, 1.0))
        fig.tight_layout()
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": finished_at, "Creator": None})
    return _inline_svg(buf.getvalue())


def _run_label(row: dict) -> str:
    label = row["finished_at"][:10] or row["run_id"][:15]
    if row["status"] and row["status"] != "succeeded":
        label += f"\n({row['status']})"
    return label


def _inline_svg(svg: str) -> str:
    """matplotlib's SVG document as an element to inline in HTML: no XML prologue, DOCTYPE,
    RDF metadata or namespace declarations (HTML's parser knows SVG)."""
    svg = _SVG_PROLOGUE.sub("", svg, count=1)
    svg = _SVG_METADATA.sub("", svg)
    svg = _SVG_XMLNS.sub("", svg)
    return svg.strip()
