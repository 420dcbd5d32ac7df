"""Sniff: look at each file's bytes before Spark reads it, and decide how to read it or why not.

A file is read only when its format is known: not empty, not compressed or binary, an encoding
that decodes it, a delimiter that splits its header into the source's columns, and every
required column present. Anything else is a :class:`Rejection` with a reason code and a message
an operator can act on; the file is reported and never read (see README "Bad input").

What is detected, per file, from a sample (the first 256 KiB, then 16 windows of 16 KiB spread
over the rest of a large file, the last at its end; a file whose sampled bytes are all ASCII
but that holds other bytes elsewhere is read with the configured encoding):

- **Encoding**: a byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE); UTF-16 without one (NUL
  bytes in every other position); valid UTF-8; else the source's configured 8-bit ``encoding``
  (cp1252 for the three agencies) when it decodes the sample strictly; else the file is refused
  (``unknown_encoding``) with charset-normalizer's guess in the message: a guessed single-byte
  encoding decodes almost any bytes, so reading with it would put mojibake into leads unseen.
  ``csv.detect_encoding: false`` pins the configured encoding for files without a byte-order
  mark (a BOM, or UTF-16's NUL pattern, still decides: the bytes cannot be read otherwise).
- **Compression and binary**: gzip, zip, bzip2, xz and 7z by magic bytes (``compressed``); an
  Excel workbook, a PDF or bytes with NULs or control characters (``not_csv``).
- **Delimiter**: the configured one; when the header does not then hold the required columns,
  each of ``csv.sniff_delimiters`` is tried and the one that does is used (with a warning).
- **Header**: names are matched to the configured columns and their ``aliases`` ignoring case,
  spaces and punctuation, in any order. A configured column missing from the header reads as
  NULL (a warning); a missing identity or ``required_columns`` column rejects the file
  (``missing_required_column``). Columns the config does not know are kept as extras.

Line ends (LF, CRLF, CR) need no detection: Spark's reader accepts all three. UTF-16/32 files
are read with Spark's multi-line reader, whose decoder sees whole characters.

The functions here are pure (bytes in, decisions out) except :func:`read_sample`, which reads a
file's sample through Hadoop's FileSystem (any URI Spark can read).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from leadpipe.config import SourceConfig, header_key, java_charset

log = logging.getLogger(__name__)

HEAD_BYTES = 256 * 1024
WINDOWS = 16  # more windows of the rest of a large file, the last at its end
WINDOW_BYTES = 16 * 1024

#: Reason codes of a rejected file (README "Bad input" says what an operator does about each).
EMPTY_FILE = "empty_file"
HEADER_ONLY = "header_only"
NOT_CSV = "not_csv"
COMPRESSED = "compressed"
UNKNOWN_ENCODING = "unknown_encoding"
UNKNOWN_DELIMITER = "unknown_delimiter"
MISSING_REQUIRED_COLUMN = "missing_required_column"
UNREADABLE = "unreadable"

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_MAGIC = (
    (b"\x1f\x8b", COMPRESSED, "gzip-compressed"),
    (b"PK\x03\x04", COMPRESSED, "a zip archive"),
    (b"BZh", COMPRESSED, "bzip2-compressed"),
    (b"\xfd7zXZ\x00", COMPRESSED, "xz-compressed"),
    (b"7z\xbc\xaf\x27\x1c", COMPRESSED, "a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", NOT_CSV, "an old Excel workbook (.xls, OLE2)"),
    (b"%PDF", NOT_CSV, "a PDF document"),
)


@dataclass(frozen=True)
class Rejection:
    """Why a file is not read: a reason code and a message naming the file."""

    reason: str
    message: str
    records: int | None = None  # data records in the file, where countable
    encoding: str | None = None
    delimiter: str | None = None


@dataclass
class FileFormat:
    """How Spark reads one file: its encoding, delimiter, and each header position's column."""

    encoding: str  # Python codec name (utf-8, cp1252, utf-16-le, ...)
    delimiter: str
    columns: list[str]  # per header position: the configured column, or the extra's own name
    multi_line: bool
    renamed: dict[str, str] = field(default_factory=dict)  # header name -> configured column
    missing: list[str] = field(default_factory=list)  # configured columns the file lacks (NULL)
    extra: list[str] = field(default_factory=list)  # header columns the config does not know
    warnings: list[str] = field(default_factory=list)

    @property
    def java_encoding(self) -> str:
        return java_charset(self.encoding) or self.encoding


