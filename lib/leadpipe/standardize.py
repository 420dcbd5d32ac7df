"""Standardize: a library of named, configurable field rules.

A source's YAML chooses, for each canonical column, a rule and the source column(s) it reads::

    - {to: phone, from: "Phone#", rule: phone}
    - {to: [address1, address2, city, state, zip], from: Address, rule: us_address}

Every rule is a function from input Columns (already trimmed, with empty and sentinel values
turned into NULL) and validated params to one Column per output slot; a rule registered with
``snapshot_date=True`` (``date``) also gets the snapshot's date as a DATE Column. Rules are native Spark
expressions; only phone, address and person-name parsing call a library (phonenumbers,
usaddress, nameparser) through Arrow-backed pandas UDFs that parse each distinct value once.

A rule *fails* on a row when a source value was present but a required output came out NULL:
such failures are collected into the row's ``dq_issues`` (column, rule, raw value) for the
field-quality report; the lead itself is still loaded with NULL in that column.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from leadpipe.canonical import PRESENT_COLUMN
from leadpipe.expressions import column

# Values that mean "nothing here" in agency exports. Compared upper-case, after trimming.
NULL_SENTINELS = ("", "N/A", "NA", "N.A.", "NONE", "NULL", "UNKNOWN", "-", "--", "?", "NOT AVAILABLE")

US_STATES = [
    "AL",
    "AK",
    "AZ",
    "AR",
    "CA",
    "CO",
    "CT",
    "DE",
    "DC",
    "FL",
    "GA",
    "HI",
    "ID",
    "IL",
    "IN",
    "IA",
    "KS",
    "KY",
    "LA",
    "ME",
    "MD",
    "MA",
    "MI",
    "MN",
    "MS",
    "MO",
    "MT",
    "NE",
    "NV",
    "NH",
    "NJ",
    "NM",
    "NY",
    "NC",
    "ND",
    "OH",
    "OK",
    "OR",
    "PA",
    "RI",
    "SC",
    "SD",
    "TN",
    "TX",
    "UT",
    "VT",
    "VA",
    "WA",
    "WV",
    "WI",
    "WY",
    "PR",
    "VI",
    "GU",
    "AS",
    "MP",
]

AGE_BANDS = ("Infants", "Toddlers", "Preschool", "School-age")
# months: (min, max); School-age has no upper bound
BAND_MONTHS = {"Infants": (0, 11), "Toddlers": (12, 23), "Preschool": (24, 59), "School-age": (60, None)}
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
#: The raw rows' snapshot date (read.read_source), which rules registered with snapshot_date=True get.
SNAPSHOT_DATE_COLUMN = "_snapshot_date"


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: Callable[..., dict[str, Column]]
    outputs: tuple[str, ...]
    params_model: type[BaseModel]
    arity: int | None = 1
    optional_outputs: tuple[str, ...] = ()
    doc: str = ""
    #: the rule takes keyword ``snapshot_date`` (a DATE Column; None: today), see apply_rules
    snapshot_date: bool = False
    #: steps evaluated before ``fn``, each in a projection of its own: a step maps the columns it
    #: gets (the cleaned inputs, then the previous step's) to new columns, and ``fn`` gets the
    #: last step's. A value that an expression needs several times is computed once that way:
    #: Spark repeats a sub-expression in every place it is used, so ``when(n >= 0, n)`` on a
    #: parsed ``n`` parses twice, and nested rules double at every level.
    prepare: tuple[Callable[..., list[Column]], ...] = ()

    def evaluate(
        self, df: DataFrame, inputs: list[Column], params: BaseModel, **context: Column
    ) -> tuple[DataFrame, dict[str, Column]]:
        """This rule alone on ``df``: (``df`` with its prepared columns, the rule's outputs)."""
        cols = inputs
        for i, step in enumerate(self.prepare):
            made = step(cols, params, **context)
            names = [f"__prep_{self.name}_{i}_{k}" for k in range(len(made))]
            df = df.select("*", *[c.alias(n) for c, n in zip(made, names, strict=True)])
            cols = [F.col(n) for n in names]
        return df, self.fn(cols, params, **context)


RULES: dict[str, RuleSpec] = {}

#: Bump when a rule's code changes what it outputs for some input: every lead records the rules
#: version that produced it (with the source's rule config, see ``SourceConfig.rules_version``).
RULES_LIBRARY_VERSION = "2026.11.2"
#: The parsing libraries whose releases can change a rule's output.
RULE_PACKAGES = ("phonenumbers", "usaddress", "nameparser")


@functools.cache
def rules_code_version() -> str:
    """What else decides the rules' output: this module's code and the parsing libraries'
    versions. Part of every source's ``rules_version``, so that unchanged rows reuse their stored
    standardization (canonical.map_to_canonical) only while the code that made it is the same."""
    import hashlib
    from importlib import resources
    from importlib.metadata import version

    # through the package's loader: a folder, a wheel or a --py-files zip alike
    text = (
        resources.files(__package__).joinpath("standardize.py").read_bytes()
        + repr([(p, version(p)) for p in RULE_PACKAGES]).encode()
    )
    return hashlib.sha256(text).hexdigest()[:12]


def rule(
    name: str,
    outputs: tuple[str, ...] = ("value",),
    params: type[BaseModel] = _Params,
    arity: int | None = 1,
    optional: tuple[str, ...] = (),
    snapshot_date: bool = False,
    prepare: tuple[Callable[..., list[Column]], ...] = (),
):
    def register(fn):
        doc = (fn.__doc__ or "").strip()
        RULES[name] = RuleSpec(name, fn, outputs, params, arity, optional, doc, snapshot_date, prepare)
        return fn

    return register


# --------------------------------------------------------------------------- cleaning helpers


def clean(col: Column) -> Column:
    """Trim, fold runs of blanks (and NUL bytes) to one space, keep line breaks as ``\n`` (a multi-line cell can
    carry meaning, e.g. name then title), sentinels -> NULL.

    Most cells need none of that: a cell with no tab, no-break space, NUL, line break, vertical
    tab or form feed, no double space and no space at either end is already clean, and only the
    sentinel check runs on it. The regular expressions run on the other cells alone (they were
    most of the rules' cost, evaluated on every input cell of every row). A cell whose only fault
    is a space at an end (every address of the Texas export ends with one) is trimmed natively:
    with no other blank, break or NUL in it, the expressions would do exactly that."""
    c = col.cast("string")
    odd = c.contains("  ") | c.rlike(r"[\t\u00a0\x00\r\n\x0b\x0c]")
    full = F.regexp_replace(c, r"[ \t\u00a0\x00]+", " ")  # NUL too: PostgreSQL cannot store it
    full = F.regexp_replace(full, r" ?(\r\n|\r|\n) ?", "\n")
    full = F.regexp_replace(full, r"^[\s]+|[\s]+$", "")
    trimmed = F.trim(c)  # spaces only (0x20), which is all an end can hold when the cell is not odd

    def unless_sentinel(value: Column) -> Column:
        return F.when(~F.upper(value).isin(*NULL_SENTINELS), value)

    return (
        F.when(odd, unless_sentinel(full))
        .when(c.startswith(" ") | c.endswith(" "), unless_sentinel(trimmed))
        .otherwise(unless_sentinel(c))
    )


def one_line(col: Column) -> Column:
    """Line breaks folded to single spaces (``col`` is read twice: pass a column, not a long expression)."""
    return F.when(col.contains("\n"), F.regexp_replace(col, r"\s*\n\s*", " ")).otherwise(col)


def _null_if_empty(col: Column) -> Column:
    return F.when(F.trim(col) == "", F.lit(None)).otherwise(col)


def _case(col: Column, case: str) -> Column:
    return {
        "keep": col,
        "upper": F.upper(col),
        "lower": F.lower(col),
        "title": F.initcap(F.lower(col)),
    }[case]


def repair_quotes(col: Column) -> Column:
    """Undo export quoting damage in names.

    The raw statewide Texas export wraps a value that contains quotes in one more pair
    (``""K" Street Learning Center LLC"``), and Excel-style re-exports lose the leading quote
    (``K" Street Learning Center LLC"``). Both become ``"K" Street Learning Center LLC``.
    ``col`` is read many times: pass a column, not a long expression.
    """
    folded = F.trim(F.regexp_replace(col, r"\s+", " "))
    return F.when(col.contains('"'), _repaired_quotes(col)).otherwise(folded)  # most names have no quote


def _repaired_quotes(col: Column) -> Column:
    quotes = F.length(col) - F.length(F.regexp_replace(col, '"', ""))
    inner = F.regexp_extract(col, r'^"(.*)"$', 1)
    inner_quotes = F.length(inner) - F.length(F.regexp_replace(inner, '"', ""))
    wrapped = col.rlike(r'^".*"$') & (quotes >= 2) & (inner_quotes % 2 == 0) & (inner_quotes > 0)
    lost_leading = (~col.startswith('"')) & col.endswith('"') & (quotes % 2 == 0)
    fixed = (
        F.when(wrapped, inner)
        .when(lost_leading, F.concat(F.lit('"'), F.regexp_replace(col, r'"$', "")))
        .when(col.rlike(r'^"[^"]*"$'), inner)
        .otherwise(col)
    )
    return F.trim(F.regexp_replace(fixed, r"\s+", " "))


# --------------------------------------------------------------------------- text rules


class TextParams(_Params):
    case: str = Field("keep", pattern="^(keep|upper|lower|title)$")
    repair_quotes: bool = False
    strip_pattern: str | None = None


def _text_line(cols: list[Column], p: TextParams) -> list[Column]:
    c = one_line(cols[0])
    return [F.regexp_replace(c, p.strip_pattern, "") if p.strip_pattern else c]


def _text_clean(cols: list[Column], p: TextParams) -> list[Column]:
    return [clean(cols[0]) if p.strip_pattern else cols[0]]


def _text_repair(cols: list[Column], p: TextParams) -> list[Column]:
    return [repair_quotes(cols[0]) if p.repair_quotes else cols[0]]


@rule("text", params=TextParams, prepare=(_text_line, _text_clean, _text_repair))
def text(cols: list[Column], p: TextParams) -> dict[str, Column]:
    """Trimmed text with white space folded; optional case and quote repair."""
    c = cols[0]  # one line, stripped and cleaned, quotes repaired (the prepare steps)
    if p.repair_quotes:
        c = _null_if_empty(c)
    return {"value": _case(c, p.case)}


class RegexParams(_Params):
    pattern: str
    group: int = 1
    case: str = Field("keep", pattern="^(keep|upper|lower|title)$")


def _regex_group(cols: list[Column], p: RegexParams) -> list[Column]:
    return [F.regexp_extract(cols[0], p.pattern, p.group)]


@rule("regex_extract", params=RegexParams, prepare=(_regex_group,))
def regex_extract(cols: list[Column], p: RegexParams) -> dict[str, Column]:
    """The regex group of the value; NULL (a failure) when the pattern does not match."""
    return {"value": _case(clean(cols[0]), p.case)}


@rule("state")
def state(cols: list[Column], p: _Params) -> dict[str, Column]:
    """Two-letter US state or territory code."""
    c = F.upper(F.regexp_replace(cols[0], r"[^A-Za-z]", ""))
    return {"value": F.when(c.isin(*US_STATES), c)}


class ZipParams(_Params):
    pad: bool = True


@rule("zip", params=ZipParams)
def zip_code(cols: list[Column], p: ZipParams) -> dict[str, Column]:
    """Five-digit ZIP from ZIP or ZIP+4; a 4-digit value lost its leading zero (Excel)."""
    digits = F.regexp_extract(cols[0], r"^\s*(\d{4,5})(?:[-\s]?\d{4})?\s*$", 1)
    five = F.when(F.length(digits) == 5, digits)
    if p.pad:
        five = five.when(F.length(digits) == 4, F.lpad(digits, 5, "0"))
    return {"value": F.when(five != "00000", five)}


class EmailParams(_Params):
    pattern: str = r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.[a-z]{2,}$"


@rule("email", params=EmailParams)
def email(cols: list[Column], p: EmailParams) -> dict[str, Column]:
    """Lower-case; the first address when a cell lists several; invalid syntax -> NULL."""
    c = F.lower(F.regexp_replace(cols[0], r"^mailto:", ""))
    first = F.element_at(F.split(c, r"[;,\s]+"), 1)
    return {"value": F.when(first.rlike(p.pattern), first)}


class IntegerParams(_Params):
    zero_is_null: bool = True
    min: int | None = Field(0, description="smaller values -> NULL (a failure); null: no lower bound")
    max: int | None = Field(None, description="larger values -> NULL (a failure); set per source")


# digits in groups of three (``1,200``, ``1 200``), optionally ``.0``
_GROUPED = r"^[+-]?\d{1,3}(?:[, ]\d{3})+(?:\.0+)?$"


def _integer_value(cols: list[Column], p: IntegerParams) -> list[Column]:
    c = cols[0]
    c = F.when(c.rlike(_GROUPED), F.regexp_replace(c, r"[, ]", "")).otherwise(c)
    c = F.regexp_replace(c, r"^([+-]?\d+)\.0+$", "$1")
    return [F.when(c.rlike(r"^[+-]?[0-9]+$"), c.try_cast("int"))]


@rule("integer", params=IntegerParams, prepare=(_integer_value,))
def integer(cols: list[Column], p: IntegerParams) -> dict[str, Column]:
    """Whole count: ``1,200`` and ``12.0`` read as 1200 and 12; 0 is a sentinel by default.

    Anything else that is not a plain ASCII whole number (``12.5``, ``1e3``, ``12 kids``, ``12,5``,
    non-ASCII digits, beyond int range) is NULL, a failure. So is a value outside ``min``..``max``:
    ``min`` is 0 by default (a negative count is garbage); the bound for absurd values is the
    source's own, set in its config (``params: {min: 1, max: 2000}`` for a capacity).
    """
    n = cols[0]  # the number as read (prepared once: _integer_value)
    ok = F.lit(True)
    if p.zero_is_null:
        ok = ok & (n != 0)
    if p.min is not None:
        ok = ok & (n >= p.min)
    if p.max is not None:
        ok = ok & (n <= p.max)
    return {"value": F.when(ok, n)}


class DateParams(_Params):
    formats: list[str] = Field(default_factory=lambda: ["M/d/yyyy", "M/d/yy", "yyyy-MM-dd"])
    pattern: str | None = None
    earliest: str = "1901-01-01"
    two_digit_year_max_ahead: int = Field(20, ge=0, le=99)


def two_digit_year_format(fmt: str) -> bool:
    """Whether a datetime pattern's year field is ``yy`` (exactly two letters, outside quotes)."""
    return re.search(r"(?<!y)yy(?!y)", re.sub(r"'[^']*'", "", fmt)) is not None


def _century(parsed: Column, reference: Column, max_ahead: int) -> Column:
    """A date parsed with ``yy`` (Spark reads years 2000..2099) moved to the year with the same
    two last digits in ``reference`` year + max_ahead - 99 .. reference year + max_ahead; NULL
    when that day does not exist in that year (``2/29/00`` read as 1900)."""
    latest = F.year(reference) + max_ahead
    year = latest - F.pmod(latest - F.year(parsed) % 100, F.lit(100))
    text = F.format_string("%04d-%02d-%02d", year, F.month(parsed), F.dayofmonth(parsed))
    return F.try_to_date(text, "yyyy-MM-dd")


def _date_text(cols: list[Column], p: DateParams, snapshot_date: Column | None = None) -> list[Column]:
    c = cols[0]
    if p.pattern:
        c = _null_if_empty(F.regexp_extract(c, p.pattern, 1))
    return [F.regexp_replace(c, r"\s+\d{1,2}:\d{2}(:\d{2})?(\s*[AaPp][Mm])?$", "")]  # drop a time part


def _date_parsed(cols: list[Column], p: DateParams, snapshot_date: Column | None = None) -> list[Column]:
    reference = F.current_date() if snapshot_date is None else F.coalesce(snapshot_date, F.current_date())
    tries = []
    for fmt in p.formats:
        parsed = F.try_to_date(cols[0], fmt)
        tries.append(_century(parsed, reference, p.two_digit_year_max_ahead) if two_digit_year_format(fmt) else parsed)
    return [F.coalesce(*tries)]


@rule("date", params=DateParams, snapshot_date=True, prepare=(_date_text, _date_parsed))
def date(cols: list[Column], p: DateParams, snapshot_date: Column | None = None) -> dict[str, Column]:
    """Typed date from any of ``formats`` (tried in order), optionally after a regex extract.

    A day that does not exist (``2/30/2023``, ``13/1/2023``, ``0/0/0000``) is NULL, a failure.
    Sentinel dates before ``earliest`` (``1900-01-01``, ``1/1/0001``, ``1/5/0023``) become NULL.

    Two-digit years: a format whose year field is ``yy`` reads exactly two digits (``yyyy`` exactly
    four, so ``1/5/2023`` never takes the two-digit path and ``11/30/23`` never the four-digit one).
    Such a year is placed in the century that puts it at most ``two_digit_year_max_ahead`` (20)
    years after the snapshot's year: with a 2023 snapshot, ``23`` -> 2023, ``43`` -> 2043,
    ``44`` -> 1944, ``85`` -> 1985. The snapshot date is the rows' ``_snapshot_date`` (apply_rules);
    called without one, the rule uses today's date.
    """
    parsed = cols[0]  # the first format that reads the text (prepared once: _date_text, _date_parsed)
    return {"value": F.when(parsed >= F.lit(p.earliest).cast("date"), parsed)}


class VocabParams(_Params):
    values: dict[str, list[str]]
    default: str | None = Field(None, description="value when nothing matches; 'keep' keeps the cleaned input")


@rule("vocab", params=VocabParams, arity=None)
def vocab(cols: list[Column], p: VocabParams) -> dict[str, Column]:
    """Map source values onto a vocabulary by case-insensitive regex, first input first.

    ``values`` is ordered: ``{Provisional: ['\\(PROVISIONAL\\)'], Active: ['^ACTIVE$']}``.
    A value nothing matches becomes ``default`` (NULL, a fixed value, or ``keep``).
    """
    result = None
    for col in cols:
        for canonical, patterns in p.values.items():
            cond = F.lit(False)
            for pattern in patterns:
                cond = cond | col.rlike(f"(?i){pattern}")
            result = F.when(cond, F.lit(canonical)) if result is None else result.when(cond, F.lit(canonical))
    if p.default == "keep":
        fallback = F.coalesce(*reversed(cols))
    elif p.default is None:
        fallback = F.lit(None).cast("string")
    else:
        fallback = F.when(F.coalesce(*cols).isNotNull(), F.lit(p.default))
    return {"value": result.otherwise(fallback) if result is not None else fallback}


class SplitParams(_Params):
    separator: str = " - "
    case_type: str = Field("keep", pattern="^(keep|upper|lower|title)$")


def _license_parts(cols: list[Column], p: SplitParams) -> list[Column]:
    c = cols[0]
    sep = p.separator
    has_sep = F.instr(c, sep) > 0
    after = F.substring_index(c, sep, -1)  # after the last separator
    before = F.left(c, F.length(c) - F.length(after) - F.lit(len(sep)))
    has_digit = c.rlike(r"\d")
    return [F.when(has_sep, before).when(~has_digit, c), F.when(has_sep, after).when(has_digit, c)]


@rule("license_split", outputs=("license_type", "license_number"), params=SplitParams, prepare=(_license_parts,))
def license_split(cols: list[Column], p: SplitParams) -> dict[str, Column]:
    """``CHILD CARE FAMILY - K820055232`` -> type ``CHILD CARE FAMILY``, number ``K820055232``.

    The number is the part after the LAST separator; a value without one is a number alone
    when it has a digit, else a type alone.
    """
    ltype, number = cols  # split once (_license_parts)
    return {"license_type": _case(clean(ltype), p.case_type), "license_number": clean(number)}


_UNIT_SPLIT = r"(?i)^(.*?\S)[,\s]+((?:STE|SUITE|UNIT|APT|BLDG|RM|ROOM|SPC|SPACE|LOT)\b\.?\s*\S.*|#\s*\S+.*)$"


class StreetParams(_Params):
    case: str = Field("upper", pattern="^(keep|upper|lower|title)$")


def _street_lines(cols: list[Column], p: StreetParams) -> list[Column]:
    return [one_line(c) for c in cols]


@rule(
    "street_unit",
    outputs=("address1", "address2"),
    params=StreetParams,
    arity=None,
    optional=("address2",),
    prepare=(_street_lines,),
)
def street_unit(cols: list[Column], p: StreetParams) -> dict[str, Column]:
    """Street line -> street and unit when a unit designator can be separated
    (``401 FM 685 STE 104`` -> ``401 FM 685`` + ``STE 104``); a second column, when given, is
    the source's own unit field and wins."""
    c = cols[0]
    has_unit = c.rlike(_UNIT_SPLIT)
    street = F.when(has_unit, F.regexp_extract(c, _UNIT_SPLIT, 1)).otherwise(c)
    unit = F.when(has_unit, F.regexp_extract(c, _UNIT_SPLIT, 2))
    if len(cols) > 1:
        unit = F.coalesce(cols[1], unit)
    return {"address1": _case(street, p.case), "address2": _case(unit, p.case)}


class FlagParams(_Params):
    pattern: str
    absent: bool | None = False


@rule("flag_by_value", params=FlagParams, arity=None)
def flag_by_value(cols: list[Column], p: FlagParams) -> dict[str, Column]:
    """True when any of the columns holds a label matching ``pattern`` (read by value, not by
    position: Oklahoma's trailing flag columns do not line up with their headers); otherwise
    ``absent`` (false, or null when the source's silence means "unknown")."""
    hit = F.lit(False)
    for col in cols:
        hit = hit | F.coalesce(col.rlike(f"(?i){p.pattern}"), F.lit(False))
    absent = F.lit(p.absent).cast("boolean")
    return {"value": F.when(hit, F.lit(True)).otherwise(absent)}


# --------------------------------------------------------------------------- age bands


def _bands_outputs(flags: dict[str, Column]) -> dict[str, Column]:
    """Band flags (boolean Columns keyed by band name) -> ages_served, min_age, max_age."""
    present = [F.when(flags[b], F.lit(b)) for b in AGE_BANDS]
    served = F.concat_ws(", ", *present)
    min_age = None
    for band in AGE_BANDS:
        lo = BAND_MONTHS[band][0]
        min_age = F.when(flags[band], F.lit(lo)) if min_age is None else min_age.when(flags[band], F.lit(lo))
    max_age = None
    for band in reversed(AGE_BANDS):
        hi = BAND_MONTHS[band][1]
        val = F.lit(hi).cast("int")
        max_age = F.when(flags[band], val) if max_age is None else max_age.when(flags[band], val)
    any_band = F.lit(False)
    for band in AGE_BANDS:
        any_band = any_band | flags[band]
    return {
        "ages_served": F.when(any_band, served),
        "min_age": min_age,
        "max_age": F.when(any_band & ~flags["School-age"], max_age),
    }


class AgeFlagParams(_Params):
    bands: list[str] = Field(default_factory=lambda: list(AGE_BANDS))
    true_values: list[str] = Field(default_factory=lambda: ["Y", "YES", "TRUE", "1", "X"])


def _age_flag_values(cols: list[Column], p: AgeFlagParams) -> list[Column]:
    if len(cols) != len(p.bands) or set(p.bands) - set(AGE_BANDS):
        raise ValueError(f"age_flags: one column per band of {list(AGE_BANDS)}, got bands {p.bands}")
    flags = {b: F.lit(False) for b in AGE_BANDS}
    for band, col in zip(p.bands, cols, strict=True):
        flags[band] = F.coalesce(F.upper(col).isin(*p.true_values), F.lit(False))
    return [flags[b] for b in AGE_BANDS]


@rule(
    "age_flags",
    outputs=("ages_served", "min_age", "max_age"),
    params=AgeFlagParams,
    arity=None,
    optional=("max_age",),  # NULL by definition when School-age is served
    prepare=(_age_flag_values,),
)
def age_flags(cols: list[Column], p: AgeFlagParams) -> dict[str, Column]:
    """One Y/N column per band (Texas ``Infant``, ``Toddler``, ``Preschool``, ``School``), in the
    order of ``bands``."""
    return _bands_outputs(dict(zip(AGE_BANDS, cols, strict=True)))  # flags in AGE_BANDS order (_age_flag_values)


class AgeLabelParams(_Params):
    labels: dict[str, str] = Field(
        default_factory=lambda: {
            "Infants": r"^infant",
            "Toddlers": r"^toddler",
            "Preschool": r"^pre-?school",
            "School-age": r"^school[- ]?age",
        }
    )


def _age_label_values(cols: list[Column], p: AgeLabelParams) -> list[Column]:
    flags = []
    for band in AGE_BANDS:
        hit = F.lit(False)
        if band in p.labels:
            for col in cols:
                hit = hit | F.coalesce(col.rlike(f"(?i){p.labels[band]}"), F.lit(False))
        flags.append(hit)
    return flags


@rule(
    "age_labels",
    outputs=("ages_served", "min_age", "max_age"),
    params=AgeLabelParams,
    arity=None,
    optional=("max_age",),
    prepare=(_age_label_values,),
)
def age_labels(cols: list[Column], p: AgeLabelParams) -> dict[str, Column]:
    """Band labels read by value across any number of columns (Oklahoma ``Ages Accepted 1``..,
    ``Infants (0-11 months)``); a label may sit in any of them, or twice."""
    return _bands_outputs(dict(zip(AGE_BANDS, cols, strict=True)))  # flags in AGE_BANDS order (_age_label_values)


#: Marks the groups of a pattern read in one pass: ``regexp_replace(value, pattern, MARK $1 ..)``
#: rewrites a matching value to its groups behind this mark and leaves any other value as it was
#: (a ``regexp_extract`` per group runs the pattern once per group). The patterns it is used with
#: are anchored at ``^`` and cannot match a value that starts with the mark, so the rewritten
#: value starts with the mark exactly when the value matched, unless the value itself starts with
#: it: each reader checks both.
_MARK = "\u0001"


# --------------------------------------------------------------------------- schedule

_TIME_RANGE = (
    r"^(\d{1,2})(?::(\d{2}))?\s*([AaPp])\.?[Mm]\.?\s*(?:-|TO|to)\s*(\d{1,2})(?::(\d{2}))?\s*([AaPp])\.?[Mm]\.?$"
)


def _hhmm(hour: Column, minute: Column, ampm: Column) -> Column:
    h = hour.try_cast("int") % 12 + F.when(F.upper(ampm) == "P", 12).otherwise(0)
    m = F.coalesce(_null_if_empty(minute), F.lit("00"))
    return F.concat(F.lpad(h.cast("string"), 2, "0"), F.lit(":"), m)


def _day_groups(col: Column) -> Column:
    """One day's cell -> its time range's six groups (after an empty first item), or the cell
    alone when it is not a time range.

    One regular expression per cell (``_MARK``): a matching cell is rewritten to its six groups
    between marks (an unmatched optional group gives '', as ``regexp_extract`` does; the closing
    mark keeps a final line break, which ``$`` lets through, out of the last group).
    """
    rewritten = F.regexp_replace(col, _TIME_RANGE, "".join(f"{_MARK}${g}" for g in range(1, 7)) + _MARK)
    return F.split(rewritten, _MARK)  # ['', hour, minute, am/pm, hour, minute, am/pm, rest]


def _day_parts(col: Column, groups: Column) -> list[Column]:
    """One day's cell and its ``_day_groups`` -> (its upper-case text, start ``HH:MM``, end
    ``HH:MM``) of a time range."""
    # a match gives eight items, the first empty (a match starts with a digit); a cell that did
    # not match and yet splits so starts with a mark of its own
    matched = (F.size(groups) == 8) & (F.try_element_at(groups, F.lit(1)) == "") & ~col.startswith(_MARK)
    group = [F.try_element_at(groups, F.lit(g + 1)) for g in range(1, 7)]
    return [F.upper(col), F.when(matched, _hhmm(*group[:3])), F.when(matched, _hhmm(*group[3:]))]


def _day_text(upper: Column, start: Column, end: Column) -> Column:
    end = F.when((end == "00:00") | (end == start), F.lit("24:00")).otherwise(end)
    return (
        F.when(upper.isin("CLOSED", "CLOSE", "NONE", "NO"), F.lit("closed"))
        .when(upper.rlike(r"24\s*(HOURS|HRS|H)"), F.lit("00:00-24:00"))
        .when(start.isNotNull(), F.concat(start, F.lit("-"), end))
    )


def day_hours(col: Column) -> Column:
    """One day's cell -> ``HH:MM-HH:MM``, ``closed``, ``00:00-24:00``; NULL when unreadable."""
    return _day_text(*_day_parts(col, _day_groups(col)))


class ScheduleParams(_Params):
    qualifiers: dict[str, str] = Field(default_factory=dict)


def _schedule_groups(cols: list[Column], p: ScheduleParams) -> list[Column]:
    if len(cols) < 7:
        raise ValueError("schedule: needs seven day columns, Monday first")
    return [c for col in cols[:7] for c in (col, _day_groups(col))] + cols[7:]


def _schedule_parts(cols: list[Column], p: ScheduleParams) -> list[Column]:
    return [part for i in range(7) for part in _day_parts(cols[2 * i], cols[2 * i + 1])] + cols[14:]


def _schedule_days(cols: list[Column], p: ScheduleParams) -> list[Column]:
    return [_day_text(*cols[3 * i : 3 * i + 3]) for i in range(7)] + cols[21:]


@rule("schedule", params=ScheduleParams, arity=None, prepare=(_schedule_groups, _schedule_parts, _schedule_days))
def schedule(cols: list[Column], p: ScheduleParams) -> dict[str, Column]:
    """Seven day columns, Monday first, -> ``Mon-Fri 07:30-17:30; Sat-Sun closed``.

    Consecutive days with the same hours are grouped. Further columns are read by value for
    ``qualifiers`` ({regex: text}), appended in order: ``...; Sat-Sun closed; year round``.
    A day that cannot be read makes the whole schedule NULL (a failure), never a guess.
    """
    # each day's hours are computed once, in the prepare steps; the runs of equal days are then
    # written out with plain comparisons (seven days: no loop, no array, no lambda to interpret)
    days, rest = cols[:7], cols[7:]
    runs = []
    for i, day in enumerate(days):
        starts = F.lit(True) if i == 0 else day != days[i - 1]
        last = None  # the run's last day: the day before the first that differs
        for j in range(i + 1, 7):
            label = F.lit("" if j == i + 1 else f"-{DAY_NAMES[j - 1]}")
            last = F.when(days[j] != day, label) if last is None else last.when(days[j] != day, label)
        suffix = F.lit("") if last is None else last.otherwise(F.lit(f"-{DAY_NAMES[6]}"))
        runs.append(F.when(starts, F.concat(F.lit(DAY_NAMES[i]), suffix, F.lit(" "), day)))
    parts = [F.concat_ws("; ", *runs)]
    for pattern, label in p.qualifiers.items():
        hit = F.lit(False)
        for col in rest:
            hit = hit | F.coalesce(col.rlike(f"(?i){pattern}"), F.lit(False))
        parts.append(F.when(hit, F.lit(label)))
    all_read = F.lit(True)
    for day in days:
        all_read = all_read & day.isNotNull()
    return {"value": F.when(all_read, F.concat_ws("; ", *parts))}


# --------------------------------------------------------------------------- library-backed rules


#: Parsed values per rule, kept by each Python worker across Arrow batches and tasks (Spark
#: reuses its Python workers), so a value repeated anywhere in a snapshot, or in the next snapshot
#: of a backfill, is parsed once per worker. Bounded: a rule's cache is emptied when it is full.
PARSE_CACHE_LIMIT = 250_000
_PARSED: dict[str, dict[str, tuple]] = {}


def _python_struct_udf(parse: Callable[[str], tuple], fields: list[str], cache_key: str):
    """An Arrow pandas UDF applying ``parse`` (str -> tuple of str|None) once per distinct value
    (``cache_key`` names the rule and its parameters: equal keys must mean equal results)."""
    schema = T.StructType([T.StructField(f, T.StringType()) for f in fields])

    @F.pandas_udf(schema)
    def udf(values: pd.Series) -> pd.DataFrame:
        import leadpipe.standardize as module  # the worker's module: its cache outlives this batch

        cache = module._PARSED.setdefault(cache_key, {})
        uniques = values.dropna().unique()
        fresh = [v for v in uniques if v not in cache]
        if len(cache) + len(fresh) > module.PARSE_CACHE_LIMIT:
            cache.clear()  # full: start again with this batch's values, all of them parsed here
            fresh = list(uniques)
        for v in fresh:
            cache[v] = parse(v)
        empty = (None,) * len(fields)
        rows = [cache.get(v, empty) if isinstance(v, str) else empty for v in values]
        return pd.DataFrame(rows, columns=fields, dtype=object)

    return udf


def parse_phone(value: str, region: str = "US") -> tuple[str | None]:
    import phonenumbers

    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return (None,)
    if not phonenumbers.is_valid_number(number):
        return (None,)
    return (phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),)


