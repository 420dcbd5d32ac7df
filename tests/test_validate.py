"""Validation splits rows into leads and quarantine; nothing is lost."""

from datetime import date

from leadpipe.validate import REASON, duplicates, leads_of, mark_duplicates, quarantine_of, tag, tag_rows
from tests.helpers import leads

D = date(2024, 1, 5)


def split(canonical):
    tagged = tag(canonical, {"s1": ["license_number"]})
    return leads_of(tagged), quarantine_of(tagged)


def test_every_row_is_either_a_lead_or_quarantined_with_a_reason(spark):
    rows = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha", "record_no": 1},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "record_no": 2},
        # duplicate key: the fuller row wins, the other is quarantined naming the kept record
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "phone": "+17023855222", "record_no": 3},
        {"lead_id": None, "license_number": None, "company": "No Key", "record_no": 4},
        {"lead_id": "s1-e", "license_number": "E", "company": "Cut", "_corrupt_record": 'E,"Cut', "record_no": 5},
    ]
    valid, quarantined = split(leads(spark, rows, D))
    kept = {(r.lead_id, r.record_no) for r in valid.collect()}
    assert kept == {("s1-a", 1), ("s1-b", 3)}
    q = {r.record_no: r for r in quarantined.collect()}
    assert set(q) == {2, 4, 5}
    assert q[2].reason == "duplicate_business_key"
    assert "file:/in/test.csv record 3 (kept)" in q[2].detail
    assert q[4].reason == "missing_business_key"
    assert "license_number" in q[4].detail
    assert q[5].reason == "malformed_record"
    assert q[5].raw_record == 'E,"Cut'
    assert q[5].raw == {"Name": "Cut"}
    assert valid.count() + quarantined.count() == len(rows)


def test_equal_duplicates_keep_the_first_record(spark):
    rows = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha", "record_no": 7},
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha", "record_no": 2},
    ]
    valid, quarantined = split(leads(spark, rows, D))
    assert [r.record_no for r in valid.collect()] == [2]
    assert [r.record_no for r in quarantined.collect()] == [7]


def test_the_jobs_two_passes_tag_as_tag_does(spark, tmp_path):
    """The job writes tag_rows, finds duplicates from the written rows and marks them: the same
    tags as tag(), on duplicates, ties, a quarantined row that shares a key, and a missing key."""
    rows = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha", "record_no": 1},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "record_no": 2},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "phone": "+17023855222", "record_no": 3},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "record_no": 4},
        {"lead_id": "s1-b", "license_number": "B", "company": "Cut", "_corrupt_record": 'B,"Cut', "record_no": 5},
        {"lead_id": "s1-c", "license_number": "C", "company": "Gamma", "record_no": 9},
        {"lead_id": "s1-c", "license_number": "C", "company": "Gamma", "record_no": 6},
        {"lead_id": None, "license_number": None, "company": "No Key", "record_no": 7},
    ]
    canonical = leads(spark, rows, D)
    keys = {"s1": ["license_number"]}
    tag_rows(canonical, keys).write.parquet(str(tmp_path / "rows"))
    written = spark.read.parquet(str(tmp_path / "rows"))
    duplicates(written).write.parquet(str(tmp_path / "dups"))
    two_passes = mark_duplicates(written, spark.read.parquet(str(tmp_path / "dups")))
    one_pass = tag(canonical, keys)
    assert two_passes.columns == one_pass.columns
    assert [r.asDict() for r in two_passes.orderBy("record_no").collect()] == [
        r.asDict() for r in one_pass.orderBy("record_no").collect()
    ]
    reasons = {r.record_no: r[REASON] for r in two_passes.collect()}
    assert reasons == {
        1: None,
        2: "duplicate_business_key",
        3: None,
        4: "duplicate_business_key",
        5: "malformed_record",
        6: None,
        7: "missing_business_key",
        9: "duplicate_business_key",
    }
