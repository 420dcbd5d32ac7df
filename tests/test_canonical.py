"""Mapping a source's raw rows onto the canonical lead."""

from datetime import date

from pyspark.sql import functions as F

from leadpipe.canonical import (
    LEAD_COLUMNS,
    identity_value,
    lead_id,
    lead_id_for,
    map_to_canonical,
    raw_hash,
    raw_hash_of,
)
from leadpipe.read import META_COLUMNS


def raw_rows(spark, cfg, rows, extra=()):
    """Raw rows as read.read_source makes them: the configured columns, then ``extra`` columns
    the file has beyond them."""
    cols = list(cfg.columns) + list(extra)
    df = spark.createDataFrame([tuple(r.get(c) for c in cols) for r in rows], ", ".join(f"`{c}` string" for c in cols))
    return df.select(
        "*",
        F.lit("file:/in/07-07-2023 Texas DHHS.csv").alias("_source_file"),
        F.lit(date(2023, 7, 7)).alias("_snapshot_date"),
        F.monotonically_increasing_id().alias("_record_no"),
        F.lit(None).cast("string").alias("_corrupt_record"),
    ).select(*cols, *META_COLUMNS)


def test_lead_id_is_stable_and_the_same_in_python_and_spark(spark):
    raw = [" 1239246 ", None, "k82 0055", "n/a", "CHILD CARE FAMILY - k820055232 ", "  ", "\u00a01239246\u2003\t"]
    df = spark.createDataFrame([("tx_hhs", v) for v in raw], "source string, key string")
    key = identity_value(F.col("key"), " - ")
    got = [r.id for r in df.select(lead_id(F.col("source"), [key]).alias("id")).collect()]
    assert got == [
        lead_id_for("tx_hhs", ["1239246"]),
        None,
        lead_id_for("tx_hhs", ["K82   0055"]),  # case and inner white space do not make a new provider
        None,  # a blank marker is no identity
        lead_id_for("tx_hhs", ["K820055232"]),
        None,
        lead_id_for("tx_hhs", ["1239246"]),  # no-break and em spaces from an export: the same provider
    ]
    assert lead_id_for("tx_hhs", ["1239246"]) == lead_id_for("tx_hhs", ["1239246 "])
    assert lead_id_for("tx_hhs", ["1239246"]) != lead_id_for("ok_dhs", ["1239246"])


def test_lead_ids_are_frozen():
    """The identity normalization is part of every delivered lead: these values never change."""
    assert lead_id_for("tx_hhs", ["1239246"]) == "tx_hhs-" + _sha("tx_hhs\u001f1239246")
    assert lead_id_for("ok_dhs", ["CHILD CARE FAMILY - K820055232"], " - ") == "ok_dhs-" + _sha(
        "ok_dhs\u001fK820055232"
    )


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:24]


def test_texas_row_maps_to_every_canonical_column(spark, sources):
    cfg = sources["tx_hhs"]
    row = {
        "Operation #": "1239246",
        "Agency Number": "",
        "Operation/Caregiver Name": 'K" Street Learning Center LLC"',
        "Address": "19290 K ST ",
        "City": "SOMERSET",
        "State": "TX",
        "Zip": "78069",
        "County": "BEXAR",
        "Phone": "830-429-1010",
        "Type": "Licensed Center - Child Care Program",
        "Status": "Full Permit",
        "Issue Date": "10/13/2011",
        "Capacity": "82",
        "Email Address": "sylvia@kstreetlearningcenter.com",
        "Facility ID": "773628",
        "Monitoring Frequency": "",
        "Infant": "Y",
        "Toddler": "Y",
        "Preschool": "Y",
        "School": "Y",
    }
    out = map_to_canonical(raw_rows(spark, cfg, [row]), cfg)
    assert out.columns[: len(LEAD_COLUMNS)] == LEAD_COLUMNS
    got = out.first().asDict()
    assert got["lead_id"] == lead_id_for("tx_hhs", ["1239246"])
    assert got["source"] == "tx_hhs"
    assert got["licensing_authority"] == "Texas Health and Human Services Commission"
    assert got["snapshot_date"] == got["first_seen"] == date(2023, 7, 7)
    expected = {
        "company": '"K" Street Learning Center LLC',
        "address1": "19290 K ST",
        "city": "SOMERSET",
        "state": "TX",
        "zip": "78069",
        "county": "BEXAR",
        "phone": "+18304291010",
        "email": "sylvia@kstreetlearningcenter.com",
        "license_number": "1239246",
        "provider_id": "773628",
        "license_type": "Licensed Center - Child Care Program",
        "facility_type": "Center",
        "license_status": "Active",
        "license_issued": date(2011, 10, 13),
        "capacity": 82,
        "ages_served": "Infants, Toddlers, Preschool, School-age",
        "min_age": 0,
        "max_age": None,
    }
    assert {k: got[k] for k in expected} == expected
    # what the source cannot fill is NULL, never a sentinel
    for col in ("licensee_name", "operator", "first_name", "title", "phone2", "website_address", "schedule"):
        assert got[col] is None
    assert got["raw"]["Operation/Caregiver Name"] == 'K" Street Learning Center LLC"'
    assert got["dq_issues"] == []
    assert got["extras"] is None  # the file has no column beyond the config's