def _is_wide(encoding: str) -> bool:
    return codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))


# -- encoding -----------------------------------------------------------------------------------


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 text with no BOM: mostly-ASCII text has a NUL in every other byte."""
    window = sample[:4096]
    if len(window) < 4:
        return None
    even = window[0::2].count(0) / len(window[0::2])
    odd = window[1::2].count(0) / len(window[1::2])
    if odd > 0.3 and even < 0.05:
        return "utf-16-le"
    if even > 0.3 and odd < 0.05:
        return "utf-16-be"
    return None


def _decodes(data: bytes, encoding: str, final: bool) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)(errors="strict").decode(data, final=final)
    except UnicodeDecodeError:
        return False
    return True


def _windows_decode(windows: Sequence[bytes], encoding: str) -> bool:
    """Every window (cut from anywhere in the file) decodes strictly: a UTF-8 window may begin
    and end inside a character, so its leading continuation bytes are skipped and an unfinished
    last character is allowed."""
    for w in windows:
        if codecs.lookup(encoding).name == "utf-8":
            i = 0
            while i < min(3, len(w)) and 0x80 <= w[i] < 0xC0:
                i += 1
            if not _decodes(w[i:], "utf-8", False):
                return False
        elif not _decodes(w, encoding, True):
            return False
    return True


def _binary(sample: bytes) -> bool:
    """More than 1 % NUL or control bytes: binary, not a damaged export (a stray NUL is read;
    read.py removes NULs, which PostgreSQL cannot store)."""
    window = sample[:65536]
    controls = sum(1 for b in window if b < 0x20 and b not in (0x09, 0x0A, 0x0D, 0x0C, 0x1A))
    return controls > max(2, len(window) // 100)


def detect_encoding(
    head: bytes, windows: Sequence[bytes], complete: bool, cfg: SourceConfig
) -> tuple[str, int] | Rejection:
    """(Python codec, bytes of BOM to skip) of a file from its samples, or why it has none.
    ``windows``: the rest of the sample (windows from the middle and the end of a large file)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            if encoding == "utf-8" and not (
                _decodes(head[len(bom) :], "utf-8", complete) and _windows_decode(windows, "utf-8")
            ):
                return Rejection(
                    UNKNOWN_ENCODING,
                    "a UTF-8 byte-order mark, but the bytes after it are not UTF-8; re-export as UTF-8",
                )
            return encoding, len(bom)
    wide = _utf16_without_bom(head)
    if wide:
        return wide, 0
    if _binary(head) or any(_binary(w) for w in windows):
        return Rejection(NOT_CSV, "binary content (NUL or control bytes), not a text export")
    if not cfg.csv.detect_encoding:
        return cfg.csv.encoding, 0
    if _decodes(head, "utf-8", complete) and _windows_decode(windows, "utf-8"):
        ascii_only = head.isascii() and all(w.isascii() for w in windows)
        return (cfg.csv.encoding if ascii_only else "utf-8"), 0
    configured = codecs.lookup(cfg.csv.encoding).name
    if configured != "utf-8" and _decodes(head, configured, True) and _windows_decode(windows, configured):
        return configured, 0
    from charset_normalizer import from_bytes

    best = from_bytes(head[:65536]).best()
    hint = f"; charset-normalizer guesses {best.encoding}" if best is not None and best.encoding else ""
    return Rejection(
        UNKNOWN_ENCODING,
        f"bytes are neither UTF-8 nor {configured} (the source's encoding){hint}. Re-export as UTF-8, or, if the "
        f"guess is right for this agency, set csv.encoding in {cfg.path or 'the source config'}",
    )


# -- header -------------------------------------------------------------------------------------


def _reader(text: str, delimiter: str, cfg: SourceConfig):
    if cfg.csv.escape == cfg.csv.quote:
        return csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar=cfg.csv.quote, doublequote=True)
    return csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delimiter,
        quotechar=cfg.csv.quote,
        escapechar=cfg.csv.escape,
        doublequote=False,
    )


def _is_record(row: list[str]) -> bool:
    """Spark's line reader skips lines that are empty or white space only."""
    return len(row) > 1 or (len(row) == 1 and bool(row[0].strip()))


def first_record(text: str, delimiter: str, cfg: SourceConfig) -> list[str]:
    """The header: the first record that is not a blank line (Spark skips those too)."""
    try:
        return next((r for r in _reader(text, delimiter, cfg) if _is_record(r)), [])
    except csv.Error:
        return []


