"""Write the tiny random test model (the one the tests use) to a folder, e.g. to try the CLI:

python scripts/make_tiny_model.py /tmp/tiny
vts-drive describe --model /tmp/tiny --images frames/ --json out.jsonl
"""

import argparse
from pathlib import Path

from vts_drive.testing.tiny import build_tiny_model

if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny_model(args.out, seed=args.seed))