class PhoneParams(_Params):
    region: str = "US"


#: A North American number written plainly: an optional ``+1``/``1``, then area code (in
#: parentheses or not), exchange and line, separated by nothing, spaces, dots or hyphens. For such
#: a value phonenumbers' national number is these ten digits; any other value (letters, an
#: extension, a first digit 0 or 1) goes to phonenumbers itself.
_NANP_PLAIN = r"^(?:\+?1[ .-]*)?(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[ .-]*([0-9]{3})[ .-]*([0-9]{4})$"


def _desc_matches(digits: Column, desc, length: int) -> Column:
    """phonenumbers' ``_is_number_matching_desc`` for a national number of ``length`` digits."""
    if desc is None or not desc.national_number_pattern:
        return F.lit(False)
    if desc.possible_length and length not in desc.possible_length:
        return F.lit(False)
    return digits.rlike(f"^(?:{desc.national_number_pattern})$")  # the library's fullmatch


def _type_known(digits: Column, md) -> Column:
    """phonenumbers' ``_number_type_helper(...) != UNKNOWN`` for ten digits, from the region's
    metadata: the general pattern, then any number type (fixed line first: the usual one)."""
    kinds = [md.fixed_line, md.premium_rate, md.toll_free, md.shared_cost, md.voip, md.personal_number]
    kinds += [md.pager, md.uan, md.voicemail] + ([] if md.same_mobile_and_fixed_line_pattern else [md.mobile])
    known = F.lit(False)
    for desc in kinds:
        known = known | _desc_matches(digits, desc, 10)
    return _desc_matches(digits, md.general_desc, 10) & known


