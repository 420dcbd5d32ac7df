"""Config is data, validated at start-up: errors name the file and the key."""

import shutil
from pathlib import Path

import pytest
import yaml

from leadpipe.config import ConfigError, load_settings, load_source, load_sources

ROOT = Path(__file__).resolve().parent.parent


def test_the_three_sources_load(sources):
    assert sorted(sources) == ["nv_dpbh", "ok_dhs", "tx_hhs"]
    assert sources["ok_dhs"].csv.multi_line is True
    assert sources["nv_dpbh"].csv.encoding == "cp1252"
    assert {sid: cfg.identity.columns for sid, cfg in sources.items()} == {
        "nv_dpbh": ["Credential Number"],
        "ok_dhs": ["Type License"],
        "tx_hhs": ["Operation #"],
    }
    assert sources["ok_dhs"].identity.after_last == " - "


def test_settings_load():
    s = load_settings(ROOT / "conf")
    assert s.postgres.leads_table == "leads"
    assert (s.hold.max_removed_share, s.hold.min_rows_ratio) == (0.2, 0.5)


@pytest.mark.parametrize("bad", ['leads"; DROP TABLE leads; --', "Leads", "1leads", "a" * 41, "le ads"])
def test_sql_identifiers_in_settings_are_checked_at_load(tmp_path, bad):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    data = yaml.safe_load((conf / "settings.yaml").read_text())
    data["postgres"]["leads_table"] = bad
    (conf / "settings.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"settings\.yaml: postgres\.leads_table: String should match pattern"):
        load_settings(conf)


def test_rules_version_follows_the_rules(tmp_path, sources):
    tx = sources["tx_hhs"]
    assert len(tx.rules_version()) == 12
    assert load_source(_write_variant(tmp_path, lambda d: None)).rules_version() == tx.rules_version()
    lower = load_source(_write_variant(tmp_path, lambda d: d["fields"][0].update(params={"case": "lower"})))
    assert lower.rules_version() != tx.rules_version()


@pytest.mark.parametrize(
    ("name", "expected_date"),
    [
        ("07-07-2023 Texas DHHS.csv", "2023-07-07"),
        ("07-07-2023 Nevada Dept of Public _ Behavioral Health.csv", "2023-07-07"),
        ("12-29-2023 Oklahoma Human Services.csv", "2023-12-29"),
    ],
)
def test_file_names_match_one_source_and_give_the_snapshot_date(sources, name, expected_date):
    from leadpipe.discover import match_file

    _sid, snapshot = match_file(name, sources)
    assert snapshot.isoformat() == expected_date


def test_unmatched_and_bad_dates(sources):
    from leadpipe.discover import DiscoveryError, match_file

    assert match_file("notes.txt", sources) is None
    assert match_file("Texas DHHS.csv", sources) is None
    with pytest.raises(DiscoveryError, match=r"13-45-2023 Texas DHHS\.csv.*date_format"):
        match_file("13-45-2023 Texas DHHS.csv", sources)


def _write_variant(tmp_path: Path, mutate) -> Path:
    src = ROOT / "conf" / "sources" / "tx_hhs.yaml"
    data = yaml.safe_load(src.read_text())
    mutate(data)
    path = tmp_path / "tx_hhs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["fields"][0].update(rule="phon"), r"fields\[0\]: unknown rule 'phon'"),
        (
            lambda d: d["fields"][0].update(to="telephone"),
            r"fields\[0\].*not canonical business columns: \['telephone'\]",
        ),
        (
            lambda d: d["fields"][0].update({"from": "Operation Number"}),
            r"fields\[0\]\.from names columns not in 'columns'",
        ),
        (lambda d: d.update(identity={"columns": ["Operation Number"]}), r"identity\.columns not in 'columns'"),
        (lambda d: d.update(identity={"columns": []}), r"identity\.columns: List should have at least 1 item"),
        (lambda d: d.update(hold={"max_removed_share": 1.5}), r"hold\.max_removed_share: .*less than or equal to 1"),
        (lambda d: d.update(file_pattern="(Texas"), r"file_pattern: .*not a valid regular expression"),
        (lambda d: d.update(file_pattern="Texas.csv"), r"file_pattern: .*named group \(\?P<date>"),
        (lambda d: d.pop("licensing_authority"), r"licensing_authority: Field required"),
        (
            lambda d: d["fields"][8].update(params={"region": 1, "bogus": True}),
            r"fields\[8\]: .*params for rule 'phone'",
        ),
        (lambda d: d.update(id="texas"), r"id: 'texas' must equal the file name 'tx_hhs'"),
        (
            lambda d: d.update(aliases={"Phone": ["CAPACITY"]}),
            r"aliases: 'Capacity' names both 'Phone' and 'Capacity'",
        ),
        (lambda d: d.update(aliases={"Phones": ["Tel"]}), r"aliases names columns not in 'columns': \['Phones'\]"),
        (lambda d: d["csv"].update(multi_line=True), r"csv: .*name the columns whose cells may span lines"),
        (lambda d: d["csv"].update(multi_line_columns=["Zip"]), r"csv: .*multi_line must be true"),
        (lambda d: d["csv"].update(encoding="klingon"), r"csv\.encoding: .*unknown encoding 'klingon'"),
        (lambda d: d["csv"].update(sniff_delimiters=[",", "ab"]), r"csv\.sniff_delimiters: .*exactly one character"),
        (
            lambda d: d["fields"][10]["params"]["values"].update(Clinic=["x"]),
            r"facility_type must come from a vocab rule",
        ),
    ],
)
def test_config_errors_name_file_and_key(tmp_path, mutate, message):
    path = _write_variant(tmp_path, mutate)
    with pytest.raises(ConfigError, match=message) as info:
        load_source(path)
    assert str(path) in str(info.value)


