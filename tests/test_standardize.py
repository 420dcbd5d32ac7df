"""Field rules, each checked on real values from the three agency files."""

from __future__ import annotations

import csv
import functools
import random
import re
from datetime import date

import chispa
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.config import SourceConfig
from leadpipe.standardize import (
    NULL_SENTINELS,
    RULES,
    apply_rules,
    clean,
    day_hours,
    first_person,
    parse_dba,
    parse_name_and_title,
    parse_person,
    parse_phone,
    parse_us_address,
)

# rule outputs are nullable by nature; the values are what is checked
assert_df_equality = functools.partial(chispa.assert_df_equality, ignore_nullable=True)


def apply(
    spark,
    rule: str,
    rows: list[tuple],
    params: dict | None = None,
    slots: list[str] | None = None,
    snapshot: date | None = None,
):
    """Run one rule on string inputs ``c0..cN``; returns the inputs and the rule's outputs.
    ``snapshot``: the snapshot date handed to a rule that takes one (else the rule's default)."""
    width = len(rows[0])
    schema = T.StructType([T.StructField(f"c{i}", T.StringType()) for i in range(width)])
    df = spark.createDataFrame(rows, schema)
    spec = RULES[rule]
    context = {"snapshot_date": F.lit(snapshot)} if snapshot is not None else {}
    df, out = spec.evaluate(
        df, [clean(F.col(f"c{i}")) for i in range(width)], spec.params_model.model_validate(params or {}), **context
    )
    return df.select(*[out[s].alias(s) for s in (slots or list(spec.outputs))])


def source(fields: list[dict], columns: list[str]) -> SourceConfig:
    """A minimal source config with these field rules over string columns ``columns``."""
    return SourceConfig.model_validate(
        {
            "id": "test_values",
            "licensing_authority": "Test",
            "state": "TX",
            "file_pattern": r"(?P<date>\d{2}-\d{2}-\d{4}) Test\.csv",
            "columns": columns,
            "identity": {"columns": columns[:1]},
            "fields": fields,
        }
    )


def through_apply_rules(spark, cfg: SourceConfig, rows: list[tuple], snapshot: date | None = date(2023, 7, 7)):
    """``apply_rules`` on raw string rows (plus ``_snapshot_date`` unless ``snapshot`` is None)."""
    schema = T.StructType([T.StructField(c, T.StringType()) for c in cfg.columns])
    raw = spark.createDataFrame(rows, schema)
    if snapshot is not None:
        raw = raw.withColumn("_snapshot_date", F.lit(snapshot))
    return apply_rules(raw, cfg)


def expect(spark, rows, fields):
    return spark.createDataFrame(rows, T.StructType([T.StructField(n, t) for n, t in fields]))


# --------------------------------------------------------------------------- library-backed, pure Python


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "6321 LAUREN ASHTON AVENUE LAS VEGAS, NV 89131",
            ("6321 LAUREN ASHTON AVENUE", None, "LAS VEGAS", "NV", "89131"),
        ),
        (
            "8889 S. EASTERN AVE., STE 160 LAS VEGAS, NV 89123",
            ("8889 S. EASTERN AVE.", "STE 160", "LAS VEGAS", "NV", "89123"),
        ),
        (
            "3980 W. ANN RD., STE 1 NORTH LAS VEGAS, NV 89031",
            ("3980 W. ANN RD.", "STE 1", "NORTH LAS VEGAS", "NV", "89031"),
        ),
        ("470 GYPSUM DRIVE SPRING CREEK, NV 89815", ("470 GYPSUM DRIVE", None, "SPRING CREEK", "NV", "89815")),
        ("3135 FLORENTINE DRIVE CARSON CITY, NV 89701", ("3135 FLORENTINE DRIVE", None, "CARSON CITY", "NV", "89701")),
        ("150 N. WILLOW ST MESQUITE, NV 89027", ("150 N. WILLOW ST", None, "MESQUITE", "NV", "89027")),
        (
            "7625 S. RAINBOW BLVD., STE 104-106 LAS VEGAS, NV 89139",
            ("7625 S. RAINBOW BLVD.", "STE 104-106", "LAS VEGAS", "NV", "89139"),
        ),
    ],
)
def test_nevada_one_field_addresses(raw, expected):
    assert parse_us_address(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("TANIA & NICOLE PINEDA & POBLETE", "TANIA PINEDA"),
        ("JAINI AND STACY JARIWALA AND SURVIS", "JAINI JARIWALA"),
        ("ANASTASIA, KASHMIR EDEY, SHAFER", "ANASTASIA EDEY"),
        ("ALEKSANDRA & KATIE LIPSKA HALLOCK & MEEKER", "ALEKSANDRA LIPSKA HALLOCK"),
        ("JASMINE &  ARGIE, TILLMAN & REYES", "JASMINE TILLMAN"),
        ("SARA PALLUCK AND HEATHER EASTVELD PALLUCK", "SARA PALLUCK"),
        ("RANI  & ARGIE GRAY & REYES", "RANI GRAY"),
        ("BETHANY JOHNSON", "BETHANY JOHNSON"),
    ],
)
def test_first_person_of_a_shared_contact_cell(raw, expected):
    assert first_person(raw) == expected