@functools.cache
def _nanp_valid_regions() -> tuple:
    import phonenumbers
    from phonenumbers import PhoneMetadata

    return tuple(PhoneMetadata.metadata_for_region(r) for r in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])


def nanp_valid(digits: Column) -> Column:
    """``phonenumbers.is_valid_number`` of a ten-digit North American national number, as a
    Spark expression built from the library's own metadata (its regular expressions, in its
    order): the number's region is the first whose leading digits match, or, for a region
    without leading digits, the first whose patterns know the number; valid when that region's
    patterns know it. A phonenumbers release with new metadata changes this with it."""
    result = None
    for md in reversed(_nanp_valid_regions()):  # built inside out: the first region decides first
        rest = F.lit(False) if result is None else result
        if md.leading_digits is not None:
            result = F.when(digits.rlike(f"^(?:{md.leading_digits})"), _type_known(digits, md)).otherwise(rest)
        else:
            result = F.when(_type_known(digits, md), F.lit(True)).otherwise(rest)
    return result


def _phone_groups(cols: list[Column], p: PhoneParams) -> list[Column]:
    """The value, and the value rewritten to ``_MARK`` and its ten digits when it is a plainly
    written North American number (one regular expression; else the value as it was), or NULL
    when the region is not one (country code 1)."""
    import phonenumbers

    if phonenumbers.country_code_for_region(p.region) != 1:
        return [cols[0], F.lit(None).cast("string")]
    # the area code is one of two groups, the other ''; a final line break, which $ lets through,
    # stays after the ten digits
    return [cols[0], F.regexp_replace(cols[0], _NANP_PLAIN, f"{_MARK}$1$2$3$4")]


