"""The three real 2023 agency files: golden rows, fill rates, the quality report.

Golden rows (tests/golden/<source>.json) are hand-checked against the raw record: the full
expected standardized row, compared with chispa.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import BUSINESS_COLUMNS, BUSINESS_FIELDS, map_to_canonical
from leadpipe.discover import discover
from leadpipe.read import read_files
from leadpipe.report import field_quality, format_quality
from tests.conftest import REAL_DIR, STATEWIDE_CSV

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def canonical(spark, sources):
    """Every real row, mapped once for the whole module."""
    found = discover(spark, str(REAL_DIR), sources)
    assert found.unmatched == []
    frames = {}
    for (snapshot_date, sid), files in found.groups().items():
        raw = read_files(spark, files, sources[sid], snapshot_date)
        frames[sid] = map_to_canonical(raw, sources[sid]).cache()
    yield frames
    for df in frames.values():
        df.unpersist()


def test_the_real_files_are_byte_exact():
    import hashlib

    expected = {
        "07-07-2023 Nevada Dept of Public _ Behavioral Health.csv": "2b4d24ed19760c15b170790f6c972c70eedef0e3f5053d137cdb81dfbc3d0c47",
        "07-07-2023 Oklahoma Human Services.csv": "a4d384a7c99c5c2d173d2c3a056668fd943752d454827fea47d3b550f1f7054f",
        "07-07-2023 Texas DHHS.csv": "2f96bce3871c3092041e8b31a40963040a1da639ebb5a730871285a8e10c9e56",
    }
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in REAL_DIR.glob("*.csv")}
    assert got == expected


def test_rows_read_per_source(canonical):
    counts = {sid: df.count() for sid, df in canonical.items()}
    assert counts == {"nv_dpbh": 100, "ok_dhs": 50, "tx_hhs": 99}
    cut = canonical["ok_dhs"].filter(F.col("_corrupt_record").isNotNull()).collect()
    assert len(cut) == 1
    assert cut[0].record_no == 50
    assert cut[0]._corrupt_record.endswith('"Monica Kaler')


@pytest.mark.parametrize("source", ["nv_dpbh", "ok_dhs", "tx_hhs"])
def test_golden_rows(spark, canonical, source):
    golden = json.loads((GOLDEN / f"{source}.json").read_text(encoding="utf-8"))
    assert len(golden) >= 10
    schema = T.StructType([T.StructField("record_no", T.LongType()), *BUSINESS_FIELDS])
    date_cols = [f.name for f in BUSINESS_FIELDS if isinstance(f.dataType, T.DateType)]
    rows = []
    for g in golden:
        for c in date_cols:
            g[c] = date.fromisoformat(g[c]) if g[c] else None
        rows.append(tuple(g[f.name] for f in schema.fields))
    expected = spark.createDataFrame(rows, schema)
    actual = (
        canonical[source]
        .filter(F.col("record_no").isin([g["record_no"] for g in golden]))
        .select(F.col("record_no").cast("long"), *BUSINESS_COLUMNS)
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)


def test_texas_provider_id_is_the_facility_id(canonical):
    rows = canonical["tx_hhs"].select("provider_id", F.col("raw")["Facility ID"].alias("facility")).collect()
    assert len(rows) == 99
    assert all(r.provider_id and r.provider_id == r.facility.strip() for r in rows)
    assert canonical["tx_hhs"].first().provider_id == "773628"
    for sid in ("nv_dpbh", "ok_dhs"):  # no such id in their exports
        assert canonical[sid].filter(F.col("provider_id").isNotNull()).count() == 0
    # the real files have no column beyond their configs: no extras
    for df in canonical.values():
        assert df.filter(F.col("extras").isNotNull()).count() == 0


def test_nevada_keeps_cp1252_characters(canonical):
    names = [r.company for r in canonical["nv_dpbh"].filter(F.col("company").contains("\u2019")).collect()]
    assert names == ["MY LITTLE ANGEL\u2019S HOME DAYCARE LLC"]


def test_fill_rates_and_quality_report(canonical, sources, capsys):
    entries = []
    for sid, df in canonical.items():
        entries.extend(field_quality(df, [sources[sid]]))
    # every column a source fills is filled for >= 95% of the rows where its raw value is present
    low = [
        (e["source"], e["column"], e["filled_when_present"])
        for e in entries
        if "(optional)" not in e["rule"] and e["present"] and e["filled_when_present"] < 0.95
    ]
    assert low == []
    # every failure is listed, with its raw value (phones masked)
    by_key = {(e["source"], e["column"]): e for e in entries}
    phone = by_key[("nv_dpbh", "phone")]
    assert phone["failed"] == 2
    assert {f["raw_value"] for f in phone["top_failures"]} == {"###-###-1137", "###-###-1155"}
    assert by_key[("ok_dhs", "first_name")]["failed"] == 0
    assert by_key[("tx_hhs", "ages_served")]["top_failures"] == [{"raw_value": "N | N | N | N", "count": 1}]
    text = format_quality(entries)
    assert "nv_dpbh  phone" in text and "failed x1: '###-###-1137'" in text
    for e in entries:
        assert e["failed"] == sum(f["count"] for f in e["top_failures"]) or len(e["top_failures"]) == 5


def test_the_quality_of_three_sources_at_once_is_each_source_alone(canonical, sources):
    """The job reports every source of a snapshot in one aggregation: each count is conditioned
    on the row's source, and another source's shorter ``dq_present`` array is never indexed."""
    order = ["tx_hhs", "nv_dpbh", "ok_dhs"]  # not the order of the configs: entries follow the caller's
    together = canonical[order[0]]
    for sid in order[1:]:
        together = together.unionByName(canonical[sid])
    alone = [e for sid in order for e in field_quality(canonical[sid], [sources[sid]])]
    assert field_quality(together, [sources[sid] for sid in order]) == alone
    assert len({(e["source"], e["column"]) for e in alone}) == len(alone) > 40


def test_statewide_texas_raw_export(spark, sources, tmp_path):
    """13,363 real providers, every field quoted and inner quotes NOT escaped."""
    link = tmp_path / "12-21-2021 Texas DHHS.csv"
    link.symlink_to(STATEWIDE_CSV)
    found = discover(spark, str(tmp_path), sources)
    ((snapshot_date, sid), files), *_ = found.groups().items()
    raw = read_files(spark, files, sources[sid], snapshot_date)
    df = map_to_canonical(raw, sources[sid]).cache()
    assert df.count() == 13363
    assert df.filter(F.col("_corrupt_record").isNotNull()).count() == 0
    k = df.filter(F.col("license_number") == "1239246").select("company").first()
    assert k.company == '"K" Street Learning Center LLC'
    # no name keeps stray export quotes at both ends
    assert df.filter(F.col("company").rlike('^".*"$')).count() == 0
    entries = field_quality(df, [sources[sid]])
    low = [
        (e["column"], e["filled_when_present"])
        for e in entries
        if "(optional)" not in e["rule"] and e["present"] and e["filled_when_present"] < 0.95
    ]
    assert low == []
    df.unpersist()


@pytest.mark.parametrize("sid", ["nv_dpbh", "ok_dhs", "tx_hhs"])
def test_unchanged_rows_reuse_the_stored_standardization_and_give_the_same_rows(spark, sources, canonical, sid):
    """map_to_canonical with the leads table: a row whose raw values and rules are unchanged takes
    the stored business fields instead of running the rules again, and the result is identical."""
    cfg = sources[sid]
    found = discover(spark, str(REAL_DIR), sources)
    (snapshot_date, files), *_ = [(d, f) for (d, s), f in found.groups().items() if s == sid]
    raw = read_files(spark, files, cfg, snapshot_date)
    fresh = canonical[sid]
    again = map_to_canonical(raw, cfg, previous=fresh)
    # raw is a map (not sortable); raw_hash stands for it
    assert_df_equality(
        again.drop("raw").orderBy("record_no"), fresh.drop("raw").orderBy("record_no"), ignore_nullable=True
    )

    # the mechanism: a stored value is what comes out for an unchanged row, and a row whose raw
    # values differ from the stored ones is standardized afresh
    first = fresh.filter(F.col("lead_id").isNotNull()).orderBy("lead_id").first()
    tampered = fresh.withColumn(
        "company", F.when(F.col("lead_id") == first.lead_id, F.lit("STORED VALUE")).otherwise(F.col("company"))
    )
    out = map_to_canonical(raw, cfg, previous=tampered).filter(F.col("lead_id") == first.lead_id).first()
    assert out.company == "STORED VALUE"
    stale = tampered.withColumn("raw_hash", F.lit("0" * 64))
    out = map_to_canonical(raw, cfg, previous=stale).filter(F.col("lead_id") == first.lead_id).first()
    assert out.company == first.company
