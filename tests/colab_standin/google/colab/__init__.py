"""A stand-in for Colab's google.colab (see tests/colab_standin/README.md)."""

import os
from pathlib import Path


def record(call: str) -> None:
    root = Path(os.environ.get("DEEPLAB_KIT_COLAB_ROOT", "."))
    with open(root / "colab-calls.txt", "a") as log:
        log.write(call + "\n")
