"""Secrets come from the environment, never from a flag; PII stays out of logs and samples."""

import pytest

from leadpipe.postgres import DbTarget
from leadpipe.report import mask, mask_sample


def test_password_comes_from_pgpassword_never_from_the_url(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    db = DbTarget.from_url("postgresql://leads@db.internal:6543/sales")
    assert (db.user, db.host, db.port, db.dbname, db.password) == ("leads", "db.internal", 6543, "sales", "s3cret")
    assert db.jdbc_url == "jdbc:postgresql://db.internal:6543/sales"
    assert db.jdbc_properties()["driver"] == "org.postgresql.Driver"
    assert "s3cret" not in str(db)
    assert "s3cret" not in repr(db)
    with pytest.raises(ValueError, match="must not contain a password: set PGPASSWORD"):
        DbTarget.from_url("postgresql://leads:s3cret@db.internal/sales")
    with pytest.raises(ValueError, match="postgresql://user@host:port/db"):
        DbTarget.from_url("mysql://leads@db.internal/sales")


def test_phone_numbers_and_emails_are_masked():
    assert mask("362-231-1137") == "###-###-1137"
    assert mask("(209) 747-1797") == "(###) ###-1797"
    assert mask("sylvia@kstreetlearningcenter.com") == "***@kstreetlearningcenter.com"
    assert mask(None) is None


def test_person_names_and_street_addresses_are_masked_in_report_samples():
    assert mask_sample("first_name", "JANEECE") == "J******"
    assert mask_sample("address1", "150 N. WILLOW ST") == "1** N* W***** S*"
    assert mask_sample("company", "DOE, JANE DBA TINY TOTS") == "D**, J*** D** T*** T***"
    assert mask_sample("phone", "362-231-1137") == "###-###-1137"
    assert mask_sample("license_status", "Provisional") == "Provisional"  # not personal: kept


def test_the_embedded_database_is_for_local_runs_only():
    from leadpipe.cli import NoDatabaseError, check_embedded_allowed

    check_embedded_allowed("local[2]")
    check_embedded_allowed("local")
    for master in ("yarn", "spark://127.0.0.1:7077", "k8s://https://k8s.internal"):
        with pytest.raises(NoDatabaseError, match=f"master is '{master}'.*--db-url"):
            check_embedded_allowed(master)