def test_person_names_are_capitalized():
    assert parse_person("TANIA & NICOLE PINEDA & POBLETE") == ("Tania", "Pineda")
    assert parse_person("ARGIE, KARLA REYES, GARCIA-BERROSPE") == ("Argie", "Reyes")
    assert parse_person("Dasheshia Briggs") == ("Dasheshia", "Briggs")


def test_name_and_title_on_two_lines():
    assert parse_name_and_title("Elizabeth Hellstrom\nPrimary Caregiver") == (
        "Elizabeth",
        "Hellstrom",
        "Primary Caregiver",
    )
    assert parse_name_and_title("Symira Clifton\r\nDirector") == ("Symira", "Clifton", "Director")
    assert parse_name_and_title("Monica Kaler") == ("Monica", "Kaler", None)


@pytest.mark.parametrize(
    "raw",
    [
        "Elizabeth Hellstrom\n \nPrimary Caregiver",
        "Elizabeth Hellstrom\r\n\r\nPrimary Caregiver",
        "Elizabeth Hellstrom\r\n \r\nPrimary Caregiver",
        "Elizabeth Hellstrom\n\u00a0\t\nPrimary Caregiver",
        "Elizabeth Hellstrom\n\u200b\nPrimary Caregiver",  # a zero-width space alone is a blank line too
    ],
)
def test_name_and_title_skip_a_blank_middle_line(raw):
    assert parse_name_and_title(raw) == parse_name_and_title("Elizabeth Hellstrom\nPrimary Caregiver")
    assert parse_name_and_title(raw) == ("Elizabeth", "Hellstrom", "Primary Caregiver")


def test_name_title_rule_skips_a_blank_middle_line(spark):
    rows = [
        ("Elizabeth Hellstrom\nPrimary Caregiver",),
        ("Elizabeth Hellstrom\n \nPrimary Caregiver",),
        ("Elizabeth Hellstrom\r\n\r\nPrimary Caregiver",),
    ]
    got = apply(spark, "name_title_lines", rows)
    want = expect(
        spark,
        [("Elizabeth", "Hellstrom", "Primary Caregiver")] * 3,
        [("first_name", T.StringType()), ("last_name", T.StringType()), ("title", T.StringType())],
    )
    assert_df_equality(got, want)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "BRIGGS, DASHESHIA DBA DEELIGHTFUL LEARNING STATION, LLC",
            ("DEELIGHTFUL LEARNING STATION, LLC", "Dasheshia Briggs"),
        ),
        ("HELLSTROM, ELIZABETH", ("Elizabeth Hellstrom", "Elizabeth Hellstrom")),
        ("MUDDY PUDDLES LEARNING SPACE, LLC", ("MUDDY PUDDLES LEARNING SPACE, LLC", None)),
        ("ROBINSON, KATRINA DBA WIGGLES AND GIGGLES ,LLC", ("WIGGLES AND GIGGLES, LLC", "Katrina Robinson")),
        ("CARTER, LINDA K. DBA YES I CAN! LEARNING CENTER", ("YES I CAN! LEARNING CENTER", "Linda K. Carter")),
        ("KHALID, EARNESTINE SHAKETTA DBA LIL DUMPLIN'S, LLC", ("LIL DUMPLIN'S, LLC", "Earnestine Shaketta Khalid")),
        ("DAWSON, TA'SHANA", ("Ta'Shana Dawson", "Ta'Shana Dawson")),
        ("KIDZ ROCK CHILD DEVELOPMENT CENTER", ("KIDZ ROCK CHILD DEVELOPMENT CENTER", None)),
    ],
)
def test_oklahoma_dba_companies(raw, expected):
    assert parse_dba(raw) == expected


