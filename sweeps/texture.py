"""Run the `texture` study: see search_spaces/texture.yaml and `python sweeps/texture.py --help`."""

import sys

from core.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main("texture"))
