"""Run the `difftumor` study (search_spaces/difftumor.yaml); `--help` lists the flags."""

import sys

from core.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main("difftumor"))
