"""Spark column expressions shared by the stages."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column
from pyspark.sql import functions as F


def date_value(d: date, anchor: Column) -> Column:
    """``d`` as a DATE column that the optimizer cannot turn into a literal.

    Spark writes a date literal into the Java code it generates for a plan stage, so a plan that
    carries the snapshot date (the MERGE's output projection: about 19,000 lines) is a new class
    for every snapshot, and Janino compiles it again for each snapshot of a backfill. Built from a
    string literal (handed to the generated code by reference) and a real column ``anchor`` (any
    string column; ``substring(anchor, 1, 0)`` is empty, or NULL when ``anchor`` is NULL), the code
    is the same for every date and is compiled once per session."""
    return F.to_date(F.concat(F.lit(d.isoformat()), F.coalesce(F.substring(anchor, 1, 0), F.lit(""))))


def column(name: str) -> Column:
    """A column by its exact name, whatever characters it holds (dots, spaces, back-ticks)."""
    return F.col("`" + name.replace("`", "``") + "`")
