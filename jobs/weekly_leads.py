"""spark-submit entry point of the weekly leads job.

    spark-submit jobs/weekly_leads.py --input DIR_OR_URI --warehouse DIR_OR_URI [--db-url URL]

Everything happens in the ``leadpipe`` package (lib/leadpipe/, or the wheel/zip that ``make package``
builds); see ``--help``.
"""

import sys

from leadpipe.cli import weekly_leads_main

if __name__ == "__main__":
    sys.exit(weekly_leads_main())
