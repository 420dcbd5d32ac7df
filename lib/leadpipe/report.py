"""Report: the field-quality report and the run summary.

Field quality, per source and canonical column: how many rows had a source value for it
(``present``), how many came out filled, the share filled where a value was present, how many
failed their rule (a value was there, the rule could not standardize it) and the most frequent
failing raw values. Failing emails and phone numbers, person names and street addresses are
masked in those samples, so the report can go to a log or a ticket.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from leadpipe.canonical import ISSUES_COLUMN, PRESENT_COLUMN
from leadpipe.standardize import RULES

PII_COLUMNS = {"phone", "phone2", "email"}
#: Columns holding people's names or street addresses (a family home's company is its owner's name).
NAME_ADDRESS_COLUMNS = {"first_name", "last_name", "licensee_name", "operator", "company", "address1", "address2"}


def mask(value: str | None) -> str | None:
    """Hide emails and phone numbers in sample values that reach logs and reports."""
    if value is None:
        return None
    value = re.sub(r"[^\s@|]+@([^\s@|]+)", r"***@\1", value)
    return re.sub(r"\d(?=(?:[\s().-]*\d){4})", "#", value)


def mask_words(value: str | None) -> str | None:
    """Hide names and street addresses: each word keeps its first character (``JANE DOE`` ->
    ``J*** D**``, ``150 N. WILLOW ST`` -> ``1** N* W***** S*``); the shape stays, for debugging."""
    if value is None:
        return None
    return re.sub(r"(?<=\w)[^\s,]", "*", value)


def mask_sample(column: str, value: str | None) -> str | None:
    if column in PII_COLUMNS:
        return mask(value)
    if column in NAME_ADDRESS_COLUMNS:
        return mask_words(value)
    return value


def field_quality(canonical: DataFrame, cfgs: list, top: int = 5) -> list[dict[str, Any]]:
    """One entry per (source, canonical column that the source's config fills), for the rows of
    ``canonical`` (one or several sources, as ``map_to_canonical`` made them with ``cfgs``: its
    ``PRESENT_COLUMN`` follows their fields' order). Two Spark jobs whatever the number of
    sources. Rows that did not parse (malformed records) are left out: they are quarantined as
    a whole."""
    rows = canonical.filter(F.col("_corrupt_record").isNull())
    targets: list[tuple[str, str, str]] = []  # (source, column, rule)
    # Every per-row fact once, as a column of its own (the aggregates below read each several
    # times; an expression repeated in each would be evaluated in each): whether each field had
    # a value (PRESENT_COLUMN, from the rules pass: cleaning every raw value again here cost as
    # much as a third of the rules), whether each column is filled, which columns failed.
    looked_up = rows.select(
        "source",
        *{t for cfg in cfgs for f in cfg.fields for t in f.outputs().values()},
        F.col(ISSUES_COLUMN)["column"].alias("__q_failed"),
        PRESENT_COLUMN,
    )
    facts = [F.col("source")]
    aggs = []
    for i, cfg in enumerate(cfgs):
        mine = F.col("source") == cfg.id
        aggs.append(F.sum(F.when(mine, 1).otherwise(0)).alias(f"s{i}__rows"))
        for j, f in enumerate(cfg.fields):
            # CASE WHEN: another source's array may be shorter (an index past its end is an error)
            facts.append(F.when(mine, F.col(PRESENT_COLUMN)[j]).otherwise(False).alias(f"__q{i}_{j}_present"))
            for slot, target in f.outputs().items():
                optional = slot in RULES[f.rule].optional_outputs
                targets.append((cfg.id, target, f.rule if not optional else f"{f.rule} (optional)"))
                k = f"s{i}__{target}"
                facts.append((mine & F.col(target).isNotNull()).alias(f"__q{k}_filled"))
                facts.append(
                    (mine & F.coalesce(F.array_contains("__q_failed", target), F.lit(False))).alias(f"__q{k}_failed")
                )
                present_c, filled_c = F.col(f"__q{i}_{j}_present"), F.col(f"__q{k}_filled")
                aggs += [
                    F.sum(F.when(present_c, 1).otherwise(0)).alias(f"{k}__present"),
                    F.sum(F.when(filled_c, 1).otherwise(0)).alias(f"{k}__filled"),
                    F.sum(F.when(present_c & filled_c, 1).otherwise(0)).alias(f"{k}__both"),
                    F.sum(F.when(F.col(f"__q{k}_failed"), 1).otherwise(0)).alias(f"{k}__failed"),
                ]
    totals = looked_up.select(*facts).agg(*aggs).first().asDict()
    failures = (
        rows.select("source", F.explode(ISSUES_COLUMN).alias("i"))
        .groupBy("source", F.col("i.column").alias("column"), F.col("i.raw_value").alias("raw_value"))
        .count()
    )
    w = Window.partitionBy("source", "column").orderBy(F.col("count").desc(), F.col("raw_value"))
    top_rows = failures.withColumn("rank", F.row_number().over(w)).filter(F.col("rank") <= top).collect()
    samples: dict[tuple[str, str], list] = {}
    for r in sorted(top_rows, key=lambda r: (r.source, r.column, r["rank"])):
        value = mask_sample(r.column, r.raw_value)
        samples.setdefault((r.source, r.column), []).append({"raw_value": value, "count": int(r["count"])})
    index = {cfg.id: i for i, cfg in enumerate(cfgs)}
    out = []
    for source, target, rule_name in targets:
        k = f"s{index[source]}__{target}"
        n = int(totals[f"s{index[source]}__rows"] or 0)
        present = int(totals[f"{k}__present"] or 0)
        filled = int(totals[f"{k}__filled"] or 0)
        both = int(totals[f"{k}__both"] or 0)
        failed = int(totals[f"{k}__failed"] or 0)
        out.append(
            {
                "source": source,
                "column": target,
                "rule": rule_name,
                "rows": n,
                "present": present,
                "filled": filled,
                "filled_share": round(filled / n, 4) if n else None,
                "filled_when_present": round(both / present, 4) if present else None,
                "failed": failed,
                "failed_share": round(failed / present, 4) if present else None,
                "top_failures": samples.get((source, target), []),
            }
        )
    return out


def format_quality(entries: list[dict[str, Any]]) -> str:
    """A fixed-width table, one line per (source, column), failures listed under their line."""
    header = f"{'source':<8} {'column':<28} {'rule':<28} {'rows':>6} {'present':>7} {'filled%':>8} {'of-present%':>11} {'failed':>6}"
    lines = ["FIELD QUALITY", header, "-" * len(header)]
    for e in entries:
        fp = f"{100 * e['filled_share']:.1f}" if e["filled_share"] is not None else "-"
        op = f"{100 * e['filled_when_present']:.1f}" if e["filled_when_present"] is not None else "-"
        lines.append(
            f"{e['source']:<8} {e['column']:<28} {e['rule']:<28} {e['rows']:>6} {e['present']:>7} {fp:>8} {op:>11} {e['failed']:>6}"
        )
        for s in e["top_failures"]:
            lines.append(f"{'':<8}   failed x{s['count']}: {s['raw_value']!r}")
    return "\n".join(lines)


def summary_line(summary: dict[str, Any]) -> str:
    return json.dumps(summary, sort_keys=False, default=str)