def test_dba_company_native_path_agrees_with_parse_dba(spark, real_dir):
    """A plain company name is its own company without the Python worker; every other value (a
    ``LAST, FIRST``, a DBA, a comma or blank ``parse_dba`` would fold, a character outside
    printable ASCII) is parsed by ``parse_dba``: on every value, and on every company of the real
    Oklahoma file, the rule's output equals the function's."""
    values = [
        "KIDZ ROCK CHILD DEVELOPMENT CENTER",
        "ABC LEARNING ACADEMY",
        "ADOBE KIDS",  # D, O: no DBA
        "J.D.B. CARE",  # D.B: to Python, which finds no DBA either
        "LITTLE ONES D/B/A SUNSHINE",  # parse_dba's DBA takes dots only: a plain name
        "SMITH JOHN dba TINY TOTS",
        "HELLSTROM, ELIZABETH",
        "O'NEIL-SMITH, MARY-KATE",
        "VAN DER BERG, ANNA",  # three words before the comma: not a person to parse_dba
        "MUDDY PUDDLES LEARNING SPACE, LLC",
        "ABC KIDS, INC.",  # LAST, FIRST in form: to Python, which knows INC. is no first name
        "LITTLE STARS, LLC, TULSA",
        ", SMITH, JOHN",  # parse_dba strips the leading comma: then a person
        "SMITH,JOHN",
        "SMITH , JOHN",
        "ACME KIDS,",
        "ACME,, KIDS",
        "\u212aELLY, ANN",  # the Kelvin sign: Python's case folding makes it a K
        " LEADING SPACE",
        "TRAILING SPACE ",
        "TWO  SPACES",
        "NO-BREAK\u00a0SPACE",
        "EM\u2003SPACE",
        "LINE\nBREAK",
        "UNIT\x1fSEPARATOR",
        "",
        None,
    ]
    (oklahoma,) = real_dir.glob("*Oklahoma*.csv")
    with open(oklahoma, encoding="cp1252", newline="") as fh:
        real = [r["Company"] for r in csv.DictReader(fh)]
    made = set(values)
    values += real
    spec = RULES["dba_company"]
    df = spark.createDataFrame([(v,) for v in values], "c0 string")
    df, out = spec.evaluate(df, [F.col("c0")], spec.params_model())
    rows = df.select(
        "c0", out["company"].alias("company"), out["licensee_name"].alias("licensee"), F.col("__prep_dba_company_0_1")
    ).collect()
    got = {r.c0: (r.company, r.licensee) for r in rows}
    want = {v: parse_dba(v) if v is not None else (None, None) for v in values}
    assert got == want
    native = {r.c0 for r in rows if r["__prep_dba_company_0_1"] is not None}
    plain = {"KIDZ ROCK CHILD DEVELOPMENT CENTER", "ABC LEARNING ACADEMY", "ADOBE KIDS", "LITTLE ONES D/B/A SUNSHINE"}
    plain |= {"VAN DER BERG, ANNA", "MUDDY PUDDLES LEARNING SPACE, LLC", "LITTLE STARS, LLC, TULSA"}
    assert native & made == {*plain, ""}
    # the real file's company names are native; its family homes (LAST, FIRST, DBA) are not
    assert {"6TH STREET HEAD START", "CANADIAN VALLEY CHILD CARE CENTER", "MUDDY PUDDLES LEARNING SPACE, LLC"} <= native
    assert not native & {"HELLSTROM, ELIZABETH", "BRIGGS, DASHESHIA DBA DEELIGHTFUL LEARNING STATION, LLC"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("830-429-1010", "+18304291010"),
        ("(209) 747-1797", "+12097471797"),
        ("702.385.5222", "+17023855222"),
        ("1-702-385-5222", "+17023855222"),
        ("362-231-1137", None),  # area code 362 is not assigned
        ("555-1234", None),
        ("not a phone", None),
    ],
)
def test_phone_e164(raw, expected):
    assert parse_phone(raw)[0] == expected


# --------------------------------------------------------------------------- native Spark rules