def test_raw_hash_of_columns_equals_the_hash_of_their_sorted_map(spark):
    """raw_hash_of sorts the columns once, in Python; stored raw_hash values were made from the
    map's entries sorted by Spark on every row: the two must give the same hash, or every
    stored standardization would stop being reused."""
    cols = ["Zip", "address", "City", "Phone#", "\u00e9cole", "a b", "_x", "Z"]
    rows = [
        ("01234", '12 "Main" St\\', None, "(702) 555-0100", "caf\u00e9", "", "\u2003", "tab\there\nline"),
        (None, None, None, None, None, None, None, None),
    ]
    df = spark.createDataFrame(rows, ", ".join(f"`{c}` string" for c in cols))
    mapped = F.map_from_arrays(F.array(*[F.lit(c) for c in cols]), F.array(*[F.col(f"`{c}`") for c in cols]))
    got = df.select(raw_hash_of(cols).alias("fast"), raw_hash(mapped).alias("map")).collect()
    assert [r.fast for r in got] == [r.map for r in got]
    assert got[0].fast != got[1].fast


def test_record_hash_ignores_lineage_but_sees_business_fields(spark, sources):
    cfg = sources["tx_hhs"]
    base = {"Operation #": "1", "Operation/Caregiver Name": "A", "Capacity": "12"}
    a = map_to_canonical(raw_rows(spark, cfg, [base]), cfg).first()
    b = map_to_canonical(raw_rows(spark, cfg, [{**base, "Agency Number": "99"}]), cfg).first()  # not a lead field
    c = map_to_canonical(raw_rows(spark, cfg, [{**base, "Capacity": "13"}]), cfg).first()
    d = map_to_canonical(raw_rows(spark, cfg, [{**base, "Facility ID": "99"}]), cfg).first()  # provider_id
    assert a.record_hash == b.record_hash
    assert a.record_hash != c.record_hash
    assert a.record_hash != d.record_hash


def test_extra_columns_are_kept_in_extras_and_in_no_hash(spark, sources):
    """A column the config does not list is kept as written in ``extras`` (and ``raw``); it
    changes neither record_hash nor raw_hash, so the week an agency adds one no lead changes."""
    cfg = sources["tx_hhs"]
    base = {"Operation #": "1", "Operation/Caregiver Name": "A", "Capacity": "12", "Facility ID": "7"}
    plain = map_to_canonical(raw_rows(spark, cfg, [base]), cfg).first()
    wider = raw_rows(spark, cfg, [{**base, "Rating": " 4 stars ", "Notes": None}], extra=["Rating", "Notes"])
    got = map_to_canonical(wider, cfg).first()
    assert plain.extras is None
    assert got.extras == {"Rating": " 4 stars ", "Notes": None}  # as written, untrimmed
    assert got.raw["Rating"] == " 4 stars "
    assert (got.record_hash, got.raw_hash) == (plain.record_hash, plain.raw_hash)
    other = raw_rows(spark, cfg, [{**base, "Rating": "5 stars", "Notes": None}], extra=["Rating", "Notes"])
    assert map_to_canonical(other, cfg).first().raw_hash == plain.raw_hash
    # a configured column still counts
    changed = map_to_canonical(raw_rows(spark, cfg, [{**base, "Agency Number": "2"}]), cfg).first()
    assert changed.raw_hash != plain.raw_hash


def test_a_new_business_column_leaves_the_hash_of_leads_that_do_not_fill_it(spark, sources):
    """record_hash of a lead without provider_id is the hash of the first schema's columns, as
    the leads table stored it before provider_id existed (no lead is restandardized by it)."""
    from leadpipe.canonical import RECORD_HASH_V1_COLUMNS

    cfg = sources["nv_dpbh"]
    row = {"Name": "Little Stars", "Credential Number": "007-23", "Phone#": "7025551234"}
    out = map_to_canonical(raw_rows(spark, cfg, [row]), cfg)
    old = F.sha2(
        F.concat_ws("\u001f", *[F.coalesce(F.col(c).cast("string"), F.lit("\u2400")) for c in RECORD_HASH_V1_COLUMNS]),
        256,
    )
    got = out.select("record_hash", old.alias("old"), "provider_id").first()
    assert got.provider_id is None
    assert got.record_hash == got.old


def test_a_leads_table_without_the_new_columns_is_not_reused(spark, sources):
    """``previous`` from a leads table an older version made (no provider_id, no extras): the
    rows are standardized afresh, with the same output as without it."""
    cfg = sources["tx_hhs"]
    row = {"Operation #": "1", "Operation/Caregiver Name": "A", "Capacity": "12", "Facility ID": "7"}
    raw = raw_rows(spark, cfg, [row])
    fresh = map_to_canonical(raw, cfg)
    old_table = fresh.drop("provider_id", "extras").withColumn("company", F.lit("STORED"))
    again = map_to_canonical(raw, cfg, previous=old_table).first()
    assert (again.company, again.provider_id) == ("A", "7")
