"""Run the `backbones` study: see search_spaces/backbones.yaml and `python sweeps/backbones.py --help`."""

import sys

from core.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main("backbones"))
