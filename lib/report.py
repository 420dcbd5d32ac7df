"""Report: the field-quality report and the run summary.

Field quality, per source and canonical column: how many rows had a source value for it
(``present``), how many came out filled, the share filled where a value was present, how many
failed their rule (a value was there, the rule could not standardize it) and the most frequent
failing raw values. Failing emails and phone numbers are masked in those samples.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from leadpipe.canonical import ISSUES_COLUMN, RAW_COLUMN
from leadpipe.standardize import RULES, clean

PII_COLUMNS = {"phone", "phone2", "email"}


def mask(value: str | None) -> str | None:
    """Hide emails and phone numbers in sample values that reach logs and reports."""
    if value is None:
        return None
    value = re.sub(r"[^\s@|]+@([^\s@|]+)", r"***@\1", value)
    return re.sub(r"\d(?=(?:[\s().-]*\d){4})", "#", value)


def _is_column(target: str):
    return lambda issue: issue["column"] == target


def field_quality(canonical: DataFrame, cfg, top: int = 5) -> list[dict[str, Any]]:
    """One entry per canonical column that the source's config fills. Rows that did not parse
    (malformed records) are left out: they are quarantined as a whole."""
    rows = canonical.filter(F.col("_corrupt_record").isNull())
    targets: list[tuple[str, Any, str]] = []
    for f in cfg.fields:
        present = F.lit(False)
        for name in f.inputs:
            present = present | clean(F.col(RAW_COLUMN)[name]).isNotNull()
        for slot, target in f.outputs().items():
            optional = slot in RULES[f.rule].optional_outputs
            targets.append((target, present, f.rule if not optional else f"{f.rule} (optional)"))
    aggs = [F.count(F.lit(1)).alias("__rows")]
    for target, present, _ in targets:
        failed = F.exists(F.col(ISSUES_COLUMN), _is_column(target))
        aggs += [
            F.sum(F.when(present, 1).otherwise(0)).alias(f"{target}__present"),
            F.sum(F.when(F.col(target).isNotNull(), 1).otherwise(0)).alias(f"{target}__filled"),
            F.sum(F.when(present & F.col(target).isNotNull(), 1).otherwise(0)).alias(f"{target}__both"),
            F.sum(F.when(failed, 1).otherwise(0)).alias(f"{target}__failed"),
        ]
    totals = rows.agg(*aggs).first()
    failures = (
        rows.select(F.explode(ISSUES_COLUMN).alias("i"))
        .groupBy(F.col("i.column").alias("column"), F.col("i.raw_value").alias("raw_value"))
        .count()
    )
    w = Window.partitionBy("column").orderBy(F.col("count").desc(), F.col("raw_value"))
    top_rows = failures.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= top).collect()
    samples: dict[str, list] = {}
    for r in sorted(top_rows, key=lambda r: (r.column, r["rank"])):
        value = mask(r.raw_value) if r.column in PII_COLUMNS else r.raw_value
        samples.setdefault(r.column, []).append({"raw_value": value, "count": int(r["count"])})
    n = int(totals["__rows"] or 0)
    out = []
    for target, _, rule_name in targets:
        present = int(totals[f"{target}__present"] or 0)
        filled = int(totals[f"{target}__filled"] or 0)
        both = int(totals[f"{target}__both"] or 0)
        failed = int(totals[f"{target}__failed"] or 0)
        out.append(
            {
                "source": cfg.id,
                "column": target,
                "rule": rule_name,
                "rows": n,
                "present": present,
                "filled": filled,
                "filled_share": round(filled / n, 4) if n else None,
                "filled_when_present": round(both / present, 4) if present else None,
                "failed": failed,
                "failed_share": round(failed / present, 4) if present else None,
                "top_failures": samples.get(target, []),
            }
        )
    return out


def format_quality(entries: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per (source, column), failures listed under their line."""
    header = f"{'source':<8} {'column':<28} {'rule':<22} {'rows':>6} {'present':>7} {'filled%':>8} {'of-present%':>11} {'failed':>6}"
    lines = ["FIELD QUALITY", header, "-" * len(header)]
    for e in entries:
        fp = f"{100 * e['filled_share']:.1f}" if e["filled_share"] is not None else "-"
        op = f"{100 * e['filled_when_present']:.1f}" if e["filled_when_present"] is not None else "-"
        lines.append(
            f"{e['source']:<8} {e['column']:<28} {e['rule']:<22} {e['rows']:>6} {e['present']:>7} {fp:>8} {op:>11} {e['failed']:>6}"
        )
        for s in e["top_failures"]:
            lines.append(f"{'':<8}   failed x{s['count']}: {s['raw_value']!r}")
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    return json.dumps(summary, sort_keys=False, default=str)