def count_records(text: str, delimiter: str, cfg: SourceConfig) -> int | None:
    """Data records after the header in a whole decoded file (blank lines not counted)."""
    try:
        rows = (r for r in _reader(text, delimiter, cfg) if _is_record(r))
        next(rows, None)
        return sum(1 for _ in rows)
    except csv.Error:
        return None


def match_header(names: list[str], cfg: SourceConfig) -> FileFormat:
    """Each header position -> a configured column or, for a column the config does not know,
    its own name. A configured column is matched by its exact name first, then by its name or an
    alias ignoring case, spaces and punctuation (``Operation`` before ``Operation #`` never takes
    the key from the wrong column). A blank name at position i is ``_c{i}`` (Spark's
    convention); a name met again gets ``_2``, ``_3``."""
    lookup = {}
    for column in cfg.columns:
        for name in [column, *cfg.aliases.get(column, [])]:
            lookup[header_key(name)] = column
    cleaned = [raw.replace("\ufeff", "").strip() or f"_c{i}" for i, raw in enumerate(names)]
    target: dict[int, str] = {}
    taken: set[str] = set()
    for i, name in enumerate(cleaned):  # pass 1: exact names
        if name in cfg.columns and name not in taken:
            target[i] = name
            taken.add(name)
    for i, name in enumerate(cleaned):  # pass 2: names and aliases, loosely
        column = lookup.get(header_key(name)) if header_key(name) else None
        if i not in target and column is not None and column not in taken:
            target[i] = column
            taken.add(column)
    columns: list[str] = []
    renamed: dict[str, str] = {}
    extra: list[str] = []
    for i, name in enumerate(cleaned):
        if i in target:
            if name != target[i]:
                renamed[name] = target[i]
            columns.append(target[i])
            continue
        unique, n = name, 1
        while unique in taken or unique in cfg.columns:
            n += 1
            unique = f"{name}_{n}"
        columns.append(unique)
        taken.add(unique)
        extra.append(unique)
    missing = [c for c in cfg.columns if c not in taken]
    return FileFormat("", "", columns, cfg.csv.multi_line, renamed, missing, extra)


def _required_missing(fmt: FileFormat, cfg: SourceConfig) -> list[str]:
    return [c for c in cfg.key_columns if c in fmt.missing]