def test_text_trims_folds_and_nulls_sentinels(spark):
    got = apply(spark, "text", [("19290 K ST ",), ("  N/A ",), ("",), (None,), ("MY LITTLE ANGEL\u2019S  HOME",)])
    want = expect(
        spark,
        [("19290 K ST",), (None,), (None,), (None,), ("MY LITTLE ANGEL\u2019S HOME",)],
        [("value", T.StringType())],
    )
    assert_df_equality(got, want)


def _cleaned_by_the_expressions(value: str | None) -> str | None:
    """What clean() means, applied to every value (clean itself skips the work where it can):
    blank runs and NULs folded, breaks kept as newline, ends trimmed of Java's \\s, sentinels NULL."""
    if value is None:
        return None
    v = re.sub(r"[ \t\u00a0\x00]+", " ", value)
    v = re.sub(r" ?(\r\n|\r|\n) ?", "\n", v)
    v = re.sub(r"^[ \t\n\x0b\x0c\r]+|[ \t\n\x0b\x0c\r]+$", "", v)
    return None if v.upper() in NULL_SENTINELS else v


CLEAN_CASES = [
    "5454 E. WILLOW DRIVE ",  # Texas: one space at the end (the trim-only path)
    " 5454 E. WILLOW DRIVE",
    " A ",
    " ",
    "  ",
    " n/a",
    "none ",
    " - ",
    "A  B ",
    "A\tB ",
    "A \u00a0",
    "\u00a0A",
    "A\x00 ",
    "A \r\nB ",
    "A\n",
    " A\x0b",
    "\x0cA ",
    "A\u2009 ",  # a thin space is not a blank here: kept, only the plain space trimmed
    "ok",
    "",
    None,
]


def test_clean_takes_short_cuts_that_give_what_the_expressions_give(spark):
    df = spark.createDataFrame([(i, v) for i, v in enumerate(CLEAN_CASES)], "i int, v string")
    got = [r.c for r in df.select("i", clean(F.col("v")).alias("c")).orderBy("i").collect()]
    assert got == [_cleaned_by_the_expressions(v) for v in CLEAN_CASES]


def test_texas_quote_damage_is_repaired(spark):
    rows = [
        ('K" Street Learning Center LLC"',),  # 2023 file, Excel-doubled quotes
        ('""K" Street Learning Center LLC"',),  # statewide raw export
        ('"Angels "R" Wee Learning Center"',),
        ('"Carol  "Camille"  Blackmon"',),
        ("1 on 1 Childcare Academy",),
    ]
    got = apply(spark, "text", rows, {"repair_quotes": True})
    want = expect(
        spark,
        [
            ('"K" Street Learning Center LLC',),
            ('"K" Street Learning Center LLC',),
            ('Angels "R" Wee Learning Center',),
            ('Carol "Camille" Blackmon',),
            ("1 on 1 Childcare Academy",),
        ],
        [("value", T.StringType())],
    )
    assert_df_equality(got, want)


def test_email(spark):
    got = apply(
        spark, "email", [("Sylvia@KStreetLearningCenter.com ",), ("no-at-sign.com",), ("a@b",), ("x@y.org; z@w.org",)]
    )
    want = expect(
        spark, [("sylvia@kstreetlearningcenter.com",), (None,), (None,), ("x@y.org",)], [("value", T.StringType())]
    )
    assert_df_equality(got, want)


def test_zip_state_integer(spark):
    got = apply(spark, "zip", [("78069",), ("89123-4567",), ("7102",), ("ABCDE",), ("00000",)])
    want = expect(spark, [("78069",), ("89123",), ("07102",), (None,), (None,)], [("value", T.StringType())])
    assert_df_equality(got, want)
    got = apply(spark, "state", [("nv",), ("OK",), ("ZZ",)])
    assert_df_equality(got, expect(spark, [("NV",), ("OK",), (None,)], [("value", T.StringType())]))
    got = apply(spark, "integer", [("82",), ("1,200",), ("12.0",), ("0",), ("twelve",)])
    assert_df_equality(got, expect(spark, [(82,), (1200,), (12,), (None,), (None,)], [("value", T.IntegerType())]))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,200", 1200),
        ("12,345", 12345),
        ("1,200.0", 1200),
        ("82", 82),
        ("12.0", 12),
        ("+5", 5),
        ("-5", None),  # a negative count is garbage
        ("0", None),
        ("12.5", None),
        ("1e3", None),
        ("12 kids", None),
        ("12,5", None),  # not a thousands separator
        ("1,2,0,0", None),
        ("\u0663", None),  # Arabic-Indic three
        ("\uff11\uff12", None),  # full-width 12
        ("99999999999", None),  # beyond int
        ("--5", None),
    ],
)
def test_integer_values_never_raise(spark, raw, expected):
    got = apply(spark, "integer", [(raw,)])
    assert got.collect() == [(expected,)]


