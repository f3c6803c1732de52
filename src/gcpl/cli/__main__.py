"""`python -m gcpl.cli ...` (what torchrun and accelerate launch)."""

import sys

from . import main

sys.exit(main())
