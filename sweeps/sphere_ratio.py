"""Run the `sphere_ratio` study (search_spaces/sphere_ratio.yaml); `--help` lists the flags."""

import sys

from tumorsweep.cli.study import main

if __name__ == "__main__":
    sys.exit(main("sphere_ratio"))
