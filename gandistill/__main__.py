"""`python -m gandistill` = the `gandistill` command (which lives in the pipeline layer,
gandistill_pipeline.cli: the library itself never imports kfp)."""

import sys

from gandistill_pipeline.cli import main

sys.exit(main())