def _phone_digits(cols: list[Column], p: PhoneParams) -> list[Column]:
    """The value, and its ten digits when ``_phone_groups`` matched (else NULL; a match starts
    with a digit, ``+`` or ``(``, never with ``_MARK``)."""
    value, groups = cols
    matched = groups.startswith(_MARK) & ~value.startswith(_MARK)
    # phonenumbers refuses (TOO_LONG) any value over 250 characters, separators included
    return [value, F.when((F.length(value) <= 250) & matched, F.substring(groups, 2, 10))]


def _phone_native(cols: list[Column], p: PhoneParams) -> list[Column]:
    """The value, and the E.164 of its ten digits when phonenumbers would call them valid (else
    NULL: phonenumbers decides). Computed natively: most listed numbers are plain and valid, and
    phonenumbers costs about 100 us a value in a Python worker (most of a week-1 read of Texas)."""
    value, digits = cols
    return [value, F.when(nanp_valid(digits), F.concat(F.lit("+1"), digits))]


@rule("phone", params=PhoneParams, prepare=(_phone_groups, _phone_digits, _phone_native))
def phone(cols: list[Column], p: PhoneParams) -> dict[str, Column]:
    """E.164 via phonenumbers (``830-429-1010`` -> ``+18304291010``); invalid -> NULL. A plainly
    written valid North American number is formatted natively (``nanp_valid``: the library's own
    metadata), every other value by phonenumbers in a Python worker."""
    value, native = cols
    region = p.region
    udf = _python_struct_udf(lambda v: parse_phone(v, region), ["e164"], f"phone:{region}")
    return {"value": F.coalesce(native, udf(F.when(native.isNull(), value))["e164"])}


