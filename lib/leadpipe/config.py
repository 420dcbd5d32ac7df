"""Configuration as data: one YAML file per source, one for environment settings.

Everything is validated at start-up with pydantic. A problem raises :class:`ConfigError` whose
message names the file and the key (``conf/sources/tx_hhs.yaml: fields[3].rule: unknown rule
'phon'``), so a bad config never reaches Spark.

Where the configuration comes from (:func:`resolve_conf_dir`): ``--conf-dir`` (a folder or an
``s3://`` URI), else ``$LEADPIPE_CONF_DIR``, else the copy shipped inside the package as package
data (``conf/`` of the checkout, linked as ``lib/leadpipe/conf``), which therefore works the
same from a checkout, an installed wheel or a ``--py-files`` zip. Relative paths in settings are
relative to the working directory.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadpipe.aws import s3_location
from leadpipe.canonical import BUSINESS_COLUMNS, FACILITY_TYPES
from leadpipe.postgres import check_statement_timeout, check_url
from leadpipe.standardize import RULES

CONF_ENV = "LEADPIPE_CONF_DIR"


def header_key(name: str) -> str:
    """How a file's header name is compared with a configured column or alias: case, spaces and
    punctuation ignored (``Phone#`` = ``phone``, ``Operation #`` = ``OPERATION``)."""
    return re.sub(r"[\W_]+", "", name.casefold())


_JAVA_CHARSETS = {
    "utf-8": "UTF-8",
    "ascii": "US-ASCII",
    "latin-1": "ISO-8859-1",
    "iso8859-1": "ISO-8859-1",
    "utf-16-le": "UTF-16LE",
    "utf-16-be": "UTF-16BE",
    "utf-32-le": "UTF-32LE",
    "utf-32-be": "UTF-32BE",
    "mac-roman": "x-MacRoman",
}


def java_charset(python_codec: str) -> str | None:
    """The name Spark's (Java's) CSV reader knows for a Python codec; None when it has none."""
    import codecs

    try:
        name = codecs.lookup(python_codec).name
    except LookupError:
        return None
    if m := re.fullmatch(r"cp(125\d)", name):
        return f"windows-{m.group(1)}"
    if m := re.fullmatch(r"iso8859-(\d+)", name):
        return f"ISO-8859-{m.group(1)}"
    return _JAVA_CHARSETS.get(name)


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    """How a source's files are read. Names follow Spark's CSV options where they exist.

    ``encoding``: the agency's 8-bit encoding, used when a file has no byte-order mark and is
    not valid UTF-8 (sniff.py detects BOMs, UTF-16/32 and UTF-8 per file first);
    ``detect_encoding: false`` pins ``encoding`` for every file. ``delimiter``: the usual one;
    when a file's header does not match with it, the others of ``sniff_delimiters`` are tried.
    ``multi_line_columns``: the only columns whose cells may span lines (``multi_line`` must be
    true then); a line break in any other cell, or more than ``multi_line_max_lines`` lines in
    one of them, marks the record ``runaway_quote``.
    """

    encoding: str = "utf-8"
    detect_encoding: bool = True
    multi_line: bool = False
    multi_line_columns: list[str] = Field(default_factory=list)
    multi_line_max_lines: int = Field(4, ge=2)  # more lines in such a cell: a runaway quote too
    quote: str = '"'
    escape: str = '"'
    delimiter: str = ","
    sniff_delimiters: list[str] = Field(default_factory=lambda: [",", ";", "\t", "|"])

    @field_validator("quote", "escape", "delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("sniff_delimiters")
    @classmethod
    def _one_char_each(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if len(v) != 1]
        if bad:
            raise ValueError(f"each must be exactly one character, got {bad}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if java_charset(value) is None:
            raise ValueError(
                f"unknown encoding {value!r}, or one Spark's reader has no name for: use utf-8, cp1252 (or another "
                "cp125x), latin-1 (or another iso8859-N) or mac-roman"
            )
        return value

    @model_validator(mode="after")
    def _multi_line_columns(self) -> CsvOptions:
        if self.multi_line and not self.multi_line_columns:
            raise ValueError(
                "multi_line is true: name the columns whose cells may span lines in multi_line_columns "
                "(a line break anywhere else is a runaway quote)"
            )
        if self.multi_line_columns and not self.multi_line:
            raise ValueError("multi_line_columns is set: multi_line must be true")
        return self


class FieldRule(_Strict):
    """One transform: source column(s) -> standardizer rule -> canonical column(s)."""

    to: str | list[str] | dict[str, str]
    from_: str | list[str] = Field(alias="from")
    rule: str
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return [self.from_] if isinstance(self.from_, str) else list(self.from_)

    def outputs(self) -> dict[str, str]:
        """Map of the rule's output slot -> canonical column."""
        spec = RULES[self.rule]
        if isinstance(self.to, dict):
            return dict(self.to)
        targets = [self.to] if isinstance(self.to, str) else list(self.to)
        return dict(zip(spec.outputs, targets, strict=True))

    @model_validator(mode="after")
    def _check_rule(self) -> FieldRule:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; known rules: {', '.join(sorted(RULES))}")
        spec = RULES[self.rule]
        if isinstance(self.to, dict):
            unknown = set(self.to) - set(spec.outputs)
            if unknown:
                raise ValueError(
                    f"rule {self.rule!r} has no output {sorted(unknown)}; its outputs: {list(spec.outputs)}"
                )
            targets = list(self.to.values())
        else:
            targets = [self.to] if isinstance(self.to, str) else list(self.to)
            if len(targets) != len(spec.outputs):
                raise ValueError(
                    f"rule {self.rule!r} writes {len(spec.outputs)} column(s) {list(spec.outputs)}, "
                    f"'to' names {len(targets)}; use a mapping to write only some of them"
                )
        bad = [t for t in targets if t not in BUSINESS_COLUMNS]
        if bad:
            raise ValueError(f"'to' names columns that are not canonical business columns: {bad}")
        if spec.arity is not None and len(self.inputs) != spec.arity:
            raise ValueError(f"rule {self.rule!r} takes {spec.arity} source column(s), got {len(self.inputs)}")
        try:
            spec.params_model.model_validate(self.params)
        except ValidationError as exc:
            raise ValueError(f"params for rule {self.rule!r}: {_flatten(exc)}") from None
        return self


class Identity(_Strict):
    """Where a lead's identity comes from: source columns as the agency wrote them.

    ``lead_id`` = source + hash of these raw values after the frozen normalization of
    :func:`leadpipe.canonical.identity_value` (trim, upper case, inner white space folded), never
    the output of a standardization rule. ``after_last`` keeps only the text after the last
    occurrence of a separator (Oklahoma's ``CHILD CARE FAMILY - K820055232`` -> ``K820055232``).
    Changing this block changes every lead_id of the source: it is part of the lead's identity.
    """

    columns: list[str] = Field(min_length=1)
    after_last: str | None = Field(None, min_length=1)


class HoldRules(_Strict):
    """When a snapshot looks destructive enough to hold instead of merging (see pipeline.py).

    ``max_removed_share``: hold when the MERGE would mark more than this share of the source's
    active leads removed. ``min_rows_ratio``: hold when the snapshot has fewer rows than this
    share of the previous applied snapshot's. Either may be null to switch the rule off.
    """

    max_removed_share: float | None = Field(0.2, ge=0, le=1)
    min_rows_ratio: float | None = Field(0.5, ge=0, le=1)


class SourceConfig(_Strict):
    """A licensing agency's weekly export."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    licensing_authority: str
    state: str = Field(pattern=r"^[A-Z]{2}$")
    file_pattern: str
    date_format: str = "%m-%d-%Y"
    csv: CsvOptions = CsvOptions()
    columns: list[str]
    aliases: dict[str, list[str]] = Field(default_factory=dict)  # column -> other names it has had
    required_columns: list[str] = Field(default_factory=list)
    identity: Identity
    fields: list[FieldRule]
    hold: HoldRules | None = None  # None: the defaults of settings.yaml 'hold'
    path: str = ""

    @field_validator("file_pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if "date" not in compiled.groupindex:
            raise ValueError("must have a named group (?P<date>...) holding the snapshot date")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SourceConfig:
        known = set(self.columns)
        for i, f in enumerate(self.fields):
            missing = [c for c in f.inputs if c not in known]
            if missing:
                raise ValueError(f"fields[{i}].from names columns not in 'columns': {missing}")
        missing = [c for c in self.required_columns if c not in known]
        if missing:
            raise ValueError(f"required_columns not in 'columns': {missing}")
        written: dict[str, int] = {}
        for i, f in enumerate(self.fields):
            for target in f.outputs().values():
                if target in written:
                    raise ValueError(f"fields[{i}] writes {target!r}, already written by fields[{written[target]}]")
                written[target] = i
        missing = [c for c in self.identity.columns if c not in known]
        if missing:
            raise ValueError(f"identity.columns not in 'columns': {missing}")
        missing = [c for c in self.aliases if c not in known]
        if missing:
            raise ValueError(f"aliases names columns not in 'columns': {missing}")
        missing = [c for c in self.csv.multi_line_columns if c not in known]
        if missing:
            raise ValueError(f"csv.multi_line_columns not in 'columns': {missing}")
        claimed: dict[str, str] = {}
        for column in self.columns:
            for name in [column, *self.aliases.get(column, [])]:
                key = header_key(name)
                if claimed.get(key, column) != column:
                    raise ValueError(
                        f"aliases: {name!r} names both {claimed[key]!r} and {column!r}: header names are compared "
                        "ignoring case, spaces and punctuation, so each name must be unique that way"
                    )
                claimed[key] = column
        for i, f in enumerate(self.fields):
            if "facility_type" in f.outputs().values():
                bad = sorted(v for v in f.params.get("values", {}) if v not in FACILITY_TYPES)
                if f.rule != "vocab" or bad:
                    raise ValueError(
                        f"fields[{i}]: facility_type must come from a vocab rule whose values are "
                        f"{list(FACILITY_TYPES)}; got rule {f.rule!r}, values {bad}"
                    )
        return self

    def matches(self, file_name: str) -> re.Match[str] | None:
        return re.fullmatch(self.file_pattern, file_name)

    @property
    def key_columns(self) -> list[str]:
        """Source columns a file must have: identity plus ``required_columns``."""
        return list(dict.fromkeys([*self.identity.columns, *self.required_columns]))

    def rules_version(self) -> str:
        """Short hash of everything that decides the standardized fields of this source: the
        field rules with their params, the rule library's version, its code and the parsing
        libraries' versions. Recorded on every lead
        and MERGE commit, so a rule change is reported as such, not as providers changing."""
        import hashlib
        import json

        from leadpipe.standardize import RULES_LIBRARY_VERSION, rules_code_version

        spec = [f.model_dump(by_alias=True) for f in self.fields]
        text = json.dumps(
            {"library": RULES_LIBRARY_VERSION, "code": rules_code_version(), "fields": spec},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


#: SQL identifiers from settings: lower-case, no quoting tricks, within PostgreSQL's 63 bytes;
#: the leads table leaves room for the 28-byte ``_stage_<8>_<12>`` suffix of its staging tables.
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
SQL_TABLE = r"^[a-z_][a-z0-9_]{0,34}$"


class PostgresSettings(_Strict):
    url: str | None = None
    embedded_dir: str = ".local/postgres"
    schema_: str = Field("public", alias="schema", pattern=SQL_IDENTIFIER)
    leads_table: str = Field("leads", pattern=SQL_TABLE)
    connect_attempts: int = Field(4, ge=1, le=20)  # bounded retries when the server is unreachable
    retry_backoff_seconds: float = Field(2.0, ge=0, le=60)  # doubles after every failed attempt
    # Secrets Manager secret (name or ARN) holding the password, when PGPASSWORD is not set
    password_secret: str | None = None
    # every session's statement_timeout (postgres.py): 0 = none, whatever the role or database
    # sets; None (null) = the server's
    statement_timeout: str | None = "0"

    @field_validator("statement_timeout", mode="before")
    @classmethod
    def _duration(cls, value):  # YAML's 0 is an int: checked as the text PostgreSQL would read
        return value if value is None else check_statement_timeout(str(value))

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)
        return value


#: Spark settings read only when a JVM starts: set in ``spark:`` (applied to a running session)
#: they would be silently ignored under spark-submit, so they belong in ``spark_submit:``.
LAUNCH_ONLY_SPARK = re.compile(
    r"^spark\.(driver\.(memory|memoryOverhead|cores|extra\w+|defaultJavaOptions)|jars|submit\..*)$"
)


#: A JVM memory size as Spark reads it: a number, optionally k/m/g/t (or kb/mb/gb/tb; no unit: MiB).
MEMORY = re.compile(r"^\d+([kmgt]b?)?$", re.I)


class AlertSettings(_Strict):
    """Where each run's alert or summary goes (aws.py)."""

    sns_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


S3_URI = r"^s3a?://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"


class EmrSettings(_Strict):
    """The production path (emr.py, package.py): where ``make deploy`` uploads ``dist/`` (an
    ``s3://`` URI: the bootstrap action copies from it with the AWS CLI) and what the weekly EMR
    step runs; ``warehouse`` defaults to the top-level ``warehouse`` when that is an S3 URI, and
    ``archive`` to the top-level ``archive`` (which must then be one)."""

    deploy_uri: str | None = Field(None, pattern=S3_URI.replace("s3a?", "s3"))  # s3://<deploy bucket>/
    input: str | None = Field(None, pattern=S3_URI)  # s3://<drop bucket>/active/
    warehouse: str | None = Field(None, pattern=S3_URI)  # s3://<lake bucket>/warehouse/
    archive: str | None = Field(None, pattern=S3_URI)  # s3://<drop bucket>/historical/
    step_name: str = Field("weekly-leads", min_length=1, max_length=256)
    action_on_failure: str = Field("CONTINUE", pattern="^(CONTINUE|CANCEL_AND_WAIT|TERMINATE_CLUSTER)$")


class Settings(_Strict):
    """Environment settings (conf/settings.yaml): where things live and how Spark runs.

    ``spark_submit`` holds what Spark reads when the driver JVM starts (driver memory): `make jars`
    writes it into spark-defaults.conf, an EMR step must pass it as ``--conf``, and a session that
    Python starts itself sets it. ``spark`` holds session settings, applied when the job starts.
    """

    warehouse: str = ".local/warehouse"
    reports: str | None = None  # None: reports/ beside the warehouse
    jars_dir: str = "jars"
    spark: dict[str, str] = Field(default_factory=dict)
    spark_submit: dict[str, str] = Field(default_factory=dict)
    spark_log_level: str = Field("WARN", pattern="^(ALL|DEBUG|INFO|WARN|ERROR|FATAL|OFF)$")
    postgres: PostgresSettings = PostgresSettings()
    jdbc_batch_size: int = 10000
    delivery_method: str = Field("direct", pattern="^(direct|copy|jdbc)$")  # deliver.METHODS
    quality_top_values: int = 5
    hold: HoldRules = HoldRules()
    delta_commit_attempts: int = Field(3, ge=1, le=10)  # a MERGE that lost a Delta commit race is retried
    expected_sources: list[str] = Field(default_factory=list)  # reported as missing_sources when absent
    archive: str | None = None  # where processed input files move after delivery (None: they stay)
    alerts: AlertSettings = AlertSettings()
    emr: EmrSettings = EmrSettings()
    path: str = ""

    @field_validator("spark")
    @classmethod
    def _session_settings_only(cls, value: dict[str, str]) -> dict[str, str]:
        late = sorted(k for k in value if LAUNCH_ONLY_SPARK.match(k))
        if late:
            raise ValueError(
                f"{late} take effect only when the driver JVM starts (spark-submit has started it before the job "
                "reads this file): move them to 'spark_submit', which `make jars` writes into spark-defaults.conf"
            )
        return value

    @field_validator("spark_submit")
    @classmethod
    def _memory_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(
            k for k, v in value.items() if k.endswith(("memory", "memoryOverhead")) and not MEMORY.match(str(v))
        )
        if bad:
            raise ValueError(
                f"{bad}: a JVM memory size such as 4g, 512m, 2gb or 4096 (MiB), got {[value[k] for k in bad]}"
            )
        return value

    def hold_rules(self, source: SourceConfig) -> HoldRules:
        return source.hold or self.hold


def _flatten(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"] if x != "__root__")
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _describe(exc: ValidationError, path: Path | str) -> str:
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {loc or '<top>'}: {msg}")
    return "\n".join(lines)


def _load_yaml(path: Path, name: str | None = None) -> dict[str, Any]:
    name = name or str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{name}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: <top>: expected a mapping, got {type(data).__name__}")
    return data


def load_source(path: Path, name: str | None = None) -> SourceConfig:
    """One source file; ``name`` is how messages call it (its S3 URI when it came from S3)."""
    name = name or str(path)
    data = _load_yaml(path, name)
    try:
        cfg = SourceConfig.model_validate({**data, "path": name})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name)) from None
    if path.stem != cfg.id:
        raise ConfigError(f"{name}: id: {cfg.id!r} must equal the file name {path.stem!r}")
    return cfg


@dataclass(frozen=True)
class ConfDir:
    """A configuration folder on local disk (``sources/*.yaml``, ``settings.yaml``) and where it
    came from: the folder itself, an S3 URI it was copied from, or the package's own copy."""

    path: Path
    origin: str

    def name(self, relative: str) -> str:
        """How messages name a file of this folder: ``s3://b/conf/sources/tx_hhs.yaml``."""
        return f"{self.origin.rstrip('/')}/{relative}"

    def __str__(self) -> str:
        return self.origin


def _as_conf_dir(conf_dir: ConfDir | Path | str | None) -> ConfDir:
    if isinstance(conf_dir, ConfDir):
        return conf_dir
    if conf_dir is None:
        return resolve_conf_dir(None)
    return ConfDir(Path(conf_dir), str(conf_dir))


def load_sources(conf_dir: ConfDir | Path | str | None = None) -> dict[str, SourceConfig]:
    """Every ``sources/*.yaml`` of the configuration (default: :func:`resolve_conf_dir`): a new
    state is a new file there."""
    conf = _as_conf_dir(conf_dir)
    paths = sorted((conf.path / "sources").glob("*.yaml"))
    if not paths:
        raise ConfigError(f"{conf.name('sources')}: no source files (*.yaml)")
    sources = {}
    for path in paths:
        cfg = load_source(path, conf.name(f"sources/{path.name}"))
        sources[cfg.id] = cfg
    return sources


def load_settings(conf_dir: ConfDir | Path | str | None = None) -> Settings:
    """``settings.yaml`` of the configuration (default: :func:`resolve_conf_dir`); every key has a
    default, so a folder without it gets the defaults."""
    conf = _as_conf_dir(conf_dir)
    path, name = conf.path / "settings.yaml", conf.name("settings.yaml")
    data = _load_yaml(path, name) if path.exists() else {}
    try:
        return Settings.model_validate({**data, "path": name})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, name)) from None


