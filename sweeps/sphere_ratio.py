"""Run the `sphere_ratio` study: see search_spaces/sphere_ratio.yaml and `python sweeps/sphere_ratio.py --help`."""

import sys

from core.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main("sphere_ratio"))