def test_integer_bounds_from_config(spark):
    rows = [("1",), ("2,000",), ("2,001",), ("-5",), ("0",)]
    got = apply(spark, "integer", rows, {"min": 1, "max": 2000})
    assert_df_equality(got, expect(spark, [(1,), (2000,), (None,), (None,), (None,)], [("value", T.IntegerType())]))
    got = apply(spark, "integer", [("-5",)], {"min": None})
    assert got.collect() == [(-5,)]


def test_negative_or_absurd_capacity_is_an_issue(spark):
    cfg = source(
        [{"to": "capacity", "from": "Cap", "rule": "integer", "params": {"min": 1, "max": 2000}}],
        ["Id", "Cap"],
    )
    rows = [("1", "1,200"), ("2", "-5"), ("3", "50000"), ("4", "12 kids"), ("5", "\u0663"), ("6", None)]
    got = {
        r.Id: (r["__capacity"], [tuple(i) for i in r.dq_issues])
        for r in through_apply_rules(spark, cfg, rows).collect()
    }
    assert got == {
        "1": (1200, []),
        "2": (None, [("capacity", "integer", "-5")]),
        "3": (None, [("capacity", "integer", "50000")]),
        "4": (None, [("capacity", "integer", "12 kids")]),
        "5": (None, [("capacity", "integer", "\u0663")]),
        "6": (None, []),  # nothing given: no issue
    }


def test_two_digit_years_take_the_century_near_the_snapshot(spark):
    rows = [("11/30/23",), ("12/1/13",), ("6/1/85",), ("7/1/43",), ("7/1/44",), ("1/1/00",), ("2/29/24",)]
    got = apply(spark, "date", rows, snapshot=date(2023, 7, 7))
    want = [
        date(2023, 11, 30),
        date(2013, 12, 1),
        date(1985, 6, 1),  # Spark's own 'yy' reads 2085
        date(2043, 7, 1),  # at most 20 years after the snapshot's year
        date(1944, 7, 1),
        date(2000, 1, 1),
        date(2024, 2, 29),
    ]
    assert [r.value for r in got.collect()] == want
    # the window follows the snapshot date and the parameter
    got = apply(spark, "date", [("7/1/44",), ("2/29/00",)], snapshot=date(2030, 1, 1))
    assert [r.value for r in got.collect()] == [date(2044, 7, 1), date(2000, 2, 29)]
    got = apply(spark, "date", [("7/1/44",), ("2/29/00",)], {"two_digit_year_max_ahead": 5}, snapshot=date(1990, 1, 1))
    assert [r.value for r in got.collect()] == [date(1944, 7, 1), None]  # 1900 had no February 29


def test_four_digit_years_never_take_the_two_digit_path(spark):
    rows = [("1/5/2023",), ("1/5/1985",), ("1/5/0023",), ("1/5/0085",), ("1/5/123",), ("1/5/20231",)]
    got = apply(spark, "date", rows, snapshot=date(2023, 7, 7))
    assert [r.value for r in got.collect()] == [date(2023, 1, 5), date(1985, 1, 5), None, None, None, None]


def test_two_digit_years_without_a_snapshot_date_use_today(spark):
    got = apply(spark, "date", [("6/1/85",), ("1/5/2023",)])
    assert [r.value for r in got.collect()] == [date(1985, 6, 1), date(2023, 1, 5)]


