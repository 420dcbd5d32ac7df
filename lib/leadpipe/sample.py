"""Sample data: realistic weekly snapshots in the three real agency layouts, quirks included.

    leads-sample --out .local/sample --weeks 2 --providers 300 --seed 7

writes, per week, a folder ``week-N`` with the three agencies' files named as the agencies name
them (``01-05-2024 Texas DHHS.csv``) and a ``manifest.json`` (outside the input folders) listing
per week and source which business keys are present, new, changed and removed, for tests and
demos. Between weeks a controllable share of providers is removed, changed and added.

Quirks reproduced from the real exports: Nevada in cp1252 with a right single quote, CRLF, a
blank-named column, the whole address in one field (suites with extra commas, multi-word cities),
several people in one contact cell, ``(PROVISIONAL)`` in the credential type; Oklahoma with the
two-line ``Primary Caregiver`` cell, ``LAST, FIRST DBA TRADE NAME`` companies, trailing flag
columns that do not line up with their headers, and (optionally) a file cut off inside an open
quote; Texas with Excel-doubled inner quotes, trailing spaces and Y/N age flags.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import random
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

FIRST = [
    "MARIA",
    "JAMES",
    "TANIA",
    "NICOLE",
    "BETHANY",
    "KYLA",
    "DEETRA",
    "THERESA",
    "SHERRITA",
    "JANEECE",
    "AIMEE",
    "CASANDRA",
    "MONICA",
    "ANGEL",
    "LINDA",
    "ROBERTA",
    "HEATHER",
    "STACY",
    "KARA",
    "DONNA",
    "KERRY",
    "SANDRA",
    "ESMERALDA",
    "EARLETTA",
    "LYNSEY",
    "ASHLEY",
    "TIA",
    "CARA",
    "JENNIFER",
    "SELENA",
    "CAROLYN",
    "GEORGIA",
    "KATRINA",
    "ANDREA",
    "AMANDA",
    "CHARINA",
    "ROSHONDA",
    "RANDI",
    "MIA",
    "SYMIRA",
    "ELIZABETH",
]
LAST = [
    "PINEDA",
    "POBLETE",
    "JOHNSON",
    "MYERS",
    "HANNAH",
    "STEWART",
    "HEHN",
    "NOEL",
    "SMITH",
    "COFFIN",
    "KALER",
    "CHADWICK",
    "CARTER",
    "TRAVIS",
    "MOORE",
    "CAMP",
    "TRIPP",
    "ADAMS",
    "WEAVER",
    "GRIMSLEY",
    "MARTINEZ",
    "HEADLEY",
    "TALMAGE",
    "CORNELSON",
    "WADDLE",
    "TAYLOR",
    "PRITCHARD",
    "COMMEY",
    "PULLEN",
    "MAYNARD",
    "ROBINSON",
    "MCDANIEL",
    "CLEEK",
    "URBAN",
    "OKUDO",
    "SELLENS",
    "CLIFTON",
    "HELLSTROM",
    "GARCIA-BERROSPE",
]
WORDS = [
    "SUNSHINE",
    "LITTLE",
    "BRIGHT",
    "STAR",
    "RAINBOW",
    "HAPPY",
    "KIDS",
    "TINY",
    "TOTS",
    "LEARNING",
    "GROWING",
    "GARDEN",
    "DISCOVERY",
    "EXPLORERS",
    "WONDER",
    "MEADOW",
    "HARBOR",
    "CREEK",
    "ACORN",
    "MAPLE",
    "CEDAR",
    "BUTTERFLY",
    "LADYBUG",
    "GIGGLES",
    "WIGGLES",
    "BEAR",
]
SUFFIX = ["ACADEMY", "LEARNING CENTER", "CHILD CARE", "DAYCARE", "PRESCHOOL", "EARLY LEARNING", "HOME DAYCARE"]
STREET_NAMES = [
    "WILLOW",
    "MOHAWK",
    "PAGE",
    "GYPSUM",
    "ATLANTIS",
    "DREAM",
    "LAUREN",
    "ASHTON",
    "EASTERN",
    "RAINBOW",
    "PECOS",
    "BABCOCK",
    "GLOGER",
    "ANTONE",
    "BAKERSFIELD",
    "HAYS",
    "JUNIPER",
    "CHEYENNE",
    "VERMILLION",
]
STREET_TYPES = ["ST", "AVE", "DRIVE", "RD", "BLVD", "PKWY", "LN", "CIR", "TERRACE", "PL."]
CITIES = {
    "NV": [
        ("LAS VEGAS", "89146", "CLARK"),
        ("NORTH LAS VEGAS", "89031", "CLARK"),
        ("HENDERSON", "89015", "CLARK"),
        ("CARSON CITY", "89701", "CARSON CITY"),
        ("SPRING CREEK", "89815", "ELKO"),
        ("BOULDER CITY", "89005", "CLARK"),
        ("RENO", "89502", "WASHOE"),
        ("MESQUITE", "89027", "CLARK"),
    ],
    "OK": [
        ("OKLAHOMA CITY", "73120", "OKLAHOMA"),
        ("TULSA", "74106", "TULSA"),
        ("BROKEN ARROW", "74012", "TULSA"),
        ("EDMOND", "73013", "OKLAHOMA"),
        ("YUKON", "73099", "CANADIAN"),
        ("OWASSO", "74055", "TULSA"),
    ],
    "TX": [
        ("HOUSTON", "77039", "HARRIS"),
        ("SAN ANTONIO", "78201", "BEXAR"),
        ("AUSTIN", "78745", "TRAVIS"),
        ("PFLUGERVILLE", "78660", "TRAVIS"),
        ("SAN MARCOS", "78666", "HAYS"),
        ("SOMERSET", "78069", "BEXAR"),
        ("KINGWOOD", "77339", "HARRIS"),
    ],
}
# Real, valid North American area codes per state (phonenumbers accepts them).
AREA_CODES = {
    "NV": ["702", "725", "775"],
    "OK": ["405", "539", "580", "918"],
    "TX": ["210", "281", "512", "713", "832"],
}
HOURS = [
    "7:30AM - 5:30PM",
    "6:00AM - 6:00PM",
    "7:00AM - 5:30PM",
    "6:30AM - 5:30PM",
    "7:00AM - 5:00PM",
    "12:00AM - 12:00AM",
]
OK_AGES = [
    "Infants (0-11 months)",
    "Toddlers (12-23 months; 1yr.)",
    "Preschool (24-48 months; 2-4 yrs.)",
    "School-age (5 years-older)",
]

NV_FILE = "{d} Nevada Dept of Public _ Behavioral Health.csv"
OK_FILE = "{d} Oklahoma Human Services.csv"
TX_FILE = "{d} Texas DHHS.csv"


@dataclass
class Provider:
    source: str
    key: str
    name: str
    first: str
    last: str
    second_first: str
    second_last: str
    street: str
    suite: str
    city: str
    zip: str
    county: str
    phone: str
    email: str
    capacity: int
    issued: date
    kind: str  # center | home
    provisional: bool
    ages: tuple[bool, bool, bool, bool]
    hours: str
    weekend: bool
    subsidy: bool
    year_round: bool
    extra: dict = field(default_factory=dict)


class Generator:
    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.counters = {"nv_dpbh": 1000, "ok_dhs": 820050000, "tx_hhs": 1200000}

    def _key(self, source: str) -> str:
        self.counters[source] += self.rng.randint(1, 37)
        n = self.counters[source]
        if source == "nv_dpbh":
            return f"{n}-{self.rng.choice(['22', '23'])}"
        if source == "ok_dhs":
            return f"K{n}"
        return str(n)

    def provider(self, source: str) -> Provider:
        r = self.rng
        state = {"nv_dpbh": "NV", "ok_dhs": "OK", "tx_hhs": "TX"}[source]
        city, zip_code, county = r.choice(CITIES[state])
        first, last = r.choice(FIRST), r.choice(LAST)
        kind = r.choice(["center", "center", "home"])
        name = f"{r.choice(WORDS)} {r.choice(WORDS)} {r.choice(SUFFIX)}"
        if r.random() < 0.08:
            name = f"{first}'S {r.choice(WORDS)} {r.choice(SUFFIX)}"
        ages = tuple(r.random() < p for p in (0.7, 0.85, 0.95, 0.6))
        if not any(ages):
            ages = (False, False, True, False)
        return Provider(
            source=source,
            key=self._key(source),
            name=name,
            first=first,
            last=last,
            second_first=r.choice(FIRST),
            second_last=r.choice(LAST),
            street=f"{r.randint(10, 19999)} {r.choice(['', 'N. ', 'S. ', 'E. ', 'W. '])}{r.choice(STREET_NAMES)} {r.choice(STREET_TYPES)}",
            suite=f"STE {r.randint(1, 300)}" if r.random() < 0.1 else "",
            city=city,
            zip=zip_code,
            county=county,
            phone=f"{r.choice(AREA_CODES[state])}-{r.randint(201, 989)}-{r.randint(1000, 9999)}",
            email=f"{first.lower()}.{last.lower()}{r.randint(1, 99)}@example.com" if r.random() < 0.8 else "",
            capacity=r.choice([7, 12, 12, 45, 60, 82, 120, 243]),
            issued=date(2005, 1, 1) + timedelta(days=r.randint(0, 6500)),
            kind=kind,
            provisional=r.random() < 0.1,
            ages=ages,  # type: ignore[arg-type]
            hours=r.choice(HOURS),
            weekend=r.random() < 0.05,
            subsidy=r.random() < 0.6,
            year_round=r.random() < 0.8,
        )

    def change(self, p: Provider) -> Provider:
        """A realistic weekly change: new phone, capacity, contact or address."""
        r = self.rng
        # Texas lists no contact person: a new contact would not show in its file
        what = r.choice(["phone", "capacity", "street"] + (["contact"] if p.source != "tx_hhs" else []))
        if what == "phone":
            state = {"nv_dpbh": "NV", "ok_dhs": "OK", "tx_hhs": "TX"}[p.source]
            return replace(p, phone=f"{r.choice(AREA_CODES[state])}-{r.randint(201, 989)}-{r.randint(1000, 9999)}")
        if what == "capacity":
            return replace(p, capacity=p.capacity + r.randint(1, 20))
        if what == "contact":
            return replace(p, first=r.choice([f for f in FIRST if f != p.first]))
        return replace(p, street=f"{r.randint(10, 19999)} {r.choice(STREET_NAMES)} {r.choice(STREET_TYPES)}")


# --------------------------------------------------------------------------- layouts


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def nevada_rows(providers: list[Provider]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Name", "Credential Type", "Credential Number", "Status", "Expiration Date", "Disciplinary Action",
        "Address", "", "State", "County", "Phone#", "First Issue Date", "Primary Contact Name", "Primary Contact Role",
    ]  # fmt: skip
    rows = []
    for p in providers:
        ctype = {"center": "CENTER", "home": "FAMILY CARE"}[p.kind] + (" (PROVISIONAL)" if p.provisional else "")
        street = p.street + (f"., {p.suite}" if p.suite else "")
        contact = f"{p.first} {p.last}"
        if p.extra.get("couple"):
            contact = f"{p.first} & {p.second_first} {p.last} & {p.second_last}"
        name = p.name.replace("'", "\u2019")  # cp1252 0x92, as in the real file
        exp = date(p.issued.year + 18, p.issued.month, 1) - timedelta(days=1)
        rows.append([
            name, ctype, p.key, "Active", f"{exp.month}/{exp.day}/{exp.year}", "N",
            f"{street} {p.city}, NV {p.zip}", "", "NV", p.county, p.phone,
            f"{p.issued.month}/{p.issued.day}/{p.issued.year}", contact, "Director" if p.kind == "center" else "Owner",
        ])  # fmt: skip
    return header, rows


def oklahoma_rows(providers: list[Provider]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Type License", "Company", "Accepts Subsidy", "Year Round", "Daytime Hours", "Star Level", "Mon", "Tues",
        "Wed", "Thurs", "Friday", "Saturday", "Sunday", "Primary Caregiver", "Phone", "Email", "Address1",
        "Address2", "City", "State", "Zip", "Subsidy Contract Number", "Total Cap", "Ages Accepted 1", "AA2",
        "AA3", "AA4", "License Monitoring Since", "School Year Only", "Evening Hours",
    ]  # fmt: skip
    rows = []
    for p in providers:
        i = int(p.key.lstrip("K"))  # layout variants follow the provider, not its row position
        home = p.kind == "home"
        ltype = "CHILD CARE FAMILY" if home else "CHILD CARE CENTER"
        company = f"{p.last}, {p.first}" + (f" DBA {p.name}, LLC" if i % 3 else "") if home else f"{p.name}, LLC"
        days = ["CLOSED"] * 5 + [p.hours] * 2 if p.weekend else [p.hours] * 5 + ["CLOSED"] * 2
        flags = [
            f for f, on in (("Accepts Subsidy", p.subsidy), ("Year Round", p.year_round), ("Daytime Hours", True)) if on
        ]
        ages = [label for label, on in zip(OK_AGES, p.ages, strict=True) if on]
        # the trailing columns hold an unordered set of labels, not what their headers say
        trailing = (flags[:1] + ages[-1:] + ["", ""])[:2] if i % 4 == 0 else ([*flags[-2:], "", ""])[:2]
        phone = "({}) {}-{}".format(*p.phone.split("-"))
        rows.append([
            f"{ltype} - {p.key}", company, "Accepts Subsidy" if p.subsidy else "", "Year Round" if p.year_round else "",
            "Daytime Hours", f"{1 + i % 5} Star Level Program", *days,
            f"{p.first.title()} {p.last.title()}\r\n{'Primary Caregiver' if home else 'Director'}",
            phone, p.email, p.street, p.suite, p.city, "OK", p.zip,
            f"Subsidy Contract Number: {40000 + i}" if p.subsidy else "Subsidy Contract Number: N/A",
            str(p.capacity), *(ages + [""] * 4)[:4], f"Monitoring since {p.issued.isoformat()}", *trailing,
        ])  # fmt: skip
    return header, rows


def texas_rows(providers: list[Provider]) -> tuple[list[str], list[list[str]]]:
    header = [
        "Operation #", "Agency Number", "Operation/Caregiver Name", "Address", "City", "State", "Zip", "County",
        "Phone", "Type", "Status", "Issue Date", "Capacity", "Email Address", "Facility ID", "Monitoring Frequency",
        "Infant", "Toddler", "Preschool", "School",
    ]  # fmt: skip
    rows = []
    for p in providers:
        name = p.name.title()
        if p.extra.get("quoted"):
            name = f'"{name.split()[0]}" {" ".join(name.split()[1:])}'
        ttype = "Licensed Center - Child Care Program" if p.kind == "center" else "Licensed Child-Care Home"
        rows.append([
            p.key, "", name, p.street + " ", p.city, "TX", p.zip, p.county, p.phone, ttype,
            "Initial" if p.provisional else "Full Permit", f"{p.issued.month}/{p.issued.day}/{p.issued.year}",
            str(p.capacity), p.email, str(700000 + int(p.key) % 9_000_000), "", *["Y" if a else "N" for a in p.ages],
        ])  # fmt: skip
    return header, rows


LAYOUTS = {
    "nv_dpbh": (NV_FILE, nevada_rows, "cp1252"),
    "ok_dhs": (OK_FILE, oklahoma_rows, "cp1252"),
    "tx_hhs": (TX_FILE, texas_rows, "cp1252"),
}


def write_snapshot(folder: Path, snapshot: date, providers: dict[str, list[Provider]], truncate_oklahoma: bool) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = snapshot.strftime("%m-%d-%Y")
    written = {}
    for source, (pattern, layout, encoding) in LAYOUTS.items():
        rows_in = sorted(providers[source], key=lambda p: p.name)
        header, rows = layout(rows_in)
        text = _csv_text(header, rows)
        keys = [p.key for p in rows_in]
        cut = None
        if source == "ok_dhs" and truncate_oklahoma and rows:
            # end the file inside the last record's open caregiver quote, as the real export does
            head = _csv_text(header, rows[:-1])
            fields = _csv_text(rows[-1][:13], []).rstrip("\r\n")
            text = head + fields + ',"' + rows[-1][13].split("\r\n")[0]
            cut = keys[-1]
        (folder / pattern.format(d=stamp)).write_bytes(text.encode(encoding))
        written[source] = {"rows": len(rows), "keys": [k for k in keys if k != cut], "cut_off": cut}
    return written


def generate(
    out: Path,
    weeks: int = 2,
    providers: int = 300,
    start: date = date(2024, 1, 5),
    new_share: float = 0.05,
    changed_share: float = 0.08,
    removed_share: float = 0.04,
    seed: int = 7,
    truncate_oklahoma: bool = True,
) -> dict:
    """Write ``weeks`` weekly snapshots under ``out/week-N``; return (and write) the manifest."""
    gen = Generator(seed)
    r = gen.rng
    per_source = max(3, providers // 3)
    current = {s: [gen.provider(s) for _ in range(per_source)] for s in LAYOUTS}
    for plist in current.values():
        for p in plist[::9]:
            p.extra["couple"] = True
        for p in plist[::11]:
            p.extra["quoted"] = True
    manifest = {"weeks": []}
    previous_keys: dict[str, set[str]] = {}
    previous_loaded: dict[str, dict[str, Provider]] = {}
    for week in range(1, weeks + 1):
        snapshot = start + timedelta(days=7 * (week - 1))
        changed_keys: dict[str, list[str]] = {s: [] for s in LAYOUTS}
        if week > 1:
            for s, plist in current.items():
                keep = [p for p in plist if r.random() >= removed_share]
                n_change = round(len(keep) * changed_share)
                for idx in r.sample(range(len(keep)), n_change):
                    keep[idx] = gen.change(keep[idx])
                    changed_keys[s].append(keep[idx].key)
                keep += [gen.provider(s) for _ in range(max(1, round(len(plist) * new_share)))]
                current[s] = keep
        folder = out / f"week-{week}"
        written = write_snapshot(folder, snapshot, current, truncate_oklahoma)
        entry = {"week": week, "snapshot_date": snapshot.isoformat(), "input": str(folder), "sources": {}}
        for s, w in written.items():
            keys = set(w["keys"])
            before = previous_keys.get(s, set())
            loaded_before = previous_loaded.get(s, {})
            entry["sources"][s] = {
                "rows": w["rows"],
                "keys": sorted(keys),
                "new": sorted(keys - before),
                "removed": sorted(before - keys),
                "changed": sorted(k for k in changed_keys[s] if k in keys and k in before and k in loaded_before),
                "cut_off": w["cut_off"],
            }
            previous_keys[s] = keys
            previous_loaded[s] = {p.key: p for p in current[s] if p.key in keys}
        manifest["weeks"].append(entry)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


SCALE_SHARES = {"nv_dpbh": 0.1, "ok_dhs": 0.2, "tx_hhs": 0.7}  # 1M rows: 100k NV, 200k OK, 700k TX
CHUNK = 20_000


def _chunk_providers(source: str, chunk: int, n: int, seed: int) -> list[Provider]:
    """Providers ``chunk*CHUNK ..`` of a source: the same every time for the same arguments, and
    their keys are unique across chunks (each chunk draws from its own key range)."""
    gen = Generator(seed * 1_000_003 + chunk * 7 + list(LAYOUTS).index(source))
    gen.counters[source] += chunk * CHUNK * 40  # steps are 1..37: ranges never overlap
    out = [gen.provider(source) for _ in range(n)]
    for i, p in enumerate(out):
        if i % 9 == 0:
            p.extra["couple"] = True
        if i % 11 == 0:
            p.extra["quoted"] = True
    return out


def generate_scaled(out: Path, rows: int, churn: float = 0.02, seed: int = 11, start: date = date(2024, 1, 5)) -> dict:
    """Two weekly snapshots of about ``rows`` rows in all (split 10/20/70 % across Nevada,
    Oklahoma and Texas), written chunk by chunk so memory stays flat at any size: ``week-1``,
    and ``week-2`` where about ``churn`` of each source's providers are removed, as many
    changed and as many new. Returns (and writes to ``out/scaled.json``) the counts per source."""
    counts: dict = {"rows": rows, "churn": churn, "weeks": {}}
    for week in (1, 2):
        folder = out / f"week-{week}"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = (start + timedelta(days=7 * (week - 1))).strftime("%m-%d-%Y")
        counts["weeks"][week] = {}
        for source, (pattern, layout, encoding) in LAYOUTS.items():
            total = max(3, round(rows * SCALE_SHARES[source]))
            rng = random.Random(f"{seed}-{source}-{week}")
            c = {"rows": 0, "new": 0, "changed": 0, "removed": 0}
            with open(folder / pattern.format(d=stamp), "w", encoding=encoding, newline="") as fh:
                chunks = [(i, min(CHUNK, total - i * CHUNK)) for i in range((total + CHUNK - 1) // CHUNK)]
                if week == 2:  # the new providers: fresh key ranges after the existing ones
                    new = max(1, round(total * churn))
                    base = len(chunks)
                    chunks += [(base + i, min(CHUNK, new - i * CHUNK)) for i in range((new + CHUNK - 1) // CHUNK)]
                for k, (chunk, n) in enumerate(chunks):
                    plist = _chunk_providers(source, chunk, n, seed)
                    is_new = week == 2 and chunk * CHUNK >= total
                    if week == 2 and not is_new:
                        kept = []
                        for p in plist:
                            draw = rng.random()
                            if draw < churn:
                                c["removed"] += 1
                                continue
                            if draw < 2 * churn:
                                p = Generator.change(_Changer(rng), p)
                                c["changed"] += 1
                            kept.append(p)
                        plist = kept
                    c["new"] += len(plist) if is_new else 0
                    c["rows"] += len(plist)
                    header, body = layout(plist)
                    text = _csv_text(header if k == 0 else [], body)
                    fh.write(text if k == 0 else text.split("\r\n", 1)[1])
            counts["weeks"][week][source] = c
    (out / "scaled.json").write_text(json.dumps(counts, indent=2))
    return counts


def generate_weeks(
    out: Path, rows: int, weeks: int, churn: float = 0.02, seed: int = 11, start: date = date(2024, 1, 5)
) -> dict:
    """``weeks`` weekly snapshots of about ``rows`` rows each (10/20/70 % Nevada, Oklahoma, Texas),
    all in the one folder ``out`` (a backfill's input), for ``make bench``'s backfill.

    Every week after the first, about ``churn`` of each source's providers are removed for good,
    as many changed (phone, capacity, contact or street) and as many new ones added; a provider
    added in week k lives on from there like the others. Each provider's life (the week it goes,
    the weeks it changes) is drawn once from its own seed, so the files are the same on every
    machine and memory stays flat: providers are made and written chunk by chunk, every week's
    file of a source open at once. Every week lists at least that week's new providers, so no file
    is ever empty. Returns (and writes to ``out/weeks.json``) per week and source the rows, new,
    changed and removed; ``changed`` counts the changes drawn, a few of which a layout does not
    show (Nevada's file has no capacity)."""
    out.mkdir(parents=True, exist_ok=True)
    dates = [start + timedelta(days=7 * w) for w in range(weeks)]
    counts: dict = {
        "rows": rows,
        "weeks": weeks,
        "churn": churn,
        "dates": [d.isoformat() for d in dates],
        "sources": {},
    }
    for source, (pattern, layout, encoding) in LAYOUTS.items():
        total = max(3, round(rows * SCALE_SHARES[source]))
        per_week = [{"rows": 0, "new": 0, "changed": 0, "removed": 0} for _ in range(weeks)]
        with contextlib.ExitStack() as files:
            handles = [
                files.enter_context(
                    open(out / pattern.format(d=d.strftime("%m-%d-%Y")), "w", encoding=encoding, newline="")
                )
                for d in dates
            ]
            _write_weeks(source, layout, total, weeks, churn, seed, handles, per_week)
        counts["sources"][source] = per_week
    (out / "weeks.json").write_text(json.dumps(counts, indent=2))
    return counts


def _write_weeks(
    source: str, layout, total: int, weeks: int, churn: float, seed: int, handles: list, per_week: list[dict]
) -> None:
    """generate_weeks for one source: its cohorts chunk by chunk, each chunk's rows in every week
    it is listed. Cohorts: week 1's providers, then each week's new ones, in chunk key ranges after
    them (a chunk index is never reused, so keys never collide)."""
    new_per_week = max(1, round(total * churn))
    per_cohort = (new_per_week + CHUNK - 1) // CHUNK
    base = (total + CHUNK - 1) // CHUNK
    cohorts = [(0, total, range(base))]
    cohorts += [(w, new_per_week, range(base + (w - 1) * per_cohort, base + w * per_cohort)) for w in range(1, weeks)]
    headed = [False] * weeks
    for born, size, chunk_ids in cohorts:
        for k, chunk in enumerate(chunk_ids):
            n = min(CHUNK, size - k * CHUNK)
            current = _chunk_providers(source, chunk, n, seed)
            lives = [random.Random(f"{seed}-{source}-{chunk}-{i}") for i in range(n)]
            alive = [True] * n
            for w in range(born, weeks):
                for i in range(n) if w > born else ():  # this week: removed for good, changed, or as before
                    if not alive[i]:
                        continue
                    draw = lives[i].random()
                    if draw < churn:
                        alive[i] = False
                        per_week[w]["removed"] += 1
                    elif draw < 2 * churn:
                        current[i] = Generator.change(_Changer(lives[i]), current[i])
                        per_week[w]["changed"] += 1
                listed = [p for i, p in enumerate(current) if alive[i]]
                if not listed:
                    continue
                per_week[w]["rows"] += len(listed)
                if born and w == born:
                    per_week[w]["new"] += len(listed)
                header, body = layout(listed)
                text = _csv_text(header if not headed[w] else [], body)
                handles[w].write(text if not headed[w] else text.split("\r\n", 1)[1])
                headed[w] = True


class _Changer:
    """Lets ``Generator.change`` draw from a given random stream."""

    def __init__(self, rng: random.Random):
        self.rng = rng


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leads-sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder to write week-N/ folders and manifest.json into")
    p.add_argument("--weeks", type=int, default=2)
    p.add_argument("--providers", type=int, default=300, help="providers in week 1, across the three sources")
    p.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 5), help="first snapshot date")
    p.add_argument("--new-share", type=float, default=0.05)
    p.add_argument("--changed-share", type=float, default=0.08)
    p.add_argument("--removed-share", type=float, default=0.04)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-truncate", action="store_true", help="do not cut the Oklahoma file off inside a quote")
    a = p.parse_args(argv)
    m = generate(
        a.out, a.weeks, a.providers, a.start, a.new_share, a.changed_share, a.removed_share, a.seed, not a.no_truncate
    )
    for w in m["weeks"]:
        counts = {
            s: (len(v["keys"]), len(v["new"]), len(v["changed"]), len(v["removed"])) for s, v in w["sources"].items()
        }
        print(f"week {w['week']} ({w['snapshot_date']}) -> {w['input']}: (keys, new, changed, removed) {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
