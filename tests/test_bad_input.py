"""Bad input: drifted headers, odd encodings and broken files; nothing lost.

Every file here is built from the real Texas export in tests/data (or a few of its rows), the
way an agency's tooling would damage it: re-saved in another encoding or with other line ends,
compressed, cut off, re-delimited, its columns renamed, reordered, dropped or added to. The
sniff cases need no Spark; the read cases go through Spark's reader, the mapping and validation;
the job cases run the whole weekly job on real Delta tables (and PostgreSQL where delivery is
checked).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import shutil
import zipfile
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from leadpipe.canonical import map_to_canonical
from leadpipe.config import load_source
from leadpipe.discover import discover
from leadpipe.read import read_files
from leadpipe.sniff import FileFormat, Rejection, sniff
from leadpipe.validate import REASON, tag
from tests.conftest import REAL_DIR
from tests.helpers import pg_lead_ids

TX_NAME = "07-07-2023 Texas DHHS.csv"
TX_REAL = REAL_DIR / TX_NAME
NV_NAME = "07-07-2023 Nevada Dept of Public _ Behavioral Health.csv"
OK_NAME = "07-07-2023 Oklahoma Human Services.csv"


def tx_table() -> tuple[list[str], list[list[str]]]:
    """The real Texas export's header and rows, as the agency wrote them."""
    rows = list(csv.reader(io.StringIO(TX_REAL.read_bytes().decode("cp1252"), newline="")))
    return rows[0], rows[1:]


def write_csv(
    header: list[str],
    rows: list[list[str]],
    delimiter: str = ",",
    encoding: str = "cp1252",
    newline: str = "\r\n",
    bom: bool = False,
) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out, delimiter=delimiter, lineterminator=newline, quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    data = out.getvalue().encode(encoding)
    return (codecs.BOM_UTF8 if bom and encoding == "utf-8" else b"") + data


def sniffed(data: bytes, cfg) -> FileFormat | Rejection:
    return sniff(data, (), len(data), cfg)


def expect_rejected(result, reason: str) -> Rejection:
    assert isinstance(result, Rejection), f"read as {result}, expected rejection {reason}"
    assert result.reason == reason, result
    return result


