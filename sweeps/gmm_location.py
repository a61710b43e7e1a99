"""Run the `gmm_location` study: see search_spaces/gmm_location.yaml and `python sweeps/gmm_location.py --help`."""

import sys

from core.sweep_cli import main

if __name__ == "__main__":
    sys.exit(main("gmm_location"))
