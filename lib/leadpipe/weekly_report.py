"""The weekly new-leads report: one self-contained HTML page and a CSV for sales.

``write_report(folder, inp, write_csv)`` writes ``index.html`` (``render_html``) and
``new_leads.csv`` into ``folder`` on the local file system. The page is rendered from what
``inp`` holds: the run's counts and aggregates, computed by the caller where the leads are
(run_report.py: PostgreSQL), and at most ``REPORT_TABLE_ROWS`` leads for its table. The CSV's
bytes come from ``write_csv`` (run_report.py streams them from PostgreSQL); this module never
holds a run's leads beyond the table's.

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
- The leads table shows the leads ``inp`` carries, by company (case-folded) then lead_id; when the
  run delivered more than that, a line above the table says how many of how many are shown and
  that ``new_leads.csv`` has them all.
- Log lines carry counts and paths only: no emails, phone numbers, names or addresses.
"""

from __future__ import annotations

import functools
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

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

#: The most leads the page's table shows; new_leads.csv has every one.
REPORT_TABLE_ROWS = 2000

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
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_SVG_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_XMLNS = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


#: Writes new_leads.csv's bytes (header included) to the open file; returns the leads written.
CsvWriter = Callable[[BinaryIO], int]


@dataclass(frozen=True)
class NewLeads:
    """What the page shows of the leads a run delivered: counts over all of them, and the table's rows.

    Text values count as they read on the page: trimmed, and blank is missing; a missing source,
    state or facility type is ``UNKNOWN``. ``by_state_type``: (state, facility type) -> leads.
    ``by_source``: source -> leads. ``filled``: source -> ``CONTACT_FIELDS`` label -> leads with that
    field filled. ``authorities``: source -> the licensing authority its first lead names (in the
    CSV's order), for sources whose leads name one. ``rows``: the leads the table shows (at most
    ``REPORT_TABLE_ROWS`` when read by run_report.py), as dicts of lead columns.
    """

    by_state_type: dict[tuple[str, str], int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    filled: dict[str, dict[str, int]] = field(default_factory=dict)
    authorities: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Every new lead of the run (the table may show fewer)."""
        return sum(self.by_source.values())


@dataclass(frozen=True)
class ReportInput:
    """Everything one run's report shows.

    ``run``: the run's ``RunSummary.to_dict()``. ``new_leads``: the leads this run delivered, as
    counts and the table's rows (run_report.read_new_leads). ``history``: past runs, oldest first,
    this run last, each ``{run_id, finished_at, status, sources: {source: {new, removed}}}``.
    ``previous_report``: a relative URL of the previous run's report, or None.
    """

    run: dict
    new_leads: NewLeads
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
    new = inp.new_leads
    leads = sorted(new.rows, key=lambda r: (_text(r.get("company")).casefold(), _text(r.get("lead_id"))))
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
        "new_count": new.count,
        "totals": {kind: sum(s[kind] for s in sources.values()) for kind in CHANGE_KINDS},
        "change_kinds": CHANGE_KINDS,
        "sources": sources,
        "authorities": dict(sorted(new.authorities.items())),
        "crosstab": _crosstab(new.by_state_type),
        "chart_svg": _history_chart(inp.history, finished_at or None),
        "history": _history_rows(inp.history),
        "quality": _quality_rows(run.get("sources") or {}),
        "attention": [s for s in snapshots if s["status"] in ATTENTION_STATUSES],
        "snapshots": snapshots,
        "fill_rates": _fill_rates(new),
        "contact_fields": list(CONTACT_FIELDS),
        "leads": [_lead_row(r) for r in leads],
        "previous_report": inp.previous_report,
    }
    return _environment().get_template(_TEMPLATE).render(context)


def write_report(folder: Path, inp: ReportInput, write_csv: CsvWriter) -> ReportFiles:
    """Write ``index.html`` and ``new_leads.csv`` (its bytes from ``write_csv``) into ``folder``
    (created when absent). Refuses a CSV whose lead count is not the page's: the page would lie."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(html=folder / HTML_NAME, csv=folder / CSV_NAME)
    html = render_html(inp)
    with files.csv.open("wb", buffering=1 << 20) as f:
        rows = write_csv(f)
    if rows != inp.new_leads.count:
        raise ValueError(f"new_leads.csv has {rows} lead(s), the page counts {inp.new_leads.count}")
    files.html.write_text(html, encoding="utf-8")
    log.info("weekly report: run %s, %d new leads, written to %s", inp.run.get("run_id"), rows, folder)
    return files


# ---------------------------------------------------------------------------------------------
# The page's content


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("leadpipe", "templates"),
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


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def _is_relative_url(url: str) -> bool:
    # Browsers drop tabs and newlines inside URLs ("java\nscript:" is "javascript:"): refuse every control
    # character and white space, then anything with a scheme or a host.
    return (
        bool(url) and not re.search(r"[\x00-\x20\x7f\\]", url) and not _SCHEME.match(url) and not url.startswith("//")
    )


def _crosstab(by_state_type: dict[tuple[str, str], int]) -> dict[str, Any]:
    """New leads per state (rows) and facility type (columns), with totals; busiest first."""
    by_state: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for (state, facility_type), n in by_state_type.items():
        by_state[state] = by_state.get(state, 0) + n
        by_type[facility_type] = by_type.get(facility_type, 0) + n
    states = sorted(by_state, key=lambda s: (-by_state[s], s))
    types = sorted(by_type, key=lambda t: (-by_type[t], t))
    return {
        "states": states,
        "types": types,
        "cells": {s: {t: by_state_type.get((s, t), 0) for t in types} for s in states},
        "by_state": by_state,
        "by_type": by_type,
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


def _fill_rates(new: NewLeads) -> list[dict]:
    """Per source (and all sources together): the share of new leads with each contact field filled."""
    groups = [(sid, new.by_source[sid], new.filled.get(sid) or {}) for sid in sorted(new.by_source)]
    if len(groups) > 1:
        total = {label: sum(filled.get(label, 0) for _, _, filled in groups) for label in CONTACT_FIELDS}
        groups.append(("all sources", new.count, total))
    rows = []
    for name, leads, filled in groups:
        rates = {label: filled.get(label, 0) / leads for label in CONTACT_FIELDS}
        rows.append({"source": name, "leads": leads, "rates": rates, "total": name == "all sources"})
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
