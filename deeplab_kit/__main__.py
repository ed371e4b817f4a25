"""`python -m deeplab_kit ...`: the command line (deeplab_kit.cli)."""

from deeplab_kit.cli import main

if __name__ == "__main__":  # not when a worker process imports it again
    raise SystemExit(main())