def _delimiter_name(d: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(d, repr(d))


def sniff(head: bytes, windows: Sequence[bytes], size: int, cfg: SourceConfig) -> FileFormat | Rejection:
    """Decide how to read one file of source ``cfg`` from its samples (``head``: its first
    bytes; ``windows``: bytes from its middle and end when the head is not the whole file)."""
    complete = len(head) >= size
    if size == 0:
        return Rejection(EMPTY_FILE, "the file has 0 bytes; ask the agency for the export again", records=0)
    for magic, reason, what in _MAGIC:
        if head.startswith(magic):
            if magic == b"PK\x03\x04" and (b"[Content_Types].xml" in head or b"xl/" in head):
                return Rejection(
                    NOT_CSV, "an Excel workbook (.xlsx), not CSV; save it as CSV (UTF-8) and drop it again"
                )
            if reason == COMPRESSED:
                return Rejection(reason, f"{what} (magic bytes {magic[:4].hex(' ')}); decompress it and drop the .csv")
            return Rejection(reason, f"{what}, not CSV; save it as CSV (UTF-8) and drop it again")
    detected = detect_encoding(head, windows, complete, cfg)
    if isinstance(detected, Rejection):
        return detected
    encoding, bom = detected
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head[bom:], final=complete)
    text = text.removeprefix("\ufeff")
    if not text.strip():
        return Rejection(
            EMPTY_FILE, "the file holds only white space; ask the agency for the export again", 0, encoding
        )
    tried: list[tuple[str, FileFormat]] = []
    for delimiter in dict.fromkeys([cfg.csv.delimiter, *cfg.csv.sniff_delimiters]):
        fmt = match_header(first_record(text, delimiter, cfg), cfg)
        fmt.encoding, fmt.delimiter = encoding, delimiter
        tried.append((delimiter, fmt))
        if not _required_missing(fmt, cfg):
            break
    else:
        configured = tried[0][1]
        names = configured.columns
        records = count_records(text, cfg.csv.delimiter, cfg) if complete else None
        if len(names) <= 1:
            return Rejection(
                UNKNOWN_DELIMITER,
                f"the header is one column with the configured {_delimiter_name(cfg.csv.delimiter)} delimiter and "
                f"no other of {[_delimiter_name(d) for d in cfg.csv.sniff_delimiters if d != cfg.csv.delimiter]} gives "
                f"the required column(s) "
                f"{cfg.key_columns}; check the export's delimiter, or set csv.delimiter in {cfg.path}",
                records,
                encoding,
            )
        missing = _required_missing(configured, cfg)
        known = [c for c in names if c in cfg.columns]
        # a first line that matches no configured column may be data (names, phones): not repeated
        shown = f"header is {[n[:40] for n in names[:40]]}" if known else "its first line matches no configured column"
        return Rejection(
            MISSING_REQUIRED_COLUMN,
            f"header lacks required column(s) {missing} (nor any alias of them in {cfg.path}); {shown}. If the "
            f"agency renamed the column, add the new name to 'aliases' in {cfg.path}",
            records,
            encoding,
            cfg.csv.delimiter,
        )
    delimiter, fmt = tried[-1]
    if delimiter != cfg.csv.delimiter:
        fmt.warnings.append(
            f"delimiter sniffed: {_delimiter_name(delimiter)} (the config says {_delimiter_name(cfg.csv.delimiter)})"
        )
    if complete and count_records(text, delimiter, cfg) == 0:
        return Rejection(
            HEADER_ONLY, "a header and no record; ask the agency for the full export", 0, encoding, delimiter
        )
    fmt.multi_line = cfg.csv.multi_line or _is_wide(encoding)
    if codecs.lookup(encoding).name != codecs.lookup(cfg.csv.encoding).name and not (
        head[bom:].isascii() and all(w.isascii() for w in windows)
    ):
        fmt.warnings.append(f"encoding {codecs.lookup(encoding).name} (the config says {cfg.csv.encoding})")
    if fmt.renamed:
        fmt.warnings.append(f"column(s) renamed: {fmt.renamed}")
    if fmt.missing:
        fmt.warnings.append(f"column(s) {fmt.missing} missing: they read as NULL")
    if fmt.extra:
        fmt.warnings.append(f"column(s) {fmt.extra} not in the config: kept in extras")
    return fmt


# -- I/O edge -----------------------------------------------------------------------------------


def read_sample(spark, uri: str, size: int) -> tuple[bytes, list[bytes]]:
    """A file's first ``HEAD_BYTES`` and, when it is longer, ``WINDOWS`` windows of
    ``WINDOW_BYTES`` spread over the rest (the last one its end), through Hadoop's FileSystem."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).open(path)
    try:
        head = bytes(stream.readNBytes(min(size, HEAD_BYTES)))
        windows = []
        if size > HEAD_BYTES:
            span = size - HEAD_BYTES
            starts = sorted(
                {HEAD_BYTES + span * k // WINDOWS for k in range(1, WINDOWS)} | {max(HEAD_BYTES, size - WINDOW_BYTES)}
            )
            for start in starts:
                stream.seek(start)
                windows.append(bytes(stream.readNBytes(WINDOW_BYTES)))
        return head, windows
    finally:
        stream.close()


def inspect_file(spark, uri: str, size: int, cfg: SourceConfig) -> FileFormat | Rejection:
    """Sniff one file (see :func:`sniff`); a file that cannot be read at all is ``unreadable``.
    A rejected file that is too large to count from its sample but decodes is counted by Spark."""
    try:
        head, windows = read_sample(spark, uri, size)
    except Exception as exc:  # vanished, permissions, object store errors
        return Rejection(UNREADABLE, f"could not read the file: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    result = sniff(head, windows, size, cfg)
    if isinstance(result, Rejection) and result.records is None and result.delimiter and result.encoding:
        try:
            n = (
                spark.read.options(
                    header="true",
                    encoding=java_charset(result.encoding) or result.encoding,
                    sep=result.delimiter,
                    multiLine=str(cfg.csv.multi_line or _is_wide(result.encoding)).lower(),
                    quote=cfg.csv.quote,
                    escape=cfg.csv.escape,
                )
                .csv(uri)
                .count()
            )
            result = Rejection(result.reason, result.message, int(n), result.encoding, result.delimiter)
        except Exception as exc:
            log.warning("sniff: %s: records not counted: %s", uri, str(exc).splitlines()[0][:200])
    return result