def put(folder: Path, data: bytes, name: str = TX_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def tagged_rows(spark, sources, folder: Path, sid: str = "tx_hhs") -> list[dict]:
    """Sniff, read, map and validate one source's files in ``folder``: one dict per row read."""
    found = discover(spark, str(folder), {sid: sources[sid]})
    (snapshot_date, files), *_ = [(d, by[sid]) for d, by in found.by_date().items()]
    cfg = sources[sid]
    raw = read_files(spark, files, cfg, snapshot_date)
    canonical = map_to_canonical(raw, cfg)
    t = tag(
        canonical, {sid: cfg.identity.columns}, None, {sid: (cfg.csv.multi_line_columns, cfg.csv.multi_line_max_lines)}
    )
    return [r.asDict() for r in t.orderBy("record_no").collect()]


# -- sniff: formats detected, not assumed ---------------------------------------------------------


@pytest.fixture(scope="module")
def tx(sources):
    return sources["tx_hhs"]


@pytest.mark.parametrize(
    ("encoding", "bom", "expected"),
    [
        ("cp1252", False, "cp1252"),
        ("utf-8", False, "utf-8"),
        ("utf-8", True, "utf-8"),
        ("utf-16", False, "utf-16-le"),  # Python writes a BOM for "utf-16"
        ("utf-16-be", False, "utf-16-be"),  # no BOM: found from the NUL bytes
        ("utf-16-le", False, "utf-16-le"),
        ("utf-32", False, "utf-32-le"),
    ],
)
def test_encodings_detected(tx, encoding, bom, expected):
    header, rows = tx_table()
    rows = [list(r) for r in rows[:5]]
    rows[0][2] = "Niño’s Daycare"  # non-ASCII in a cp1252-encodable name
    fmt = sniffed(write_csv(header, rows, encoding=encoding, bom=bom), tx)
    assert isinstance(fmt, FileFormat), fmt
    assert codecs.lookup(fmt.encoding).name == expected
    assert fmt.columns == header and not fmt.missing and not fmt.extra
    assert fmt.multi_line == expected.startswith(("utf-16", "utf-32"))  # Spark's line reader splits bytes


def test_configured_encoding_pinned(tx):
    pinned = tx.model_copy(update={"csv": tx.csv.model_copy(update={"detect_encoding": False, "encoding": "latin-1"})})
    header, rows = tx_table()
    fmt = sniffed(write_csv(header, rows[:3], encoding="utf-8"), pinned)
    assert isinstance(fmt, FileFormat) and fmt.encoding == "latin-1"


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda real: b"", "empty_file", "0 bytes"),
        (lambda real: b"  \r\n\r\n", "empty_file", "white space"),
        (lambda real: real.split(b"\r\n", 1)[0] + b"\r\n", "header_only", "no record"),
        (lambda real: gzip.compress(real), "compressed", "gzip"),
        (lambda real: _zip(real), "compressed", "zip"),
        (lambda real: _zip(real, "xl/workbook.xml"), "not_csv", "Excel"),
        (lambda real: b"%PDF-1.7\n" + bytes(range(256)) * 4, "not_csv", "PDF"),
        (lambda real: bytes(range(256)) * 16, "not_csv", "binary"),
        (lambda real: real.replace(b",", b"^"), "unknown_delimiter", "delimiter"),
        (lambda real: real.replace(b"Operation #,", b"Opration,", 1), "missing_required_column", "Operation #"),
        (
            lambda real: "Operation #,Operation/Caregiver Name\r\n1,Café\r\n".encode() + b"\x81\x8d\xff",
            "unknown_encoding",
            "UTF-8",
        ),
    ],
    ids=[
        "0-byte",
        "blank",
        "header-only",
        "gzip",
        "zip",
        "xlsx",
        "pdf",
        "binary",
        "unknown-delimiter",
        "missing-required",
        "unknown-encoding",
    ],
)
def test_broken_files_rejected_with_a_reason(tx, make, reason, words):
    result = expect_rejected(sniffed(make(TX_REAL.read_bytes()), tx), reason)
    assert words.lower() in result.message.lower(), result.message


def _zip(data: bytes, member: str = TX_NAME) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(member, data)
    return out.getvalue()


def test_header_only_and_missing_required_count_their_records(tx):
    header, rows = tx_table()
    assert expect_rejected(sniffed(write_csv(header, []), tx), "header_only").records == 0
    no_key = [h if h != "Operation #" else "Case" for h in header]
    rejected = expect_rejected(sniffed(write_csv(no_key, rows), tx), "missing_required_column")
    assert rejected.records == len(rows) == 99
    assert "Operation #" in rejected.message and "aliases" in rejected.message


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_sniffed(tx, delimiter):
    header, rows = tx_table()
    fmt = sniffed(write_csv(header, rows, delimiter=delimiter), tx)
    assert isinstance(fmt, FileFormat) and fmt.delimiter == delimiter
    assert fmt.columns == header
    assert any("delimiter sniffed" in w for w in fmt.warnings)


def test_renamed_reordered_missing_and_extra_columns(tx):
    header, _ = tx_table()
    drifted = [
        {"Operation #": "Operation", "Operation/Caregiver Name": "OPERATION NAME", "Phone": "Phone Number"}.get(h, h)
        for h in header
        if h != "Monitoring Frequency"
    ]
    drifted = [*drifted[::-1], "Website", "Website"]  # reordered, an extra column twice
    fmt = sniffed(write_csv(drifted, []) + b"1,2\r\n", tx)
    assert isinstance(fmt, FileFormat), fmt
    assert fmt.renamed == {
        "Operation": "Operation #",
        "OPERATION NAME": "Operation/Caregiver Name",
        "Phone Number": "Phone",
    }
    assert fmt.missing == ["Monitoring Frequency"]
    assert fmt.extra == ["Website", "Website_2"]
    assert fmt.columns[: len(drifted) - 2] == [
        {"Operation": "Operation #", "OPERATION NAME": "Operation/Caregiver Name", "Phone Number": "Phone"}.get(h, h)
        for h in drifted[:-2]
    ]


