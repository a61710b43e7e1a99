"""Run the `real_synthetic_mix` study (search_spaces/real_synthetic_mix.yaml); `--help` lists
the flags."""

import sys

from tumorsweep.cli.study import main

if __name__ == "__main__":
    sys.exit(main("real_synthetic_mix"))