def test_impossible_dates_are_null_and_an_issue(spark):
    cfg = source([{"to": "license_issued", "from": "Issued", "rule": "date"}], ["Id", "Issued"])
    rows = [
        ("1", "2/30/2023"),
        ("2", "13/1/2023"),
        ("3", "0/0/0000"),
        ("4", "2/29/2023"),
        ("5", "6/1/85"),
        ("6", "11/30/23"),
        ("7", "1/5/2023"),
        ("8", None),
    ]
    out = through_apply_rules(spark, cfg, rows)  # ANSI mode is on: nothing may raise
    got = {r.Id: (r["__license_issued"], [tuple(i) for i in r.dq_issues]) for r in out.collect()}
    assert got == {
        "1": (None, [("license_issued", "date", "2/30/2023")]),
        "2": (None, [("license_issued", "date", "13/1/2023")]),
        "3": (None, [("license_issued", "date", "0/0/0000")]),
        "4": (None, [("license_issued", "date", "2/29/2023")]),
        "5": (date(1985, 6, 1), []),  # the century rule sees the rows' _snapshot_date
        "6": (date(2023, 11, 30), []),
        "7": (date(2023, 1, 5), []),
        "8": (None, []),
    }


def test_apply_rules_without_a_snapshot_date_column(spark):
    cfg = source([{"to": "license_issued", "from": "Issued", "rule": "date"}], ["Id", "Issued"])
    out = through_apply_rules(spark, cfg, [("1", "6/1/85")], snapshot=None)
    assert out.columns == ["Id", "Issued", "__license_issued", "dq_issues", "dq_present"]
    assert out.first()["__license_issued"] == date(1985, 6, 1)


def test_present_says_per_field_whether_a_value_was_there_also_on_skipped_rows(spark):
    """``dq_present`` (what the field-quality report counts): per field, in the config's order,
    whether any input had a value after clean(); a row whose rules are skipped (its outputs are
    taken from the leads table) still says it, while its rules see NULLs and report no issue."""
    cfg = source(
        [
            {"to": "company", "from": "Name", "rule": "text"},
            {"to": "capacity", "from": "Capacity", "rule": "integer"},
            {"to": "city", "from": ["City", "Town"], "rule": "vocab", "params": {"values": {}, "default": "keep"}},
        ],
        ["Id", "Name", "Capacity", "City", "Town", "skip"],
    )
    schema = T.StructType([T.StructField(c, T.StringType()) for c in cfg.columns])
    rows = [
        ("1", "ACME", "lots", None, " x ", "no"),
        ("2", "  ", "N/A", "\t", None, "no"),
        ("3", "ACME", "lots", None, "Reno", "yes"),
    ]
    raw = spark.createDataFrame(rows, schema).withColumn("_skip", F.col("skip") == "yes")
    out = {r.Id: r for r in apply_rules(raw, cfg, skip="_skip").collect()}
    assert {k: list(r.dq_present) for k, r in out.items()} == {
        "1": [True, True, True],
        "2": [False, False, False],  # blanks, a sentinel, a tab: nothing after clean()
        "3": [True, True, True],
    }
    assert [tuple(i)[:2] for i in out["1"].dq_issues] == [("capacity", "integer")]
    assert out["3"].dq_issues == [] and out["3"]["__company"] is None  # skipped: no parsing, no issue


def test_dates_in_every_format(spark):
    got = apply(spark, "date", [("10/13/2011",), ("7/1/22",), ("2020-09-02",), ("1/1/1900",), ("13/45/2020",)])
    want = expect(
        spark,
        [(date(2011, 10, 13),), (date(2022, 7, 1),), (date(2020, 9, 2),), (None,), (None,)],
        [("value", T.DateType())],
    )
    assert_df_equality(got, want)
    got = apply(
        spark,
        "date",
        [("Monitoring since 2020-09-02",)],
        {"pattern": r"(\d{4}-\d{2}-\d{2})", "formats": ["yyyy-MM-dd"]},
    )
    assert got.first()[0] == date(2020, 9, 2)


def test_vocab_first_input_first(spark):
    params = {"values": {"Provisional": [r"\(PROVISIONAL\)"], "Active": ["^ACTIVE$"]}, "default": "keep"}
    got = apply(
        spark, "vocab", [("CENTER (PROVISIONAL)", "Active"), ("CENTER", "Active"), ("CENTER", "Pending Review")], params
    )
    want = expect(spark, [("Provisional",), ("Active",), ("Pending Review",)], [("value", T.StringType())])
    assert_df_equality(got, want)


def test_license_split(spark):
    got = apply(spark, "license_split", [("CHILD CARE FAMILY - K820055232",), ("K830056761",), ("CHILD CARE CENTER",)])
    want = expect(
        spark,
        [("CHILD CARE FAMILY", "K820055232"), (None, "K830056761"), ("CHILD CARE CENTER", None)],
        [("license_type", T.StringType()), ("license_number", T.StringType())],
    )
    assert_df_equality(got, want)


