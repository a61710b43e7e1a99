"""Run the `gmm_location` study (search_spaces/gmm_location.yaml); `--help` lists the flags."""

import sys

from tumorsweep.cli.study import main

if __name__ == "__main__":
    sys.exit(main("gmm_location"))