def parse_us_address(value: str) -> tuple[str | None, ...]:
    """One-line US address -> (address1, address2, city, state, zip) with usaddress.

    Street and city need no separator (``6321 LAUREN ASHTON AVENUE LAS VEGAS, NV 89131``):
    usaddress tags the city (``PlaceName``) from the words themselves.
    """
    import usaddress

    try:
        tagged, _kind = usaddress.tag(value)
    except usaddress.RepeatedLabelError as exc:
        tagged = {}
        for token, label in exc.parsed_string:
            tagged[label] = f"{tagged[label]} {token}" if label in tagged else token
    street_labels = [
        "AddressNumberPrefix",
        "AddressNumber",
        "AddressNumberSuffix",
        "StreetNamePreModifier",
        "StreetNamePreDirectional",
        "StreetNamePreType",
        "StreetName",
        "StreetNamePostType",
        "StreetNamePostDirectional",
        "StreetNamePostModifier",
        "USPSBoxType",
        "USPSBoxID",
        "USPSBoxGroupType",
        "USPSBoxGroupID",
        "BuildingName",
        "LandmarkName",
        "CornerOf",
        "IntersectionSeparator",
        "SecondStreetNamePreDirectional",
        "SecondStreetName",
        "SecondStreetNamePostType",
    ]
    unit_labels = ["OccupancyType", "OccupancyIdentifier", "SubaddressType", "SubaddressIdentifier"]

    def join(labels):
        text = " ".join(tagged[k] for k in labels if k in tagged).strip(" ,")
        return re.sub(r"\s*,\s*$", "", re.sub(r"\s+", " ", text)) or None

    address1 = join(street_labels)
    address2 = join(unit_labels)
    if address1:
        address1 = address1.rstrip(",").strip()
    if address2:
        address2 = address2.strip(" ,")
    city = (tagged.get("PlaceName") or "").strip(" ,") or None
    state = (tagged.get("StateName") or "").strip(" ,.").upper() or None
    zip5 = None
    m = re.match(r"^(\d{5})", (tagged.get("ZipCode") or "").strip())
    if m:
        zip5 = m.group(1)
    if state and state not in US_STATES:
        state = None
    return (address1, address2, city, state, zip5)