def test_a_new_state_is_a_new_yaml_file(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    ca = yaml.safe_load((conf / "sources" / "tx_hhs.yaml").read_text())
    ca.update(id="ca_cdss", state="CA", licensing_authority="California Department of Social Services")
    ca["file_pattern"] = r"(?P<date>\d{4}-\d{2}-\d{2}) California CDSS\.csv"
    ca["date_format"] = "%Y-%m-%d"
    (conf / "sources" / "ca_cdss.yaml").write_text(yaml.safe_dump(ca))
    sources = load_sources(conf)
    assert "ca_cdss" in sources
    assert sources["ca_cdss"].matches("2024-01-05 California CDSS.csv")


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "nv_dpbh.yaml"
    path.write_text("id: nv_dpbh\nfields: [unclosed\n")
    with pytest.raises(ConfigError, match=r"nv_dpbh\.yaml: not valid YAML"):
        load_source(path)


def test_launch_time_spark_settings_are_refused_where_they_would_be_ignored(tmp_path):
    """spark.driver.memory under `spark:` has no effect once spark-submit started the driver."""
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"spark": {"spark.driver.memory": "8g"}}))
    with pytest.raises(ConfigError, match=r"settings.yaml.*spark.*spark\.driver\.memory.*spark_submit"):
        load_settings(tmp_path)
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"spark_submit": {"spark.driver.memory": "8g"}}))
    assert load_settings(tmp_path).spark_submit == {"spark.driver.memory": "8g"}
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump({"spark_submit": {"spark.driver.memory": "8 gigs"}}))
    with pytest.raises(ConfigError, match=r"settings.yaml.*spark_submit.*spark\.driver\.memory.*JVM memory size"):
        load_settings(tmp_path)


