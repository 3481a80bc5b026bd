"""Entry point for ``python -m voltrain`` (and ``torchrun -m voltrain``)."""

import sys

from voltrain.cli import main

sys.exit(main())