def test_an_exact_name_wins_over_a_loose_match(tx):
    """``Operation`` would match ``Operation #`` loosely; when both are there, the business key
    comes from the column named exactly so, and the other is kept as an extra."""
    header, rows = tx_table()
    fmt = sniffed(write_csv(["Operation", *header], [["x", *r] for r in rows[:2]]), tx)
    assert isinstance(fmt, FileFormat)
    assert fmt.columns[:2] == ["Operation", "Operation #"] and fmt.extra == ["Operation"] and not fmt.renamed


def test_utf8_bom_with_other_bytes_and_pinned_binary(tx):
    header, rows = tx_table()
    bad = codecs.BOM_UTF8 + write_csv(header, [[*rows[0][:2], "Caf\u00e9", *rows[0][3:]]], encoding="cp1252")
    assert "byte-order mark" in expect_rejected(sniffed(bad, tx), "unknown_encoding").message
    pinned = tx.model_copy(update={"csv": tx.csv.model_copy(update={"detect_encoding": False})})
    expect_rejected(sniffed(bytes(range(256)) * 16, pinned), "not_csv")
    # one stray NUL is not binary: the file is read and the NUL never reaches a lead
    assert isinstance(sniffed(write_csv(header, rows[:3]).replace(b"Learning", b"Lear\x00ning", 1), tx), FileFormat)


def test_leading_blank_lines_before_the_header(tx):
    header, rows = tx_table()
    fmt = sniffed(b"\r\n  \r\n" + write_csv(header, rows[:2]), tx)
    assert isinstance(fmt, FileFormat) and fmt.columns == header


def test_blank_and_duplicate_column_names(sources):
    nv = sources["nv_dpbh"]
    real = (REAL_DIR / NV_NAME).read_bytes()
    fmt = sniffed(real, nv)
    assert isinstance(fmt, FileFormat) and fmt.columns[7] == "_c7" and not fmt.missing and not fmt.extra
    # Nevada's later layout: Phone# -> Phone and the blank-named column gone
    later = real.replace(b"Address,,State", b"Address,State", 1).replace(b"Phone#", b"Phone", 1)
    fmt = sniffed(later, nv)
    assert isinstance(fmt, FileFormat)
    assert fmt.renamed == {"Phone": "Phone#"} and fmt.missing == ["_c7"]
    header, rows = tx_table()
    fmt = sniffed(write_csv([*header, "Phone", ""], [[*r, "x", "y"] for r in rows[:2]]), sources["tx_hhs"])
    assert fmt.columns[-2:] == ["Phone_2", f"_c{len(header) + 1}"]
    assert fmt.extra == ["Phone_2", f"_c{len(header) + 1}"]


# -- read: what Spark makes of them ---------------------------------------------------------------


def _leads(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r[REASON] is None]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_line_ends(spark, sources, tmp_path, newline):
    header, rows = tx_table()
    put(tmp_path, write_csv(header, rows[:6], newline=newline))
    got = tagged_rows(spark, sources, tmp_path)
    assert [r["license_number"] for r in _leads(got)] == [r[0] for r in rows[:6]]
    assert [r["record_no"] for r in got] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [("cp1252", False), ("utf-8", False), ("utf-8", True), ("utf-16", False), ("utf-16-le", False)],
    ids=["cp1252", "utf-8", "utf-8-bom", "utf-16", "utf-16le-no-bom"],
)
def test_encodings_read_the_same_values(spark, sources, tmp_path, encoding, bom):
    header, rows = tx_table()
    rows = [list(r) for r in rows[:4]]
    rows[1][2] = "Niño’s Daycare “Best”"
    put(tmp_path, write_csv(header, rows, encoding=encoding, bom=bom))
    got = _leads(tagged_rows(spark, sources, tmp_path))
    assert [r["company"] for r in got][1] == "Niño’s Daycare “Best”"
    assert [r["license_number"] for r in got] == [r[0] for r in rows]