def test_make_jars_writes_driver_memory_where_spark_submit_reads_it(tmp_path):
    from leadpipe.session import jit_options, spark_defaults

    text = spark_defaults(["/j/delta-spark_2.13-4.2.0.jar"], load_settings().spark_submit)
    assert "spark.driver.memory 4g" in text.splitlines()
    assert "spark.jars /j/delta-spark_2.13-4.2.0.jar" in text.splitlines()
    # a local driver runs the tasks: its JVM loads the JIT directives (session.jit_options)
    assert f"spark.driver.extraJavaOptions {jit_options()} -XX:+UseParallelGC" in text.splitlines()
    mine = spark_defaults([], {"spark.driver.extraJavaOptions": "-Dmine=1"})
    assert f"spark.driver.extraJavaOptions -Dmine=1 {jit_options()} -XX:+UseParallelGC" in mine.splitlines()
    # a collector the settings chose is kept: two would stop the JVM from starting
    g1 = spark_defaults([], {"spark.driver.extraJavaOptions": "-XX:+UseG1GC"})
    assert f"spark.driver.extraJavaOptions -XX:+UseG1GC {jit_options()}" in g1.splitlines()
    g1 = spark_defaults([], {"spark.driver.defaultJavaOptions": "-XX:+UseZGC"})
    assert f"spark.driver.extraJavaOptions {jit_options()}" in g1.splitlines()


def test_a_local_driver_gets_no_second_collector_and_no_directives_file_that_is_not_there(tmp_path, caplog):
    from leadpipe.session import JIT_DIRECTIVES, jit_options, local_launch_conf

    key = "spark.driver.extraJavaOptions"
    env = {"JDK_JAVA_OPTIONS": "-XX:+UseSerialGC -Xss4m"}
    assert local_launch_conf({}, env=env)[key] == jit_options()
    assert local_launch_conf({}, env={"JAVA_TOOL_OPTIONS": "-XX:+UseG1GC"})[key] == jit_options()
    assert local_launch_conf({}, env={})[key] == f"{jit_options()} -XX:+UseParallelGC"
    gone = tmp_path / "moved" / "jit-directives.json"
    with caplog.at_level("WARNING", logger="leadpipe.session"):
        assert local_launch_conf({}, directives=gone, env={})[key] == "-XX:+UseParallelGC"
    assert f"no JIT directives at {gone}" in caplog.text
    spaced = tmp_path / "a folder" / "jit-directives.json"
    spaced.parent.mkdir()
    spaced.write_bytes(JIT_DIRECTIVES.read_bytes())
    assert f'-XX:CompilerDirectivesFile="{spaced}" ' in local_launch_conf({}, directives=spaced, env={})[key]


def test_a_driver_with_less_memory_than_settings_say_is_warned_about_and_more_is_not(spark, caplog):
    from leadpipe.session import _bytes, _log_memory

    actual = spark.sparkContext.getConf().get("spark.driver.memory", "1g")
    assert _bytes("4g") == 4 * 2**30 and _bytes("512m") == 2**29 and _bytes("2048") == 2**31
    with caplog.at_level("INFO", logger="leadpipe.session"):
        _log_memory(spark, {"spark.driver.memory": "64m"})  # a --driver-memory above settings: on purpose
        assert not [r for r in caplog.records if r.levelname == "WARNING"]
        _log_memory(spark, {"spark.driver.memory": "512g"})
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"spark.driver.memory {actual}, less than" in warnings[0]


@pytest.mark.parametrize(
    ("value", "loaded"),
    [(0, "0"), ("30min", "30min"), ("24d", "24d"), (None, None), ("5 minutes", None), ("25d", None)],
)
def test_the_statement_timeout_in_settings_is_a_postgres_duration(tmp_path, value, loaded):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    data = yaml.safe_load((conf / "settings.yaml").read_text())
    data["postgres"]["statement_timeout"] = value
    (conf / "settings.yaml").write_text(yaml.safe_dump(data))
    if value in ("5 minutes", "25d"):
        with pytest.raises(ConfigError, match=r"settings\.yaml: postgres\.statement_timeout: .*a PostgreSQL duration"):
            load_settings(conf)
    else:
        assert load_settings(conf).postgres.statement_timeout == loaded
