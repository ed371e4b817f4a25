"""Drive: mounting makes Drive's files appear under the mount point. Here Drive's files are the
folder the test filled, `$DEEPLAB_KIT_COLAB_ROOT/cloud`; mounting moves it to the mount point, so
before the mount there is no Drive on the VM, as in Colab."""

import os
from pathlib import Path

from google.colab import record


def mount(path: str) -> None:
    target = Path(path)
    cloud = Path(os.environ.get("DEEPLAB_KIT_COLAB_ROOT", ".")) / "cloud"
    if cloud.is_dir() and not target.exists():
        cloud.rename(target)
    (target / "MyDrive").mkdir(parents=True, exist_ok=True)
    record(f"drive.mount {target.name}")


def flush_and_unmount(timeout_ms: int = 24 * 60 * 60 * 1000) -> None:
    """Colab writes everything pending to Drive, then unmounts it: here Drive's folder goes back
    to the cloud, so the VM no longer sees it."""
    root = Path(os.environ.get("DEEPLAB_KIT_COLAB_ROOT", "."))
    mounted = root / "drive"
    if mounted.exists():
        mounted.rename(root / "cloud")
    record("drive.flush_and_unmount")