def test_flags_are_read_by_value_across_misaligned_columns(spark):
    rows = [
        ("", "Year Round", "Daytime Hours", "Accepts Subsidy", "Daytime Hours"),
        ("", "Year Round", "Daytime Hours", "Year Round", "Preschool (24-48 months; 2-4 yrs.)"),
    ]
    got = apply(spark, "flag_by_value", rows, {"pattern": "^accepts subsidy$"})
    assert_df_equality(got, expect(spark, [(True,), (False,)], [("value", T.BooleanType())]))


AGE_FIELDS = [("ages_served", T.StringType()), ("min_age", T.IntegerType()), ("max_age", T.IntegerType())]


def test_texas_age_flags(spark):
    rows = [("Y", "Y", "Y", "Y"), ("N", "Y", "Y", "N"), ("Y", "N", "N", "N"), ("N", "N", "N", "N")]
    got = apply(spark, "age_flags", rows)
    want = expect(
        spark,
        [
            ("Infants, Toddlers, Preschool, School-age", 0, None),
            ("Toddlers, Preschool", 12, 59),
            ("Infants", 0, 11),
            (None, None, None),
        ],
        AGE_FIELDS,
    )
    assert_df_equality(got, want)


def test_oklahoma_age_labels_in_any_column(spark):
    rows = [
        ("Toddlers (12-23 months; 1yr.)", "Preschool (24-48 months; 2-4 yrs.)", "", "", "Year Round", ""),
        (
            "Infants (0-11 months)",
            "Toddlers (12-23 months; 1yr.)",
            "School-age (5 years-older)",
            "",
            "Year Round",
            "Preschool (24-48 months; 2-4 yrs.)",
        ),
    ]
    got = apply(spark, "age_labels", rows)
    want = expect(
        spark, [("Toddlers, Preschool", 12, 59), ("Infants, Toddlers, Preschool, School-age", 0, None)], AGE_FIELDS
    )
    assert_df_equality(got, want)


def test_schedule_groups_days(spark):
    week = ["7:30AM - 5:30PM"] * 5 + ["CLOSED", "CLOSED"]
    weekend_only = ["CLOSED"] * 5 + ["6:00AM - 6:00PM"] * 2
    always = ["12:00AM - 12:00AM"] * 7
    odd = ["7:00AM - 5:00PM", "7:00AM - 5:00PM", "CLOSED", "7:00AM - 5:00PM", "7:00AM - 5:00PM", "CLOSED", "CLOSED"]
    broken = ["sometimes"] + ["CLOSED"] * 6
    rows = [tuple([*d, "Year Round", ""]) for d in (week, weekend_only, always, odd, broken)]
    got = apply(spark, "schedule", rows, {"qualifiers": {"^year round$": "year round"}})
    want = expect(
        spark,
        [
            ("Mon-Fri 07:30-17:30; Sat-Sun closed; year round",),
            ("Mon-Fri closed; Sat-Sun 06:00-18:00; year round",),
            ("Mon-Sun 00:00-24:00; year round",),
            ("Mon-Tue 07:00-17:00; Wed closed; Thu-Fri 07:00-17:00; Sat-Sun closed; year round",),
            (None,),
        ],
        [("value", T.StringType())],
    )
    assert_df_equality(got, want)


def test_day_hours_reads_one_cell_per_form(spark):
    """The time range is read with one regular expression a cell (groups between U+0001s); a cell
    that is not a range, even one made of U+0001s, is never read as one."""
    cells = [
        ("7:30AM - 5:30PM", "07:30-17:30"),
        ("7 a.m. to 6 p.m.", "07:00-18:00"),
        ("7AM-6PM\n", "07:00-18:00"),  # Java's $ lets a final line break through
        ("12:00AM - 12:00AM", "00:00-24:00"),
        ("6:00am TO 12:15pm", "06:00-12:15"),
        ("24 hours", "00:00-24:00"),
        ("Closed", "closed"),
        ("\u00017AM-6PM", None),
        # a cell that is not a range yet splits as a match would: its own U+0001 first, or not first
        ("\u00017\u0001\u0001A\u00016\u0001\u0001P\u0001", None),
        ("x\u00017\u0001\u0001A\u00016\u0001\u0001P\u0001", None),
        ("7AM-6PM Mon", None),
        ("", None),
        (None, None),
    ]
    df = spark.createDataFrame([(c,) for c, _ in cells], "c string")
    got = df.select(day_hours(F.col("c")).alias("value"))
    want = spark.createDataFrame([(w,) for _, w in cells], "value string")
    assert_df_equality(got, want)


