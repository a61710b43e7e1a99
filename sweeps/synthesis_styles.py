"""Run the `synthesis_styles` study (search_spaces/synthesis_styles.yaml); `--help`: flags."""

import sys

from tumorsweep.cli.study import main

if __name__ == "__main__":
    sys.exit(main("synthesis_styles"))