def resolve_conf_dir(location: str | Path | None = None) -> ConfDir:
    """The configuration the job runs with: ``location`` (``--conf-dir``), else
    ``$LEADPIPE_CONF_DIR``, else the configs shipped inside the package (package data, so a wheel
    or a zip on an EMR node has them). A location is a local folder or an ``s3://``/``s3a://``
    URI, whose ``settings.yaml`` and ``sources/*.yaml`` are copied to a local folder first (the
    standard AWS credential chain and ``AWS_ENDPOINT_URL(_S3)``)."""
    location = location or os.environ.get(CONF_ENV) or None
    if location is None:
        return packaged_conf_dir()
    text = str(location)
    if text.startswith(("s3://", "s3a://")):
        return ConfDir(_download_s3_conf(text), text)
    path = Path(text)
    if not (path / "sources").is_dir():
        raise ConfigError(f"{text}: not a configuration folder (no sources/ in it)")
    return ConfDir(path, text)


def packaged_conf_dir() -> ConfDir:
    """The configuration shipped inside the ``leadpipe`` package. Where the package is a zip
    (``--py-files``), its files are copied out to a temporary folder first."""
    tree = resources.files("leadpipe") / "conf"
    if isinstance(tree, Path) and (tree / "sources").is_dir():
        real = tree.resolve()  # a checkout links lib/leadpipe/conf to conf/: name the files people edit
        return ConfDir(real, str(real))
    if not tree.joinpath("sources").is_dir():
        raise ConfigError("the leadpipe package holds no conf/sources: it was built without its configuration")
    target = _scratch_folder("leadpipe-conf-")
    for rel in ["settings.yaml", *(f"sources/{f.name}" for f in tree.joinpath("sources").iterdir())]:
        item = tree.joinpath(rel)
        if item.is_file() and rel.endswith(".yaml"):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(item.read_bytes())
    return ConfDir(target, str(tree).rstrip("/"))  # messages name the file inside the zip


def _scratch_folder(prefix: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _download_s3_conf(uri: str) -> Path:
    """Copy ``settings.yaml`` and ``sources/*.yaml`` below ``uri`` to a local temporary folder."""
    import boto3

    bucket, prefix = s3_location(uri)
    target = _scratch_folder("leadpipe-conf-")
    client = boto3.client("s3")
    keys = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        wanted = [k for k in keys if re.fullmatch(r"settings\.yaml|sources/[^/]+\.yaml", k[len(prefix) :])]
        for key in wanted:
            local = target / key[len(prefix) :]
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, key, str(local))
    except Exception as exc:
        raise ConfigError(f"{uri}: could not read the configuration: {type(exc).__name__}: {exc}") from None
    if not any(k[len(prefix) :].startswith("sources/") for k in wanted):
        raise ConfigError(f"{uri}: not a configuration folder (no sources/*.yaml below it)")
    return target
