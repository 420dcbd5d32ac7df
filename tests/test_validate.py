"""Validation splits rows into leads and quarantine; nothing is lost."""

from datetime import date

from leadpipe.validate import leads_of, quarantine_of, tag
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
