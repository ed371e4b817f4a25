"""How fast the command line answers `--help`, beside `python -c "import torch"`, side by side.

    python benchmarks/bench_cli.py [--repeats 7]

Each round starts three fresh Python processes in turn: `python -m deeplab_kit --help`,
`python -m deeplab_kit train --help` and `python -c "import torch"`; medians are reported,
and the ratio is torch's import time over the command's (> 1: --help is faster than importing
torch, which the command line defers until a command runs).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import interleaved_medians, print_header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "python -m deeplab_kit --help": [sys.executable, "-m", "deeplab_kit", "--help"],
    "python -m deeplab_kit train --help": [sys.executable, "-m", "deeplab_kit", "train", "--help"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print_header("bench_cli: the command line's --help against importing torch")

    def run(argv):
        return lambda: subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)

    medians = interleaved_medians(
        {name: run(argv) for name, argv in COMMANDS.items()}, repeats=args.repeats
    )
    torch_time = medians['python -c "import torch"']
    print("| command | median seconds | import torch / this |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| `{name}` | {seconds:.3f} | {torch_time / seconds:.1f}x |")


if __name__ == "__main__":
    main()
