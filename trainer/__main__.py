"""`python -m trainer ...` (and `torchrun -m trainer run ...`): the trainer CLI."""

import sys

from trainer.cli import main

sys.exit(main())
