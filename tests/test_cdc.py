"""Change detection: the MERGE into the Delta table of known leads, on a real Delta table, and
the state of record it carries in its own commit."""

from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import functions as F

from leadpipe.merge import (
    DIFF_KIND,
    REMOVED_MARK,
    SnapshotDiff,
    _latest_snapshot,
    diff_rows,
    diff_snapshot,
    merge_source_snapshot,
    read_applied_state,
    snapshot_diff,
    table_id_and_version,
    transaction_versions,
    txn_version,
)
from leadpipe.warehouse import set_table_properties
from tests.helpers import leads

W1, W2, W3, W4 = date(2024, 1, 5), date(2024, 1, 12), date(2024, 1, 19), date(2024, 1, 26)


def state(spark, path):
    return {r.lead_id: r for r in spark.read.format("delta").load(path).collect()}


def merge(spark, path, rows, source, d, run_id):
    meta = {
        "rows_loaded": len(rows),
        "rows_read": len(rows),
        "files": [{"name": f"{d}.csv", "size": 1, "checksum": "x"}],
    }
    return merge_source_snapshot(spark, path, leads(spark, rows, d), source, d, run_id, meta)


def test_new_changed_unchanged_removed_and_back(spark, tmp_path):
    path = str(tmp_path / "leads")
    week1 = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha"},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta"},
        {"lead_id": "s1-c", "license_number": "C", "company": "Gamma"},
    ]
    r1 = merge(spark, path, week1, "s1", W1, "run1")
    assert (r1.counts["new"], r1.counts["unchanged"]) == (3, 0)
    other = [{"lead_id": "s2-x", "license_number": "X", "company": "Other source", "source": "s2"}]
    merge(spark, path, other, "s2", W1, "run1")

    week2 = [
        {"lead_id": "s1-a", "license_number": "A", "company": "Alpha"},
        {"lead_id": "s1-b", "license_number": "B", "company": "Beta", "capacity": 12},
        {"lead_id": "s1-d", "license_number": "D", "company": "Delta"},
    ]
    r2 = merge(spark, path, week2, "s1", W2, "run2")
    assert r2.counts == {"new": 1, "changed": 1, "returned": 0, "restandardized": 0, "removed": 1, "unchanged": 1}
    t = state(spark, path)
    assert (t["s1-a"].is_active, t["s1-a"].snapshot_date, t["s1-a"].run_id) == (True, W1, "run1")  # left alone
    assert (t["s1-b"].capacity, t["s1-b"].first_seen, t["s1-b"].snapshot_date) == (12, W1, W2)
    assert (t["s1-c"].is_active, t["s1-c"].removed_on, t["s1-c"].last_change) == (False, W2, "removed")
    assert (t["s1-d"].first_seen, t["s1-d"].is_active, t["s1-d"].last_change) == (W2, True, "new")
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
    r3 = merge(spark, path, week3, "s1", W3, "run3")
    assert (r3.counts["returned"], r3.counts["unchanged"], r3.counts["new"]) == (1, 3, 0)
    t = state(spark, path)
    assert (t["s1-c"].is_active, t["s1-c"].removed_on, t["s1-c"].first_seen) == (True, None, W1)

    props = DeltaTable.forPath(spark, path).detail().first().properties
    assert props["delta.enableChangeDataFeed"] == "true"
    assert props["delta.enableDeletionVectors"] == "false"


def test_table_properties_are_set_in_one_commit_and_only_when_they_differ(spark, tmp_path):
    path = str(tmp_path / "t")
    spark.range(1).write.format("delta").option("delta.enableDeletionVectors", "true").save(path)
    table = DeltaTable.forPath(spark, path)
    wanted = {"delta.enableDeletionVectors": "false", "leadpipe.note": "it's a \\ test"}  # quoted as SQL text
    assert set_table_properties(spark, path, wanted) == wanted
    version = table.history(1).first().version
    props = table.detail().first().properties
    assert {k: props[k] for k in wanted} == wanted
    assert set_table_properties(spark, path, wanted) == {}  # nothing differs: no commit
    assert table.history(1).first().version == version


