"""Change detection: the MERGE into the Delta table of known leads, on a real Delta table."""

from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from leadpipe.merge import merge_snapshot
from tests.helpers import leads

W1, W2, W3 = date(2024, 1, 5), date(2024, 1, 12), date(2024, 1, 19)


def state(spark, path):
    return {r.lead_id: r for r in spark.read.format("delta").load(path).collect()}


def test_new_changed_unchanged_removed_and_back(spark, tmp_path):
    path = str(tmp_path / "leads")
    week1 = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha"},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta"},
        {"lead_id": "s1-c", "license_number": "C", "company": "Gamma"},
        {"lead_id": "s2-x", "license_number": "X", "company": "Other source", "source": "s2"},
    ]
    r1 = merge_snapshot(spark, path, leads(spark, week1, W1), ["s1", "s2"], W1, "run1")
    assert r1.counts == {
        "s1": {"new": 3, "changed": 0, "unchanged": 0, "removed": 0},
        "s2": {"new": 1, "changed": 0, "unchanged": 0, "removed": 0},
    }

    week2 = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha"},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "capacity": 12},
        {"lead_id": "s1-d", "license_number": "D", "company": "Delta"},
    ]
    r2 = merge_snapshot(spark, path, leads(spark, week2, W2), ["s1"], W2, "run2")
    assert r2.counts == {"s1": {"new": 1, "changed": 1, "unchanged": 1, "removed": 1}}
    t = state(spark, path)
    assert (t["s1-a"].is_active, t["s1-a"].snapshot_date, t["s1-a"].run_id) == (True, W1, "run1")  # left alone
    assert (t["s1-b"].capacity, t["s1-b"].first_seen, t["s1-b"].snapshot_date) == (12, W1, W2)
    assert (t["s1-c"].is_active, t["s1-c"].removed_on) == (False, W2)  # soft delete: the row stays
    assert (t["s1-d"].first_seen, t["s1-d"].is_active) == (W2, True)
    assert t["s2-x"].is_active  # another source's leads are out of this snapshot's scope

    inserts = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", r2.version)
        .option("endingVersion", r2.version)
        .load(path)
        .filter(F.col("_change_type") == "insert")
    )
    assert [r.lead_id for r in inserts.collect()] == ["s1-d"]

    week3 = [*week2, {"lead_id": "s1-c", "license_number": "C", "company": "Gamma"}]
    r3 = merge_snapshot(spark, path, leads(spark, week3, W3), ["s1"], W3, "run3")
    assert r3.counts == {"s1": {"new": 0, "changed": 1, "unchanged": 3, "removed": 0}}
    t = state(spark, path)
    assert (t["s1-c"].is_active, t["s1-c"].removed_on, t["s1-c"].first_seen) == (True, None, W1)

    # the same snapshot again changes nothing
    r4 = merge_snapshot(spark, path, leads(spark, week3, W3), ["s1"], W3, "run4")
    assert r4.counts == {"s1": {"new": 0, "changed": 0, "unchanged": 4, "removed": 0}}
    props = DeltaTable.forPath(spark, path).detail().first().properties
    assert props["delta.enableChangeDataFeed"] == "true"
    assert props["delta.enableDeletionVectors"] == "true"
