"""Map to canonical: the lead schema of ../shared/spec/lead-schema.md and the mapping onto it.

``map_to_canonical`` turns one source's raw rows (every source column a string) into canonical
leads: the configured standardizer rules write the business columns, every column the source
cannot fill is a typed NULL, and identity and lineage are added (lead_id from source + business
key, record_hash over the business fields, snapshot_date and source_file). Each row also keeps
its original values in ``raw`` (a map of source column -> value) and the rule failures in
``dq_issues``.

Source columns a file has that the source's config does not list (``columns``) are kept, as
written, in the lead's ``extras`` (a map of column name -> value; NULL when the file has none).
``extras`` is lineage: it is in neither hash. ``record_hash`` covers the business fields only, and
``raw_hash`` the configured columns only (what the rules can read), so the week an agency adds a
column no lead counts as changed or restandardized, and stored standardizations are still reused.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.expressions import column

if TYPE_CHECKING:
    from leadpipe.config import SourceConfig

log = logging.getLogger(__name__)

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
        ("provider_id", T.StringType()),
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

#: The business columns of the first lead schema, in their order. ``record_hash`` hashes these by
#: position (NULL marked) and every later business column only when it is not NULL, so adding a
#: column to the schema changes no stored hash of a lead that does not fill it. Frozen.
RECORD_HASH_V1_COLUMNS = (
    "company",
    "licensee_name",
    "operator",
    "first_name",
    "last_name",
    "title",
    "phone",
    "phone2",
    "email",
    "website_address",
    "address1",
    "address2",
    "city",
    "state",
    "zip",
    "county",
    "license_number",
    "license_type",
    "facility_type",
    "license_status",
    "license_issued",
    "license_renewed",
    "certificate_expiration_date",
    "capacity",
    "ages_served",
    "min_age",
    "max_age",
    "schedule",
    "accepts_financial_aid",
    "curriculum_type",
    "language",
)

#: Source columns that the source's config does not list, as written (lineage, in no hash).
EXTRAS_COLUMN = "extras"
EXTRAS_TYPE = T.MapType(T.StringType(), T.StringType())
LINEAGE_FIELDS: list[T.StructField] = [T.StructField(EXTRAS_COLUMN, EXTRAS_TYPE)]

#: The canonical lead, in order: what PostgreSQL's ``leads`` table holds (``extras`` as jsonb).
LEAD_SCHEMA = T.StructType(IDENTITY_FIELDS + BUSINESS_FIELDS + LINEAGE_FIELDS)
LEAD_COLUMNS: list[str] = LEAD_SCHEMA.fieldNames()

#: Internal columns that travel with a lead inside the lakehouse, never to PostgreSQL.
RAW_COLUMN = "raw"
ISSUES_COLUMN = "dq_issues"
RECORD_COLUMN = "record_no"
RAW_HASH_COLUMN = "raw_hash"
RULES_VERSION_COLUMN = "rules_version"
#: Per field of the source's config (in its order): whether a source value was there (the rules
#: pass computes it; the field-quality report counts it). In no table: scratch rows only.
PRESENT_COLUMN = "dq_present"
ISSUE_TYPE = T.ArrayType(
    T.StructType(
        [
            T.StructField("column", T.StringType()),
            T.StructField("rule", T.StringType()),
            T.StructField("raw_value", T.StringType()),
        ]
    )
)

#: What map_to_canonical returns: the lead, lakehouse-only columns, read lineage, then the rules
#: pass's per-field presence (scratch rows only).
CANONICAL_ROW_COLUMNS = [
    *LEAD_COLUMNS,
    RAW_COLUMN,
    ISSUES_COLUMN,
    RAW_HASH_COLUMN,
    RULES_VERSION_COLUMN,
    RECORD_COLUMN,
    "_corrupt_record",
    PRESENT_COLUMN,
]

_NULL_MARK = "\u2400"  # stands for NULL inside the hash, so NULL and '' differ


#: Values that mean "no key here": a row whose identity is one of these has no lead_id.
#: Frozen with the normalization below (changing either would change lead_ids).
IDENTITY_BLANKS = ("", "N/A", "NA", "N.A.", "NONE", "NULL", "UNKNOWN", "-", "--", "?", "NOT AVAILABLE")
#: White space for identity, spelled out so that Java's regex (Spark) and Python's agree:
#: ASCII blanks plus the Unicode spaces exports carry (no-break, en/em, ideographic, BOM).
IDENTITY_SPACE = r"[\t\n\x0b\x0c\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+"
_KEY_SEPARATOR = "\u001f"


def identity_value(raw: Column, after_last: str | None = None) -> Column:
    """The frozen identity normalization of one raw key cell: text after the last
    ``after_last`` separator (when configured and present), trimmed, upper-cased, inner white
    space folded to one space; NULL when blank or one of ``IDENTITY_BLANKS``.

    Written down once and never changed: it is the lead's identity. It uses no standardization
    rule, so a rule change can never mint new ids.
    """
    v = raw
    if after_last:
        v = F.substring_index(v, after_last, -1)
    v = F.upper(F.trim(F.regexp_replace(v, IDENTITY_SPACE, " ")))
    return F.when(v.isin(*IDENTITY_BLANKS) | v.isNull(), F.lit(None)).otherwise(v)


def lead_id(source: Column, key_parts: list[Column]) -> Column:
    """Stable id from (source, normalized identity values): the same provider gets the same id in
    every snapshot, forever. NULL when any key part is NULL: such a row cannot be a lead."""
    any_null = F.lit(False)
    for p in key_parts:
        any_null = any_null | p.isNull()
    digest = F.sha2(F.concat_ws(_KEY_SEPARATOR, source, *key_parts), 256)
    return F.when(any_null, F.lit(None)).otherwise(F.concat(source, F.lit("-"), F.substring(digest, 1, 24)))


def identity_value_py(raw: str | None, after_last: str | None = None) -> str | None:
    """:func:`identity_value` in Python (tests, support look-ups); the two must agree."""
    if raw is None:
        return None
    v = raw.rsplit(after_last, 1)[-1] if after_last else raw
    v = re.sub(IDENTITY_SPACE, " ", v).strip(" ").upper()
    return None if v in IDENTITY_BLANKS else v


def lead_id_for(source: str, key_parts: list[str], after_last: str | None = None) -> str:
    """``lead_id`` computed in Python from raw key values (tests, backfills, support look-ups)."""
    import hashlib

    normalized = [identity_value_py(p, after_last) for p in key_parts]
    if any(p is None for p in normalized):
        raise ValueError(f"blank identity value in {key_parts!r}")
    digest = hashlib.sha256(_KEY_SEPARATOR.join([source, *normalized]).encode("utf-8")).hexdigest()
    return f"{source}-{digest[:24]}"


def raw_hash(raw_map: Column) -> Column:
    """Hash of the values as the agency wrote them (entries sorted, so column order does not
    matter): tells an agency's change from a rule change. ``map_to_canonical`` hashes the
    source's configured columns only (:func:`raw_hash_of`, the same value): a column the config
    does not list (``extras``) cannot change a standardized field, so it does not make a lead
    changed."""
    return F.sha2(F.to_json(F.array_sort(F.map_entries(raw_map))), 256)


def raw_hash_of(columns: list[str]) -> Column:
    """:func:`raw_hash` of the map of ``columns`` (name -> value), without building the map and
    sorting its entries on every row: the entries are put in key order once, here (Python's
    string order is Spark's: code points, as UTF-8 bytes compare)."""
    entries = [F.struct(F.lit(c).alias("key"), column(c).alias("value")) for c in sorted(columns)]
    return F.sha2(F.to_json(F.array(*entries)), 256)


def record_hash(columns: list[str] | None = None) -> Column:
    """Hash of the standardized business fields; never includes run time or lineage (``extras``).

    The columns of ``RECORD_HASH_V1_COLUMNS`` are hashed by position (NULL marked); any other
    column as ``name=value``, left out while NULL: a business column added to the schema leaves
    the hash of every lead that does not fill it as it was."""
    cols = columns or list(BUSINESS_COLUMNS)
    v1 = set(RECORD_HASH_V1_COLUMNS)
    parts = [F.coalesce(F.col(c).cast("string"), F.lit(_NULL_MARK)) for c in cols if c in v1]
    parts += [F.concat(F.lit(f"{c}="), F.col(c).cast("string")) for c in cols if c not in v1]  # NULL: skipped
    return F.sha2(F.concat_ws("\u001f", *parts), 256)


_PREV = "__prev_"
_REUSE = "__reuse"
_RAW, _ID, _RAW_HASH, _EXTRAS = "__lp_raw", "__lp_lead_id", "__lp_raw_hash", "__lp_extras"


def _column_map(columns: list[str]) -> Column:
    """map(source column name -> its value as read), in ``columns`` order."""
    return F.map_from_arrays(F.array(*[F.lit(c) for c in columns]), F.array(*[column(c) for c in columns]))


def map_to_canonical(raw: DataFrame, cfg: SourceConfig, previous: DataFrame | None = None) -> DataFrame:
    """Raw rows of one source (see ``read.read_source``) -> canonical leads with lineage.

    Output columns: ``CANONICAL_ROW_COLUMNS``. ``lead_id`` comes from the raw identity cells
    (``identity_value``), never from a rule's output; ``rules_version`` names the rules that made
    the business fields.

    ``previous``: the leads table's rows (any columns including ``lead_id``, ``raw_hash``,
    ``rules_version``, the business columns and ``dq_issues``), at most one per ``lead_id`` (as
    the MERGE keeps the table; a second stored copy with the same hash would double the raw row,
    whose two copies the duplicate-key search then quarantines). A row whose lead has the same
    ``raw_hash`` there, made by the same ``rules_version``, is not standardized again: the rules
    would give exactly the stored values (same agency values, same rules), so they are taken from
    there, and the library-backed rules parse only new and changed values (a weekly file is ~98 %
    unchanged). Its output equals the output without ``previous``, with one deliberate exception:
    a two-digit year keeps the century chosen when its value was first standardized (the date
    rule's window moves with the snapshot date; an unchanged agency value keeps its date). A ``previous`` that lacks a
    column this version writes (a table made by an older version, before its migration) is not
    used: every row is standardized.

    ``extras``: the columns of ``raw`` that ``cfg.columns`` does not list, with their values as
    written (NULL when there are none); ``raw_hash`` is taken over the configured columns only.
    """
    from leadpipe.read import source_columns
    from leadpipe.standardize import apply_rules

    columns = source_columns(raw)
    configured = [c for c in columns if c in set(cfg.columns)]
    extra = [c for c in columns if c not in set(cfg.columns)]
    raw_map = _column_map(columns)
    key_parts = [identity_value(column(c), cfg.identity.after_last) for c in cfg.identity.columns]
    # internal names: a source column called "raw" or "lead_id" must not be shadowed
    raw = raw.withColumn(_RAW, raw_map)
    extras = F.transform_values(_column_map(extra), lambda _k, v: F.translate(v, "\x00", "")) if extra else None
    raw = raw.withColumn(_EXTRAS, extras if extra else F.lit(None).cast(EXTRAS_TYPE))  # jsonb cannot hold NUL
    raw = raw.withColumn(_ID, lead_id(F.lit(cfg.id), key_parts))
    raw = raw.withColumn(_RAW_HASH, raw_hash_of(configured))
    version = cfg.rules_version()
    reuse = None
    kept = [name for name in BUSINESS_COLUMNS] + [ISSUES_COLUMN]
    if previous is not None:
        lacking = [
            c for c in ["lead_id", "source", RAW_HASH_COLUMN, RULES_VERSION_COLUMN, *kept] if c not in previous.columns
        ]
        if lacking:
            log.info("map: %s: the leads table lacks %s (not migrated yet): every row is standardized", cfg.id, lacking)
            previous = None
    if previous is not None:
        prev = previous.filter(
            (F.col("source") == cfg.id) & (F.col(RULES_VERSION_COLUMN) == version) & F.col("lead_id").isNotNull()
        ).select(
            F.col("lead_id").alias(_PREV + "lead_id"),
            F.col(RAW_HASH_COLUMN).alias(_PREV + RAW_HASH_COLUMN),
            *[F.col(c).alias(_PREV + c) for c in kept],
        )
        # No dropDuplicates: the table holds one row per lead (a MERGE inserts a lead only when
        # the table lacks it, from a snapshot whose duplicate keys were quarantined), and the
        # deduplication sorted the source's stored rows of these rules twice (string columns make it a
        # sort aggregate) plus a shuffle: reading and mapping a 1M-row no-change week took
        # 43.8 and 45.3 s without it, 56.3 and 52.4 s with it (warm, A/B interleaved).
        raw = raw.join(
            prev,
            (F.col(_ID) == F.col(_PREV + "lead_id")) & (F.col(_RAW_HASH) == F.col(_PREV + RAW_HASH_COLUMN)),
            "left",
        )
        raw = raw.withColumn(_REUSE, F.col(_PREV + "lead_id").isNotNull())
        reuse = F.col(_REUSE)
    staged = apply_rules(raw, cfg, skip=_REUSE if reuse is not None else None)
    filled = {
        c.removeprefix("__")
        for c in staged.columns
        if c.startswith("__") and not c.startswith((_PREV, "__lp_")) and c != _REUSE
    }
    df = staged.select(
        "*",
        *[F.lit(None).cast(dtype).alias(f"__{name}") for name, dtype in BUSINESS_COLUMNS.items() if name not in filled],
    )

    def value(name: str, dtype=None) -> Column:
        made = F.col(f"__{name}").cast(dtype) if dtype is not None else F.col(name)
        return made if reuse is None else F.when(reuse, F.col(_PREV + name)).otherwise(made)

    df = df.select(
        F.lit(cfg.id).alias("source"),
        F.lit(cfg.licensing_authority).alias("licensing_authority"),
        F.col("_source_file").alias("source_file"),
        F.col("_snapshot_date").alias("snapshot_date"),
        F.col("_snapshot_date").alias("first_seen"),
        *[value(name, dtype).alias(name) for name, dtype in BUSINESS_COLUMNS.items()],
        F.col(_EXTRAS).alias(EXTRAS_COLUMN),
        F.col(_RAW).alias(RAW_COLUMN),
        value(ISSUES_COLUMN).alias(ISSUES_COLUMN),
        F.col("_record_no").alias(RECORD_COLUMN),
        F.col("_corrupt_record"),
        F.col(PRESENT_COLUMN),
        F.col(_ID).alias("lead_id"),
        F.col(_RAW_HASH).alias(RAW_HASH_COLUMN),
    )
    df = df.withColumn("record_hash", record_hash())
    df = df.withColumn(RULES_VERSION_COLUMN, F.lit(version))
    return df.select(*CANONICAL_ROW_COLUMNS)