@rule(
    "us_address",
    outputs=("address1", "address2", "city", "state", "zip"),
    optional=("address2",),
)
def us_address(cols: list[Column], p: _Params) -> dict[str, Column]:
    """One-field address ``STREET[, UNIT] CITY, ST ZIP`` -> street, unit, city, state, zip."""
    parsed = _python_struct_udf(parse_us_address, ["address1", "address2", "city", "state", "zip"], "us_address")(
        cols[0]
    )
    return {k: parsed[k] for k in ("address1", "address2", "city", "state", "zip")}


_CONNECTOR = re.compile(r"\s*(?:&|\bAND\b|,)\s*", re.I)


def first_person(value: str) -> str:
    """The first person of a cell that may list several.

    Agencies pack couples as ``FIRST1 & FIRST2 LAST1 & LAST2`` (``TANIA & NICOLE PINEDA &
    POBLETE``), with ``AND`` or commas as well (``ARGIE, NELLY REYES, ARROYO``); the first person
    is FIRST1 LAST1. ``SARA PALLUCK AND HEATHER EASTVELD PALLUCK`` lists full names: SARA PALLUCK.
    """
    parts = [p for p in _CONNECTOR.split(value.strip()) if p]
    if len(parts) <= 1:
        return value.strip()
    if len(parts) >= 4 and len(parts) % 2 == 0 and all(len(p.split()) == 1 for p in parts):
        # FIRST1 & FIRST2, LAST1 & LAST2: first names, then surnames in the same order
        return f"{parts[0]} {parts[len(parts) // 2]}"
    if len(parts) >= 3 and len(parts[0].split()) == 1:
        # FIRST1 <c> FIRST2 LAST1 <c> LAST2: the middle part ends with the first person's surname
        middle = parts[1].split()
        if len(middle) >= 2:
            return f"{parts[0]} {middle[-1]}" if len(middle) == 2 else f"{parts[0]} {' '.join(middle[1:])}"
    if len(parts[0].split()) == 1 and len(parts) == 2 and len(parts[1].split()) >= 2:
        # FIRST1 & FIRST2 LAST: shared surname
        return f"{parts[0]} {parts[1].split()[-1]}"
    return parts[0]


