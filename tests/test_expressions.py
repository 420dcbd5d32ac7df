"""expressions.date_value: the snapshot date as data, so the code Spark generates for a plan that
carries it is the same for every snapshot (compiled once per session, not once per snapshot)."""

from __future__ import annotations

from datetime import date

from chispa import assert_df_equality
from pyspark.sql import functions as F

from leadpipe.expressions import date_value
from leadpipe.session import session_conf
from tests.conftest import REAL_DIR
from tests.helpers import COMPILED_CONF

D1, D2 = date(2024, 1, 5), date(2024, 1, 12)


def _generated_code(df) -> list[str]:
    """The Java source of every whole-stage-codegen subtree of ``df``'s physical plan (planned
    with whole-stage codegen, as the job plans, and without adaptive execution, whose plan is
    only final once it has run)."""
    jvm = df.sparkSession.sparkContext._jvm
    # the suite's session interprets (tests.helpers.SMALL_DATA_CONF) and NO_CODEGEN alone also
    # keeps whole-stage codegen out of a plan: both are set back to the job's for this plan
    conf = {**COMPILED_CONF, "spark.sql.adaptive.enabled": "false"}
    with session_conf(df.sparkSession, conf):
        plan = df._jdf.queryExecution().executedPlan()
    seq = jvm.org.apache.spark.sql.execution.debug.package.codegenStringSeq(plan)
    return [seq.apply(i)._2() for i in range(seq.size())]


def _plan(spark, value):
    rows = spark.createDataFrame([("a",), (None,)], "s string").repartition(1)  # a scan: not folded away
    return rows.select("s", value(rows.s).alias("d"), F.date_add(value(rows.s), 7).alias("week_later"))


def test_the_value_is_the_date_on_every_row_a_null_anchor_included(spark):
    got = _plan(spark, lambda s: date_value(D1, s))
    expected = spark.createDataFrame([("a", D1, date(2024, 1, 12)), (None, D1, date(2024, 1, 12))], got.schema)
    assert_df_equality(got, expected, ignore_row_order=True)


def test_two_dates_generate_the_same_code_where_literals_do_not(spark):
    with_value = [_generated_code(_plan(spark, lambda s, d=d: date_value(d, s))) for d in (D1, D2)]
    assert with_value[0] and with_value[0] == with_value[1]
    with_literal = [_generated_code(_plan(spark, lambda s, d=d: F.lit(d))) for d in (D1, D2)]
    assert with_literal[0] != with_literal[1]  # what date_value avoids: a new class per date


def test_reading_two_snapshots_of_a_file_generates_the_same_code(spark, sources, tmp_path):
    """The rules plan starts at read_source: its snapshot date must not be a literal either."""
    from leadpipe.discover import SnapshotFile
    from leadpipe.read import read_files

    src = next(p for p in REAL_DIR.iterdir() if "Texas" in p.name)
    codes = []
    for d in (D1, D2):
        f = SnapshotFile("file:" + str(src), src.name, "tx_hhs", d, src.stat().st_size)
        raw = read_files(spark, [f], sources["tx_hhs"], d)
        assert {r._snapshot_date for r in raw.select("_snapshot_date").distinct().collect()} == {d}
        codes.append(_generated_code(raw))
    assert codes[0] and codes[0] == codes[1]
