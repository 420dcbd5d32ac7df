"""Map to canonical: the lead schema of ../shared/spec/lead-schema.md and the mapping onto it.

``map_to_canonical`` turns one source's raw rows (every source column a string) into canonical
leads: the configured standardizer rules write the business columns, every column the source
cannot fill is a typed NULL, and identity and lineage are added (lead_id from source + business
key, record_hash over the business fields, snapshot_date and source_file). Each row also keeps
its original values in ``raw`` (a map of source column -> value) and the rule failures in
``dq_issues``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

if TYPE_CHECKING:
    from leadpipe.config import SourceConfig

FACILITY_TYPES = ("Center", "Home", "Other")

IDENTITY_FIELDS: list[T.StructField] = [
    T.StructField("lead_id", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("licensing_authority", T.StringType()),
    T.StructField("source_file", T.StringType()),
    T.StructField("snapshot_date", T.DateType()),
    T.StructField("first_seen", T.DateType()),
    T.StructField("record_hash", T.StringType()),
]

BUSINESS_FIELDS: list[T.StructField] = [
    T.StructField(name, dtype)
    for name, dtype in [
        ("company", T.StringType()),
        ("licensee_name", T.StringType()),
        ("operator", T.StringType()),
        ("first_name", T.StringType()),
        ("last_name", T.StringType()),
        ("title", T.StringType()),
        ("phone", T.StringType()),
        ("phone2", T.StringType()),
        ("email", T.StringType()),
        ("website_address", T.StringType()),
        ("address1", T.StringType()),
        ("address2", T.StringType()),
        ("city", T.StringType()),
        ("state", T.StringType()),
        ("zip", T.StringType()),
        ("county", T.StringType()),
        ("license_number", T.StringType()),
        ("license_type", T.StringType()),
        ("facility_type", T.StringType()),
        ("license_status", T.StringType()),
        ("license_issued", T.DateType()),
        ("license_renewed", T.DateType()),
        ("certificate_expiration_date", T.DateType()),
        ("capacity", T.IntegerType()),
        ("ages_served", T.StringType()),
        ("min_age", T.IntegerType()),
        ("max_age", T.IntegerType()),
        ("schedule", T.StringType()),
        ("accepts_financial_aid", T.BooleanType()),
        ("curriculum_type", T.StringType()),
        ("language", T.StringType()),
    ]
]

BUSINESS_COLUMNS: dict[str, T.DataType] = {f.name: f.dataType for f in BUSINESS_FIELDS}

#: The canonical lead, in order: what PostgreSQL's ``leads`` table holds.
LEAD_SCHEMA = T.StructType(IDENTITY_FIELDS + BUSINESS_FIELDS)
LEAD_COLUMNS: list[str] = LEAD_SCHEMA.fieldNames()

#: Internal columns that travel with a lead inside the lakehouse, never to PostgreSQL.
RAW_COLUMN = "raw"
ISSUES_COLUMN = "dq_issues"
RECORD_COLUMN = "record_no"
ISSUE_TYPE = T.ArrayType(
    T.StructType(
        [
            T.StructField("column", T.StringType()),
            T.StructField("rule", T.StringType()),
            T.StructField("raw_value", T.StringType()),
        ]
    )
)

_NULL_MARK = "\u2400"  # stands for NULL inside the hash, so NULL and '' differ


def lead_id(source: Column, key_parts: list[Column]) -> Column:
    """Stable id: the same (source, business key) gives the same id in every snapshot, forever.

    NULL when any key part is NULL: such a row cannot be a lead and is quarantined.
    """
    normalized = [F.upper(F.trim(p)) for p in key_parts]
    any_null = F.lit(False)
    for p in normalized:
        any_null = any_null | p.isNull() | (p == "")
    digest = F.sha2(F.concat_ws("\u001f", source, *normalized), 256)
    return F.when(any_null, F.lit(None)).otherwise(F.concat(source, F.lit("-"), F.substring(digest, 1, 24)))


def lead_id_for(source: str, key_parts: list[str]) -> str:
    """``lead_id`` computed in Python (for tests, backfills and support look-ups)."""
    import hashlib

    normalized = [p.strip().upper() for p in key_parts]
    digest = hashlib.sha256("\u001f".join([source, *normalized]).encode("utf-8")).hexdigest()
    return f"{source}-{digest[:24]}"


def record_hash(columns: list[str] | None = None) -> Column:
    """Hash of the standardized business fields; never includes run time or lineage."""
    cols = columns or list(BUSINESS_COLUMNS)
    parts = [F.coalesce(F.col(c).cast("string"), F.lit(_NULL_MARK)) for c in cols]
    return F.sha2(F.concat_ws("\u001f", *parts), 256)


def map_to_canonical(raw: DataFrame, cfg: SourceConfig) -> DataFrame:
    """Raw rows of one source (see ``read.read_source``) -> canonical leads with lineage.

    Output columns: LEAD_COLUMNS, then ``raw``, ``dq_issues`` and ``record_no``.
    """
    from leadpipe.read import source_columns
    from leadpipe.standardize import apply_rules

    staged = apply_rules(raw, cfg)
    filled = set(c.removeprefix("__") for c in staged.columns if c.startswith("__"))
    df = staged.select(
        "*",
        *[F.lit(None).cast(dtype).alias(f"__{name}") for name, dtype in BUSINESS_COLUMNS.items() if name not in filled],
    )
    columns = source_columns(raw)
    raw_map = F.map_from_arrays(F.array(*[F.lit(c) for c in columns]), F.array(*[F.col(f"`{c}`") for c in columns]))
    df = df.select(
        F.lit(cfg.id).alias("source"),
        F.lit(cfg.licensing_authority).alias("licensing_authority"),
        F.col("_source_file").alias("source_file"),
        F.col("_snapshot_date").alias("snapshot_date"),
        F.col("_snapshot_date").alias("first_seen"),
        *[F.col(f"__{name}").cast(dtype).alias(name) for name, dtype in BUSINESS_COLUMNS.items()],
        raw_map.alias(RAW_COLUMN),
        F.col(ISSUES_COLUMN),
        F.col("_record_no").alias(RECORD_COLUMN),
        F.col("_corrupt_record"),
    )
    df = df.withColumn("lead_id", lead_id(F.col("source"), [F.col(k) for k in cfg.business_key]))
    df = df.withColumn("record_hash", record_hash())
    return df.select(*LEAD_COLUMNS, RAW_COLUMN, ISSUES_COLUMN, RECORD_COLUMN, "_corrupt_record")
