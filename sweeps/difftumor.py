"""Run the `difftumor` study (search_spaces/difftumor.yaml); `--help` lists the flags."""

import sys

from tumorsweep.cli.study import main

if __name__ == "__main__":
    sys.exit(main("difftumor"))
