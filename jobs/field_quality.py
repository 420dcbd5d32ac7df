"""spark-submit entry point of the field-quality report (``make quality``).

spark-submit jobs/field_quality.py --input DIR_OR_URI
"""

import sys

from leadpipe.cli import quality_main

if __name__ == "__main__":
    sys.exit(quality_main())