def test_cut_off_inside_a_quote_and_field_counts(spark, sources, tmp_path):
    header, rows = tx_table()
    data = write_csv(header, rows[:5])
    lines = data.split(b"\r\n")
    lines[1] = lines[1] + b",extra,fields"  # too many
    lines[2] = b",".join(lines[2].split(b",")[:4])  # too few
    data = b"\r\n".join(lines[:6]) + b'\r\n99999,,"Unfinished Name, cut off'  # ends inside a quote
    put(tmp_path, data)
    got = tagged_rows(spark, sources, tmp_path)
    assert [(r["record_no"], r[REASON]) for r in got] == [
        (1, "malformed_record"),
        (2, "malformed_record"),
        (3, None),
        (4, None),
        (5, None),
        (6, "malformed_record"),
    ]
    assert "Unfinished Name" in got[-1]["_corrupt_record"]


def test_unclosed_quote_mid_file_single_line_layout(spark, sources, tmp_path):
    """Texas is read line by line: an unclosed quote damages its own record only."""
    header, rows = tx_table()
    lines = write_csv(header, rows[:5]).split(b"\r\n")
    lines[2] = lines[2].replace(b",", b',"', 1)  # opens a quote it never closes
    assert lines[2].count(b'"') == 1
    put(tmp_path, b"\r\n".join(lines))
    got = tagged_rows(spark, sources, tmp_path)
    assert [r[REASON] for r in got] == [None, "malformed_record", None, None, None]
    assert got[1]["_corrupt_record"] == lines[2].decode("cp1252")  # its raw text is kept


def _ok_with_an_unclosed_quote(spark, sources, folder: Path, header, rows, at: bytes) -> list[dict]:
    """Oklahoma rows written as CSV, then a quote opened before the cell ``at`` marks (never
    closed), read, mapped and validated."""
    data = write_csv(header, rows)
    broken = data.replace(at, at[:1] + b'"' + at[1:], 1)
    assert broken != data
    put(folder, broken, OK_NAME)
    return tagged_rows(spark, sources, folder, "ok_dhs")


def test_unclosed_quote_mid_file_is_a_runaway_quote(spark, sources, tmp_path):
    """Oklahoma is read multi-line (its caregiver cell spans lines): an unclosed quote in another
    column swallows the records after it, and is caught as runaway_quote with its raw text."""
    real = (REAL_DIR / OK_NAME).read_bytes()
    records = list(csv.reader(io.StringIO(real.decode("cp1252"), newline="")))
    header, rows = records[0], [list(r) for r in records[1:6]]
    rows[1][-1] = "RUNAWAY"  # its last cell will open a quote that the record never closes
    got = _ok_with_an_unclosed_quote(spark, sources, tmp_path, header, rows, b",RUNAWAY\r\n")
    assert got[0][REASON] is None
    assert got[1][REASON] == "runaway_quote"
    assert header[-1] in got[1]["_detail"]
    swallowed = got[1]["raw"][header[-1]]
    assert rows[2][0] in swallowed  # the next record is inside the cell: kept, not lost
    assert len(got) < len(rows)  # ...and no longer a record of its own


def test_blank_middle_line_in_the_caregiver_cell(spark, sources, tmp_path):
    real = (REAL_DIR / OK_NAME).read_bytes()
    records = list(csv.reader(io.StringIO(real.decode("cp1252"), newline="")))
    header, rows = records[0], [list(r) for r in records[1:3]]
    i = header.index("Primary Caregiver")
    name, title = rows[0][i].split("\r\n", 1) if "\r\n" in rows[0][i] else rows[0][i].split("\n", 1)
    rows[0][i] = f"{name}\r\n \r\n{title}"
    put(tmp_path, write_csv(header, rows), OK_NAME)
    got = tagged_rows(spark, sources, tmp_path, "ok_dhs")
    assert got[0][REASON] is None
    assert got[0]["title"] == " ".join(title.split()) and got[0]["last_name"]


def test_an_unclosed_quote_in_the_multi_line_cell_is_a_runaway_quote(spark, sources, tmp_path):
    """Even in the column that may span lines, a cell of more than multi_line_max_lines lines is
    an unclosed quote swallowing the records after it."""
    header, rows = _OK_RECORDS[0], [list(r) for r in _OK_RECORDS[1:9]]
    i = header.index("Primary Caregiver")
    for r in rows:
        r[1], r[i] = "PLAIN NAME LLC", "Jane Doe"  # one-line cells, unquoted
    rows[1][i] = "RUNAWAY"
    got = _ok_with_an_unclosed_quote(spark, sources, tmp_path, header, rows, b",RUNAWAY,")
    assert got[0][REASON] is None
    assert got[1][REASON] == "runaway_quote" and "Primary Caregiver" in got[1]["_detail"]
    assert len(got) == 2  # the rest of the file is inside that cell, kept in its raw text
    assert rows[-1][0] in got[1]["raw"]["Primary Caregiver"]