def parse_person(value: str, several: bool = True) -> tuple[str | None, str | None]:
    """Person cell -> (first_name, last_name), capitalized (nameparser)."""
    from nameparser import HumanName

    text = first_person(value) if several else value
    name = HumanName(text)
    if text.isupper() or text.islower():
        name.capitalize(force=True)
    first = name.first or None
    if not first and name.title and (name.last or name.middle):
        # nameparser knows many titles that are also given names ("Burgess Mia")
        first = name.title
    last = " ".join(x for x in (name.last, name.suffix) if x) or None
    if first and not last and name.middle:
        last = name.middle
    return (first, last)


class PersonParams(_Params):
    several: bool = True


@rule("person_name", outputs=("first_name", "last_name"), params=PersonParams)
def person_name(cols: list[Column], p: PersonParams) -> dict[str, Column]:
    """Contact name cell -> first and last name of the first person listed."""
    several = p.several
    parsed = _python_struct_udf(lambda v: parse_person(v, several), ["first_name", "last_name"], f"person:{several}")(
        cols[0]
    )
    return {"first_name": parsed["first_name"], "last_name": parsed["last_name"]}


def parse_name_and_title(value: str) -> tuple[str | None, str | None, str | None]:
    """``Elizabeth Hellstrom\\nPrimary Caregiver`` -> (Elizabeth, Hellstrom, Primary Caregiver).

    Blank lines (nothing but white space or invisible characters: ``Name\\n \\nTitle``) are skipped.
    """
    lines = [line.strip() for line in re.split(r"[\r\n]+", value) if re.search(r"\w", line)]
    if not lines:
        return (None, None, None)
    first, last = parse_person(lines[0])
    title = " ".join(lines[1:]) or None
    return (first, last, title)


@rule("name_title_lines", outputs=("first_name", "last_name", "title"), optional=("title",))
def name_title_lines(cols: list[Column], p: _Params) -> dict[str, Column]:
    """A two-line cell: the person's name, then their title (Oklahoma ``Primary Caregiver``);
    blank lines between them are skipped."""
    parsed = _python_struct_udf(parse_name_and_title, ["first_name", "last_name", "title"], "name_title")(cols[0])
    return {k: parsed[k] for k in ("first_name", "last_name", "title")}


_CORPORATE = (
    r"(?:L\.?\s?L\.?\s?C\.?|INC\.?|CORP\.?|CORPORATION|CO\.?|LTD\.?|P\.?L\.?L\.?C\.?|L\.?C\.?|LLP|COMPANY|FOUNDATION)"
)
_PERSON_COMMA = re.compile(r"^(?P<last>[A-Z][A-Z'\-]*(?: [A-Z][A-Z'\-]*)?),\s*(?P<first>[A-Z][A-Z'\-\. ]*?)$", re.I)


def parse_dba(value: str) -> tuple[str | None, str | None]:
    """``LAST, FIRST DBA TRADE NAME, LLC`` -> (company ``TRADE NAME, LLC``, licensee ``First Last``).

    ``LAST, FIRST`` alone is a person trading under their own name: company and licensee are
    both that person. Anything else (``MUDDY PUDDLES LEARNING SPACE, LLC``) is a company.
    """
    from nameparser import HumanName

    text = re.sub(r"\s+", " ", value).strip()
    text = re.sub(r"\s*,\s*", ", ", text)
    m = re.match(r"^(?P<who>.*?)\s+D\.?B\.?A\.?:?\s+(?P<trade>.+)$", text, re.I)
    who, trade = (m.group("who"), m.group("trade")) if m else (text, None)
    person = None
    pm = _PERSON_COMMA.match(who.strip(" ,"))
    if pm and not re.fullmatch(_CORPORATE, pm.group("first").strip(), re.I):
        name = HumanName(f"{pm.group('first')} {pm.group('last')}")
        name.capitalize(force=True)
        person = str(name)
    if trade:
        return (trade.strip(" ,"), person or who.strip(" ,"))
    if person:
        return (person, person)
    return (text, None)


#: ``_PERSON_COMMA`` for printable ASCII text whose only blanks are single spaces: there Python's
#: case folding of ``[A-Z]`` is ``[A-Za-z]`` (it also folds U+212A, U+017F, U+0130, U+0131 into
#: it, which such text cannot hold) and its ``\s`` can only be a space.
_PERSON_COMMA_ASCII = r"^[A-Za-z][A-Za-z'-]*(?: [A-Za-z][A-Za-z'-]*)?, *[A-Za-z][A-Za-z'. -]*$"