def test_library_rules_run_as_pandas_udfs(spark):
    got = apply(spark, "us_address", [("8889 S. EASTERN AVE., STE 160 LAS VEGAS, NV 89123",), (None,)])
    assert got.collect()[0].asDict() == {
        "address1": "8889 S. EASTERN AVE.",
        "address2": "STE 160",
        "city": "LAS VEGAS",
        "state": "NV",
        "zip": "89123",
    }
    assert got.collect()[1].asDict() == dict.fromkeys(["address1", "address2", "city", "state", "zip"])
    got = apply(spark, "phone", [("830-429-1010",), ("362-231-1137",), (None,)])
    assert_df_equality(got, expect(spark, [("+18304291010",), (None,), (None,)], [("value", T.StringType())]))


def test_phone_native_path_agrees_with_phonenumbers(spark):
    """Plain North American numbers are formatted by a Spark expression built from phonenumbers'
    metadata; on every area code, in every plain form and some that are not plain, the rule's
    output equals the library's, and the plain valid ones never reach the Python worker."""
    rng = random.Random(7)
    forms = ["{a}-{e}-{l}", "({a}) {e}-{l}", "{a}.{e}.{l}", "1-{a}-{e}-{l}", "+1 {a} {e} {l}", "{a}{e}{l}"]
    forms += ["1 ({a}) {e}-{l}", "({a}){e}-{l}", "{a}-{e}-{l} x12", "({a} {e}-{l}", "{e}-{l}", "+44 20 {e} {l}"]
    values = [
        rng.choice(forms).format(
            a=f"{a:03d}",
            e=f"{rng.choice([rng.randint(200, 999), rng.randint(0, 999)]):03d}",
            l=f"{rng.randint(0, 9999):04d}",
        )
        for a in range(100, 1000)
        for _ in range(8)
    ]
    values += ["(416) 555-0199", "268-464-1234", "800-555-0100", "900-555-0100", "362-231-1137", "1-702-385-5222"]
    values += ["209" + "-" * 300 + "747-1797", "1" + "." * 250 + "2097471797"]  # over 250 characters: TOO_LONG
    # the native path's own marker, written by the agency: phonenumbers reads the first two, and
    # refuses the third, which the marker alone would make ten digits and a valid number
    values += ["\u0001702-385-5222", "\u00017023855222", "\u00017023855222999"]
    spec = RULES["phone"]
    df = spark.createDataFrame([(v,) for v in values], "c0 string")
    df, out = spec.evaluate(df, [clean(F.col("c0"))], spec.params_model())
    rows = df.select(
        "c0", out["value"].alias("value"), F.col(f"__prep_phone_{len(spec.prepare) - 1}_1").alias("native")
    ).collect()
    got = {r.c0: r.value for r in rows}
    want = {v: parse_phone(v)[0] for v in values}
    assert [v for v in values if got[v] != want[v]] == []
    native = {r.c0 for r in rows if r.native is not None}
    assert len(native) > len(values) // 5  # plain and valid: most listed numbers, a quarter of these
    assert all(got[v] == want[v] for v in native)
    assert "(416) 555-0199" in native and "800-555-0100" in native and "362-231-1137" not in native
    assert "830-429-1010 x12" not in native


def test_street_unit_split(spark):
    rows = [
        ("401 FM 685 STE 104", None),
        ("7460 S WESTMORELAND RD ste 105", None),
        ("12300-A PELLICANO ", None),
        ("10 MAIN ST", "#4"),
    ]
    got = apply(spark, "street_unit", rows)
    want = expect(
        spark,
        [
            ("401 FM 685", "STE 104"),
            ("7460 S WESTMORELAND RD", "STE 105"),
            ("12300-A PELLICANO", None),
            ("10 MAIN ST", "#4"),
        ],
        [("address1", T.StringType()), ("address2", T.StringType())],
    )
    assert_df_equality(got, want)