def test_a_stray_nul_is_read_and_never_reaches_a_lead(spark, sources, tmp_path):
    header, rows = tx_table()
    put(tmp_path, write_csv(header, rows[:3]).replace(b"Learning", b"Lear\x00ning", 1))
    got = tagged_rows(spark, sources, tmp_path)
    assert [r[REASON] for r in got] == [None, None, None]
    company = got[0]["company"]
    assert "\x00" not in company and "Learning" in company.replace(" ", "")


def test_a_large_file_is_sampled_beyond_its_head(spark, sources, tmp_path):
    """ASCII for its first megabytes, then UTF-8: a window of the sample sees it, so the file is
    read as UTF-8, not as the configured cp1252 (which would turn é into Ã©)."""
    from leadpipe.sniff import HEAD_BYTES, inspect_file

    header, rows = tx_table()
    ascii_rows = [r for r in rows if all(v.isascii() for v in r)]
    many = [[str(9_000_000 + i), *r[1:]] for i, r in enumerate(ascii_rows * 400)]
    many[-1][2] = "Crèche Étoile"
    path = put(tmp_path, write_csv(header, many, encoding="utf-8"))
    assert path.stat().st_size > 4 * HEAD_BYTES
    fmt = inspect_file(spark, f"file:{path}", path.stat().st_size, sources["tx_hhs"])
    assert isinstance(fmt, FileFormat) and fmt.encoding == "utf-8"
    assert inspect_file(spark, f"file:{tmp_path}/gone.csv", 10, sources["tx_hhs"]).reason == "unreadable"


def test_doubled_and_raw_inner_quotes(spark, sources, tmp_path):
    header, rows = tx_table()
    lines = write_csv(header, rows[:3]).split(b"\r\n")
    # Excel-style doubled quotes (the 2023 file) and raw unescaped ones (the statewide export)
    lines[2] = lines[2].replace(rows[1][2].encode(), b'""Tiny" Tots"', 1)
    put(tmp_path, b"\r\n".join(lines))
    got = tagged_rows(spark, sources, tmp_path)
    assert [r[REASON] for r in got] == [None, None, None]
    assert got[0]["company"] == '"K" Street Learning Center LLC'
    assert "Tiny" in got[1]["company"]


def test_values_years_dates_thousands_capacities(spark, sources, tmp_path):
    header, rows = tx_table()
    rows = [list(r) for r in rows[:5]]
    issue, cap = header.index("Issue Date"), header.index("Capacity")
    for row, (d, c) in zip(
        rows, [("12/1/13", "1,200"), ("6/1/85", "-5"), ("2/30/2023", "25000"), ("11/30/23", "12")], strict=False
    ):
        row[issue], row[cap] = d, c
    put(tmp_path, write_csv(header, rows))
    got = tagged_rows(spark, sources, tmp_path)
    assert [r["license_issued"] for r in got[:4]] == [date(2013, 12, 1), date(1985, 6, 1), None, date(2023, 11, 30)]
    assert [r["capacity"] for r in got[:4]] == [1200, None, None, 12]
    issues = {(i["column"], i["raw_value"]) for r in got for i in r["dq_issues"]}
    assert {("license_issued", "2/30/2023"), ("capacity", "-5"), ("capacity", "25000")} <= issues
    assert all(r[REASON] is None for r in got)  # a bad value is an issue, never a lost row