def test_a_snapshot_is_committed_once_with_its_record(spark, tmp_path):
    path = str(tmp_path / "leads")
    rows = [{"lead_id": "s1-a", "license_number": "A", "company": "Alpha"}]
    r1 = merge(spark, path, rows, "s1", W2, "run1")
    version = DeltaTable.forPath(spark, path).history(1).first().version
    # the same snapshot again, and an older one, commit nothing: Delta's own transaction id check
    assert merge(spark, path, rows, "s1", W2, "run2").skipped
    assert merge(spark, path, [], "s1", W1, "late").skipped
    assert DeltaTable.forPath(spark, path).history(1).first().version == version
    # a newer snapshot with no change still commits, so the state of record moves on
    r3 = merge(spark, path, rows, "s1", W3, "run3")
    assert r3.version == version + 1 and r3.counts["unchanged"] == 1
    applied = read_applied_state(spark, path)
    assert applied.latest == {"s1": W3}
    assert applied.applied[("s1", W2)].run_id == "run1" and applied.applied[("s1", W2)].version == r1.version
    assert applied.applied[("s1", W2)].files == ((f"{W2}.csv", 1, "x"),)
    assert txn_version(W3) == 20240119


def test_transaction_ids_and_position_come_from_the_checksum_or_the_log(spark, tmp_path):
    path = str(tmp_path / "leads")
    merge(spark, path, [{"lead_id": "s1-a", "license_number": "A"}], "s1", W1, "run1")
    merge(spark, path, [{"lead_id": "s2-x", "license_number": "X", "source": "s2"}], "s2", W2, "run1")
    merge(spark, path, [{"lead_id": "s1-a", "license_number": "A"}], "s1", W3, "run2")
    expected = {"leadpipe:s1": 20240119, "leadpipe:s2": 20240112}
    assert transaction_versions(spark, path) == expected  # from the newest version's .crc
    detail = DeltaTable.forPath(spark, path).detail().first()
    history = DeltaTable.forPath(spark, path).history(1).first()
    assert table_id_and_version(spark, path) == (detail.id, history.version)
    # a log without checksum files (another writer, or an older Delta): Delta's state reconstruction
    for crc in (tmp_path / "leads" / "_delta_log").glob("*.crc"):
        crc.unlink()
    spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()  # the cached snapshot keeps the checksum it read
    assert _latest_snapshot(spark, path).checksumOpt().isEmpty()
    assert transaction_versions(spark, path) == expected
    assert read_applied_state(spark, path).latest == {"s1": W3, "s2": W2}


def test_a_rule_change_is_restandardized_not_changed(spark, tmp_path):
    path = str(tmp_path / "leads")
    raw = {"Name": "alpha kids"}
    merge(spark, path, [{"lead_id": "s1-a", "company": "alpha kids", "raw": raw}], "s1", W1, "run1")
    # same agency values, a new rule output: restandardized
    r2 = merge(
        spark,
        path,
        [{"lead_id": "s1-a", "company": "ALPHA KIDS", "raw": raw, "rules_version": "rules-2"}],
        "s1",
        W2,
        "r2",
    )
    assert (r2.counts["restandardized"], r2.counts["changed"]) == (1, 0)
    # the agency changed the value: changed
    raw3 = {"Name": "alpha kids llc"}
    r3 = merge(spark, path, [{"lead_id": "s1-a", "company": "ALPHA KIDS LLC", "raw": raw3}], "s1", W3, "r3")
    assert (r3.counts["restandardized"], r3.counts["changed"]) == (0, 1)
    assert state(spark, path)["s1-a"].rules_version == "rules-1"


