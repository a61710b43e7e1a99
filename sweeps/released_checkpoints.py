"""Evaluate the authors' released checkpoints (tumorsweep.released); `--help` lists the flags."""

import sys

from tumorsweep.released import main

if __name__ == "__main__":
    sys.exit(main())