def test_drifted_columns_read_into_the_configured_ones(spark, sources, tmp_path):
    header, rows = tx_table()
    put(tmp_path / "a", write_csv(header, rows[:8]))
    order = [header.index(h) for h in reversed(header) if h != "Monitoring Frequency"]
    renamed = {"Operation #": "Operation", "Operation/Caregiver Name": "Operation Name", "Phone": "Phone Number"}
    put(
        tmp_path / "b",
        write_csv(
            [renamed.get(header[i], header[i]) for i in order] + ["Website"],
            [[r[i] for i in order] + ["w.example"] for r in rows[:8]],
            delimiter=";",
            encoding="utf-16",
        ),
    )
    before = tagged_rows(spark, sources, tmp_path / "a")
    after = tagged_rows(spark, sources, tmp_path / "b")
    keep = ["lead_id", "company", "phone", "license_number", "capacity", "license_issued", "ages_served", "record_hash"]
    assert [{k: r[k] for k in keep} for r in after] == [{k: r[k] for k in keep} for r in before]
    assert all(r["raw"]["Website"] == "w.example" for r in after)


# -- the job: every file accounted for, one bad source never stops the others --------------------


def test_names_that_do_not_say_what_they_are_are_rejected_alone(spark, sources, tmp_path):
    put(tmp_path, TX_REAL.read_bytes())
    put(tmp_path, TX_REAL.read_bytes(), "13-45-2023 Texas DHHS.csv")
    twin = sources["tx_hhs"].model_copy(update={"id": "tx_twin"})  # claims the same names
    found = discover(spark, str(tmp_path), {"tx_hhs": sources["tx_hhs"]})
    assert [f.name for f in found.files] == [TX_NAME]
    assert [(r.name, r.reason, r.source_id) for r in found.rejected] == [
        ("13-45-2023 Texas DHHS.csv", "bad_file_date", "tx_hhs")
    ]
    found = discover(spark, str(tmp_path), {"tx_hhs": sources["tx_hhs"], "tx_twin": twin})
    assert found.files == []
    assert sorted(r.reason for r in found.rejected) == ["ambiguous_source", "ambiguous_source"]
    assert "tx_twin" in found.rejected[0].message


def _broken_tx_variants(tmp_path: Path) -> dict[str, str]:
    """Folder name -> the reason each broken copy of the Texas export must be rejected with."""
    real = TX_REAL.read_bytes()
    variants = {
        "gzip": (gzip.compress(real), "compressed"),
        "empty": (b"", "empty_file"),
        "header-only": (real.split(b"\r\n", 1)[0] + b"\r\n", "header_only"),
        "binary": (bytes(range(256)) * 64, "not_csv"),
        "no-key": (real.replace(b"Operation #,", b"License Nbr,", 1), "missing_required_column"),
        "caret": (real.replace(b",", b"^"), "unknown_delimiter"),
        "zip": (_zip(real), "compressed"),
        "xlsx": (_zip(real, "xl/workbook.xml"), "not_csv"),
        "pdf": (b"%PDF-1.7\n" + bytes(range(256)) * 8, "not_csv"),
        "mojibake": (real.replace(b"Learning", b"Lea\x81\x8d\x90ning"), "unknown_encoding"),
    }
    for folder, (data, _) in variants.items():
        put(tmp_path / "in" / "tx" / folder, data)
    return {folder: reason for folder, (_, reason) in variants.items()}