def test_extras_stay_the_latest_snapshots_and_change_no_lead(spark, tmp_path):
    """``extras`` (columns the config does not list) is in neither hash: the week an agency adds
    a column, and a week its values change, no lead is changed or restandardized; the lead's
    extras are rewritten to its latest snapshot's (counted unchanged), others are left alone."""
    path = str(tmp_path / "leads")
    week1 = [{"lead_id": "s1-a", "company": "Alpha"}, {"lead_id": "s1-b", "company": "Beta"}]
    merge(spark, path, week1, "s1", W1, "run1")
    assert {r.extras for r in state(spark, path).values()} == {None}

    week2 = [{**r, "extras": {"Rating": "4", "Notes": None}} for r in week1]
    r2 = merge(spark, path, week2, "s1", W2, "run2")
    assert r2.counts == {"new": 0, "changed": 0, "returned": 0, "restandardized": 0, "removed": 0, "unchanged": 2}
    t = state(spark, path)
    assert t["s1-a"].extras == {"Rating": "4", "Notes": None}
    assert (t["s1-a"].last_change, t["s1-a"].snapshot_date, t["s1-a"].first_seen) == ("refreshed", W2, W1)

    week3 = [
        {**week1[0], "extras": {"Notes": None, "Rating": "5"}},
        {**week1[1], "extras": {"Notes": None, "Rating": "4"}},
    ]
    r3 = merge(spark, path, week3, "s1", W3, "run3")
    assert r3.counts["unchanged"] == 2 and r3.counts["changed"] == 0
    t = state(spark, path)
    assert (t["s1-a"].extras["Rating"], t["s1-a"].snapshot_date) == ("5", W3)
    assert t["s1-b"].snapshot_date == W2  # same extras in another order: left alone


def test_the_merge_is_given_only_the_leads_it_changes(spark, tmp_path):
    """The MERGE's source is the diff: new, changed (any part of the CHANGED condition: the
    business fields, a return, extras) and removed leads; an unchanged lead, a lead removed
    before and still gone, and another source's leads are not in it. Broadcast or not, the
    rows are the same; a week with nothing to do has an empty diff and still commits."""
    path = str(tmp_path / "leads")
    week1 = [
        {"lead_id": f"s1-{k}", "license_number": k.upper(), "company": name}
        for k, name in [("a", "Alpha"), ("b", "Beta"), ("c", "Gamma"), ("e", "Epsilon"), ("f", "Phi")]
    ]
    merge(spark, path, week1, "s1", W1, "run1")
    merge(spark, path, [{"lead_id": "s2-x", "license_number": "X", "company": "X", "source": "s2"}], "s2", W1, "run1")
    merge(spark, path, [r for r in week1 if r["lead_id"] != "s1-e"], "s1", W2, "run2")  # e removed
    week3 = [
        week1[0],  # a: unchanged
        {**week1[1], "capacity": 12},  # b: changed
        {**week1[4], "extras": {"Rating": "4"}},  # f: extras only
        {"lead_id": "s1-d", "license_number": "D", "company": "Delta"},  # d: new
    ]  # c: removed now; e: removed before, still gone
    snapshot = leads(spark, week3, W3)
    table = spark.read.format("delta").load(path)
    diff = snapshot_diff(table, snapshot, "s1")
    assert sorted((r.lead_id, r[REMOVED_MARK]) for r in diff.collect()) == [
        ("s1-b", False),
        ("s1-c", True),
        ("s1-d", False),
        ("s1-f", False),
    ]
    for broadcast in (True, False):
        rows = {r.lead_id: r for r in diff_rows(snapshot, diff, broadcast).collect()}
        assert sorted(rows) == ["s1-b", "s1-c", "s1-d", "s1-f"]
        assert (rows["s1-b"].capacity, rows["s1-d"].company, rows["s1-f"].extras) == (12, "Delta", {"Rating": "4"})
        assert (rows["s1-c"][REMOVED_MARK], rows["s1-c"].company, rows["s1-b"][REMOVED_MARK]) == (True, None, False)

    r3 = merge(spark, path, week3, "s1", W3, "run3")
    assert r3.counts == {"new": 1, "changed": 1, "returned": 0, "restandardized": 0, "removed": 1, "unchanged": 2}
    t = state(spark, path)
    assert (t["s1-c"].is_active, t["s1-c"].removed_on, t["s1-c"].run_id) == (False, W3, "run3")
    assert (t["s1-e"].removed_on, t["s1-e"].run_id, t["s1-f"].extras) == (W2, "run2", {"Rating": "4"})
    assert (t["s1-a"].run_id, t["s2-x"].is_active) == ("run1", True)

    assert snapshot_diff(spark.read.format("delta").load(path), leads(spark, week3, W4), "s1").count() == 0
    r4 = merge(spark, path, week3, "s1", W4, "run4")
    assert r4.version == r3.version + 1 and r4.counts["unchanged"] == 4
    assert transaction_versions(spark, path)["leadpipe:s1"] == txn_version(W4)