def _dba_plain(cols: list[Column], p: _Params) -> list[Column]:
    """The value, and the value again when ``parse_dba`` would return it unchanged as the company
    with no licensee (else NULL), natively: printable ASCII (so case folding and blanks are the
    same in Java as in Python), single inner spaces and every comma followed by one space, not
    first, not last and not after a space (so ``parse_dba``'s blank and comma folding and its
    strip change nothing), no ``D``, ``.``, ``B`` in a row (so no ``DBA``), and not
    ``LAST, FIRST`` (``_PERSON_COMMA``, or a person). Only the other values go to the Python
    worker."""
    value = cols[0]
    plain = (
        ~value.rlike("[^ -~]")
        & ~value.startswith(" ")
        & ~value.endswith(" ")
        & ~value.contains("  ")
        & ~value.startswith(",")
        & ~value.rlike(" ,|,(?! )")
        & ~value.rlike(r"(?i)d\.?b")
        & ~value.rlike(_PERSON_COMMA_ASCII)
    )
    return [value, F.when(plain, value)]


@rule("dba_company", outputs=("company", "licensee_name"), optional=("licensee_name",), prepare=(_dba_plain,))
def dba_company(cols: list[Column], p: _Params) -> dict[str, Column]:
    """Company cell that may hold ``LAST, FIRST DBA TRADE NAME`` (Oklahoma family homes).
    A plain name (``_dba_plain``) is its own company, natively; any other value is parsed by
    ``parse_dba`` in a Python worker."""
    value, plain = cols
    parsed = _python_struct_udf(parse_dba, ["company", "licensee_name"], "dba")(F.when(plain.isNull(), value))
    return {
        "company": F.coalesce(plain, parsed["company"]),
        "licensee_name": F.when(plain.isNull(), parsed["licensee_name"]),
    }


# --------------------------------------------------------------------------- applying rules


def raw_present(cols: list[Column]) -> Column:
    present = F.lit(False)
    for c in cols:
        present = present | c.isNotNull()
    return present


def apply_rules(raw: DataFrame, cfg, skip: str | None = None) -> DataFrame:
    """Evaluate a source's configured rules on its raw columns.

    Returns ``raw`` plus one ``__<column>`` per canonical business column the source fills,
    ``dq_issues``: one entry per required output that came out NULL although a source value was
    present, and ``dq_present``: per field of ``cfg.fields`` (same order), whether any of its
    inputs had a value after ``clean`` (skipped rows too: the field-quality report counts it
    from here instead of cleaning every raw value a second time). Each rule is evaluated once
    per row (its outputs travel as one struct), so a library-backed rule parses a value once
    even when it fills several columns. Where the boolean
    column named ``skip`` is true the rules see NULL inputs (their outputs are to be ignored): such rows cost no parsing.
    Rules that need the snapshot's date (``date``: two-digit years) read ``_snapshot_date``; rows
    without that column are taken as today's snapshot.
    """
    plan = _rule_columns(cfg, skip)
    raw_cols = list(raw.columns)
    today = [] if SNAPSHOT_DATE_COLUMN in raw_cols else [F.current_date().alias(SNAPSHOT_DATE_COLUMN)]
    prepared = raw.select("*", *plan.cleaned, *today)
    for step in plan.steps:  # the rules' prepare steps, one projection per depth (RuleSpec.prepare)
        prepared = prepared.select("*", *step)
    staged = prepared.select(*[column(c) for c in raw_cols], *plan.structs, plan.present.alias(PRESENT_COLUMN))
    keep = [column(c) for c in raw_cols]
    return staged.select(*keep, *plan.outputs, plan.issues.alias("dq_issues"), PRESENT_COLUMN)


@dataclass(frozen=True)
class _RulePlan:
    cleaned: list[Column]
    steps: list[list[Column]]
    structs: list[Column]
    outputs: list[Column]
    issues: Column
    present: Column


_RULE_PLANS: dict[tuple[str, str, str, str | None], _RulePlan] = {}


def _rule_columns(cfg, skip: str | None) -> _RulePlan:
    """The rules' column expressions of a source, built once per (source, rules, skip) and reused
    for every snapshot: they refer to columns by name only, and building them costs a thousand
    calls into the JVM (about a second per snapshot in a backfill)."""
    from pyspark import SparkContext

    key = (SparkContext._active_spark_context.applicationId, cfg.id, cfg.rules_version(), skip)  # new app: new columns
    if key in _RULE_PLANS:
        return _RULE_PLANS[key]
    # Clean every input column once, as a column of its own: rules then refer to it by name
    # instead of repeating the whole clean() expression in every reference.
    names = sorted({name for field in cfg.fields for name in field.inputs})
    cleaned = {name: f"__in{i}" for i, name in enumerate(names)}

    def rule_input(name: str) -> Column:  # a skipped row's rules see NULLs: nothing to parse
        c = F.col(cleaned[name])
        return c if skip is None else F.when(~F.col(skip), c)

    steps: list[list[Column]] = []
    structs = []
    for i, field in enumerate(cfg.fields):
        spec = RULES[field.rule]
        params = spec.params_model.model_validate(field.params)
        inputs = [rule_input(name) for name in field.inputs]
        context = {"snapshot_date": F.col(SNAPSHOT_DATE_COLUMN)} if spec.snapshot_date else {}
        cols = inputs
        for depth, step in enumerate(spec.prepare):
            made = step(cols, params, **context)
            aliases = [f"__prep{i}_{depth}_{k}" for k in range(len(made))]
            if len(steps) <= depth:
                steps.append([])
            steps[depth].extend(c.alias(a) for c, a in zip(made, aliases, strict=True))
            cols = [F.col(a) for a in aliases]
        produced = spec.fn(cols, params, **context)
        structs.append(
            F.struct(
                *[produced[slot].alias(slot) for slot in field.outputs()],
                raw_present(inputs).alias("__present"),
                F.concat_ws(" | ", *inputs).alias("__raw"),
            ).alias(f"__rule{i}")
        )
    outputs: list[Column] = []
    issues: list[Column] = []
    for i, field in enumerate(cfg.fields):
        spec = RULES[field.rule]
        result = F.col(f"__rule{i}")
        for slot, target in field.outputs().items():
            outputs.append(result[slot].alias(f"__{target}"))
            if slot in spec.optional_outputs:
                continue
            issues.append(
                F.when(
                    result["__present"] & result[slot].isNull(),
                    F.struct(
                        F.lit(target).alias("column"),
                        F.lit(field.rule).alias("rule"),
                        result["__raw"].alias("raw_value"),
                    ),
                )
            )
    issue_array = F.filter(F.array(*issues), lambda x: x.isNotNull()) if issues else F.array()
    present = F.array(*[raw_present([F.col(cleaned[name]) for name in f.inputs]) for f in cfg.fields])
    plan = _RulePlan(
        [clean(column(n)).alias(a) for n, a in cleaned.items()], steps, structs, outputs, issue_array, present
    )
    _RULE_PLANS[key] = plan
    return plan