@pytest.mark.integration
def test_mixed_input_good_sources_delivered_every_problem_reported_once(spark, sources, settings, db, tmp_path):
    inp = tmp_path / "in"
    for name in (NV_NAME, OK_NAME):
        put(inp / "good", (REAL_DIR / name).read_bytes(), name)
    reasons = _broken_tx_variants(tmp_path)
    put(inp / "names", TX_REAL.read_bytes(), "13-45-2023 Texas DHHS.csv")  # a date that does not parse
    put(inp / "names", b"whatever", "notes.txt")
    put(inp / "tx" / "good", TX_REAL.read_bytes())  # a good file of the same Texas snapshot
    from leadpipe.pipeline import run_weekly

    result = run_weekly(spark, sources, str(inp), str(tmp_path / "wh"), db, settings, run_id="mixed")
    s = result.summary
    assert s["status"] == "partial", s["errors"]
    by_file = {Path(f["file"].removeprefix("file:")).relative_to(inp).as_posix(): f for f in s["files"]}
    assert len(s["files"]) == len(by_file) == 2 + len(reasons) + 3  # every file once
    for name in (NV_NAME, OK_NAME):
        assert by_file[f"good/{name}"]["status"] == "applied"
    for folder, reason in reasons.items():
        entry = by_file[f"tx/{folder}/{TX_NAME}"]
        assert (entry["status"], entry["reason"]) == ("rejected", reason), entry
        assert entry["message"] and entry["size"] == (tmp_path / "in" / "tx" / folder / TX_NAME).stat().st_size
    assert by_file["tx/header-only/" + TX_NAME]["records"] == 0
    assert by_file["tx/no-key/" + TX_NAME]["records"] == 99
    assert by_file["names/13-45-2023 Texas DHHS.csv"]["reason"] == "bad_file_date"
    assert by_file["names/notes.txt"]["status"] == "unmatched"
    assert s["rejected_files"] == {
        **{r: list(reasons.values()).count(r) for r in set(reasons.values())},
        "bad_file_date": 1,
    }
    tx = [o for o in s["snapshots"] if o["source"] == "tx_hhs"]
    assert [o["status"] for o in tx] == ["failed"]
    assert "(1 other file(s) not applied either)" in tx[0]["message"]
    assert by_file[f"tx/good/{TX_NAME}"]["status"] == "failed"  # never applied from part of a snapshot
    for reason in set(reasons.values()):
        assert tx[0]["message"].count(f": {reason}: ") == list(reasons.values()).count(reason)
    # the good sources are merged and delivered, their rows all accounted for
    for sid in ("nv_dpbh", "ok_dhs"):
        src = s["sources"][sid]
        assert src["rows_read"] == src["rows_loaded"] + src["rows_rejected"] > 0
        assert src["new"] == src["rows_loaded"]
    assert s["delivered"] == s["sources"]["nv_dpbh"]["new"] + s["sources"]["ok_dhs"]["new"]
    assert len(pg_lead_ids(db)) == s["delivered"]
    assert s["sources"]["tx_hhs"]["rows_read"] == 0


def _write_nv_only(inp: Path) -> None:
    put(inp, (REAL_DIR / NV_NAME).read_bytes(), NV_NAME)


@pytest.mark.integration
def test_drifted_week_changes_no_lead_and_two_snapshots_apply_in_order(spark, sources, settings, tmp_path):
    """Week 1: the real export. Week 2: the same providers re-exported as UTF-16, semicolon
    delimited, columns renamed, reordered, one dropped and one added, one provider gone. Both
    weeks in one input: applied in date order, and week 2 changes nothing but the removal."""
    from leadpipe.pipeline import run_weekly

    header, rows = tx_table()
    inp = tmp_path / "in"
    put(inp, TX_REAL.read_bytes())
    order = [header.index(h) for h in reversed(header) if h != "Monitoring Frequency"]
    renamed = {"Operation #": "Operation", "Operation/Caregiver Name": "Operation Name", "Phone": "Phone Number"}
    week2 = write_csv(
        [renamed.get(header[i], header[i]) for i in order] + ["Website"],
        [[r[i] for i in order] + [""] for r in rows[1:]],
        delimiter=";",
        encoding="utf-16",
    )
    put(inp, week2, "07-14-2023 Texas DHHS.csv")
    result = run_weekly(spark, sources, str(inp), str(tmp_path / "wh"), None, settings, run_id="drift")
    assert result.ok, result.summary["errors"]
    tx = [o for o in result.summary["snapshots"] if o["source"] == "tx_hhs"]
    assert [(o["snapshot_date"], o["status"]) for o in tx] == [
        (date(2023, 7, 7), "applied"),
        (date(2023, 7, 14), "applied"),
    ]
    assert tx[0]["new"] == tx[0]["rows_loaded"] == 99
    assert (tx[1]["new"], tx[1]["changed"], tx[1]["removed"], tx[1]["unchanged"]) == (0, 0, 1, 98)
    entry = next(f for f in result.summary["files"] if f["name"] == "07-14-2023 Texas DHHS.csv")
    assert (entry["encoding"], entry["delimiter"]) == ("utf-16-le", ";")
    assert entry["renamed_columns"] == {v: k for k, v in renamed.items()}
    assert entry["missing_columns"] == ["Monitoring Frequency"] and entry["extra_columns"] == ["Website"]