def test_the_diff_says_what_the_merge_will_do_and_a_stale_or_wrong_one_is_not_trusted(spark, tmp_path, caplog):
    """One job gives the diff's kinds (what the hold check counts: active leads before, removals);
    a diff read from an older version of the table is read again before the MERGE; a diff whose
    counts the commit's metrics contradict gives way to the commit's change feed."""
    path = str(tmp_path / "leads")
    week1 = [{"lead_id": f"s1-{k}", "license_number": k.upper(), "company": k} for k in "abcd"]
    merge(spark, path, week1, "s1", W1, "run1")
    merge(spark, path, [week1[0], week1[1], week1[2]], "s1", W2, "run2")  # d removed
    week3 = [
        week1[0],  # a unchanged
        {**week1[1], "company": "B2"},  # b changed
        {**week1[3]},  # d returned
        {"lead_id": "s1-e", "license_number": "E", "company": "e"},  # e new
    ]  # c removed
    snapshot = leads(spark, week3, W3)
    diff = diff_snapshot(spark, path, snapshot, "s1")
    try:
        assert diff.counts == {
            "new": 1, "removed": 1, "returned": 1, "changed": 1, "restandardized": 0, "refreshed": 0
        }  # fmt: skip
        assert sorted((r.lead_id, r[DIFF_KIND]) for r in diff.rows.collect()) == [
            ("s1-b", "changed"),
            ("s1-c", "removed"),
            ("s1-d", "returned"),
            ("s1-e", "new"),
        ]
        assert (diff.active_before(len(week3)), diff.counts["removed"]) == (3, 1)  # a, b, c were active
        # the table moves on after the diff was read (another week 3, where only a changed): the
        # diff is stale (it does not list a) and the MERGE of week 4 (= the week 3 above) reads its own
        merge(spark, path, [{**week1[0], "company": "A2"}, week1[1], week1[2]], "s1", W3, "run3")
        meta = {"rows_loaded": 4, "rows_read": 4, "files": []}
        r4 = merge_source_snapshot(spark, path, leads(spark, week3, W4), "s1", W4, "run4", meta, diff=diff)
        assert r4.counts == {"new": 1, "changed": 2, "returned": 1, "restandardized": 0, "removed": 1, "unchanged": 0}
        assert "differ from its diff" not in caplog.text  # counted from a diff of the version it merged
        t = state(spark, path)
        assert {k: (r.company, r.is_active) for k, r in t.items()} == {
            "s1-a": ("a", True), "s1-b": ("B2", True), "s1-c": ("c", False), "s1-d": ("d", True), "s1-e": ("e", True)
        }  # fmt: skip
    finally:
        diff.release()
    # a diff of the right version whose counts are wrong: the commit's own change feed counts
    week5 = [week1[0], {"lead_id": "s1-f", "license_number": "F", "company": "f"}]  # b, d, e removed
    W5 = date(2024, 2, 2)
    snapshot = leads(spark, week5, W5)
    real = diff_snapshot(spark, path, snapshot, "s1")
    try:
        wrong = SnapshotDiff(real.rows, {**real.counts, "removed": 1}, real.version)
        meta = {"rows_loaded": 2, "rows_read": 2, "files": []}
        r5 = merge_source_snapshot(spark, path, snapshot, "s1", W5, "run5", meta, diff=wrong)
    finally:
        real.release()
    assert r5.counts == {"new": 1, "changed": 0, "returned": 0, "restandardized": 0, "removed": 3, "unchanged": 1}
    assert "differ from its diff" in caplog.text