@pytest.mark.integration
def test_one_failing_source_never_stops_the_others(spark, sources, settings, tmp_path):
    """A source whose rules fail at run time (here a pattern Java's regex engine refuses) fails
    alone; the other sources of the snapshot are merged; expected sources with no file are
    reported as missing_sources and their leads left alone."""
    from leadpipe.pipeline import run_weekly

    src = Path(sources["tx_hhs"].path).read_text()
    bad_dir = tmp_path / "conf" / "sources"
    bad_dir.mkdir(parents=True)
    (bad_dir / "tx_hhs.yaml").write_text(src.replace("Center: ['Center',", "Center: ['(?P<x>Center)',"))
    broken = {**sources, "tx_hhs": load_source(bad_dir / "tx_hhs.yaml")}
    inp = tmp_path / "in"
    _write_nv_only(inp)
    put(inp, TX_REAL.read_bytes())
    expecting = settings.model_copy(update={"expected_sources": ["nv_dpbh", "ok_dhs", "tx_hhs"]})
    result = run_weekly(spark, broken, str(inp), str(tmp_path / "wh"), None, expecting, run_id="isolated")
    s = result.summary
    assert s["status"] == "partial"
    by_source = {o["source"]: o for o in s["snapshots"]}
    assert by_source["tx_hhs"]["status"] == "failed" and "tx_hhs 2023-07-07" in by_source["tx_hhs"]["message"]
    assert by_source["nv_dpbh"]["status"] == "applied" and by_source["nv_dpbh"]["new"] > 90
    assert s["missing_sources"] == ["ok_dhs"]
    assert any("missing_sources: ok_dhs" in w for w in s["warnings"])
    assert {f["name"]: f["status"] for f in s["files"]} == {NV_NAME: "applied", TX_NAME: "failed"}


# -- property: random and mutated bytes never crash read and map, and conserve rows -------------


_OK_RECORDS = list(csv.reader(io.StringIO((REAL_DIR / OK_NAME).read_bytes().decode("cp1252"), newline="")))
_SEEDS = {
    "tx_hhs": write_csv(tx_table()[0], tx_table()[1][:6]),  # read line by line
    "ok_dhs": write_csv(_OK_RECORDS[0], _OK_RECORDS[1:6]),  # read multi-line
}
_counter = itertools.count()
_KNOWN = {
    "empty_file",
    "header_only",
    "not_csv",
    "compressed",
    "unknown_encoding",
    "unknown_delimiter",
    "missing_required_column",
}
_BLANK = bytes(range(33))  # what Java's String.trim removes


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data)))
        piece = draw(
            st.sampled_from([b'"', b",", b"\r\n", b"\n", b"\r", b";", b"\x00", b"\x92", b"\xc3", b"  ", b'""', b"\t"])
        )
        if draw(st.booleans()):
            data[at:at] = piece
        else:
            del data[at : at + draw(st.integers(1, 40))]
    return bytes(data)


@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    case=st.sampled_from(sorted(_SEEDS)).flatmap(
        lambda sid: st.tuples(st.just(sid), st.one_of(mutated(_SEEDS[sid]), st.binary(max_size=600)))
    )
)
def test_any_bytes_never_crash_and_every_row_is_conserved(spark, sources, tmp_path, case):
    """Random and mutated bytes in both layouts: sniff rejects them with a known reason, or read,
    map and validate give one row per record, numbered 1..n, each a lead or quarantined with
    its reason. Read line by line, the records are counted independently from the bytes: every
    non-blank line after the header is exactly one row, none lost or invented."""
    sid, data = case
    name = TX_NAME if sid == "tx_hhs" else OK_NAME
    folder = tmp_path / f"h{next(_counter)}"
    put(folder, data, name)
    result = sniffed(data, sources[sid])
    event(f"{sid} rejected" if isinstance(result, Rejection) else f"{sid} read")
    if isinstance(result, Rejection):
        assert result.reason in _KNOWN and result.message
        return
    try:
        rows = tagged_rows(spark, sources, folder, sid)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = len(rows)
    assert [r["record_no"] for r in rows] == list(range(1, n + 1))
    for r in rows:
        assert r[REASON] is None or r["_detail"], r  # a lead, or quarantined with its reason
        assert r[REASON] is not None or r["lead_id"] is not None
    if not result.multi_line:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        assert n == sum(1 for ln in lines if ln.strip(_BLANK)) - 1
