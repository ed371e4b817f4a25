"""Where the kit runs: a repository checkout, or Google Colab with Google Drive; and the
repository's one address, from which Colab installs the kit and its notebooks' badges link.

    setup("full", "MyDrive/VOCtrainval_11-May-2012.tar")   # a notebook's first cell, in Colab
    checkout()            # the checkout the notebook runs in (None in Colab)
    home()                # where data/ and runs/ go
    mount_drive()         # in Colab: the kit's folder on Google Drive
    check_repository_links(readme)   # badges and install cells that disagree with REPOSITORY

In Colab the VM's local disk is fast and wiped at the end of each session; Google Drive is slow
and stays. So the data goes to the local disk (copied or extracted from Drive once per
session, never into Drive) and the run folders go to Drive (MyDrive/deeplab-kit/runs), where
the next session resumes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

from deeplab_kit.data.voc import locate_voc

# The one place the repository's address is written (notebooks' install cells and README's
# Colab badges repeat it; `check_repository_links` and tests/test_notebook.py keep them equal).
REPOSITORY = "https://github.com/deeplab-kit/deeplab-kit"
BRANCH = "main"
NOTEBOOK_TOPICS = {  # the notebooks, in order, and what each covers (README's table)
    "01_data.ipynb": "VOC 2012 or the generated set, the 21 classes and void, class imbalance, "
    "the report's and the paper's preprocessing, the cache",
    "02_atrous_convolution.ipynb": "atrous convolution, output stride, receptive field, "
    "multi-grid, the ASPP module's code, the valid share, the rate sliders",
    "03_going_deeper.ipynb": "the paper's Tables 1 and 2 at CPU scale: output stride 8..256 and "
    "cascaded blocks 4..7, with seeds, tests and a map-size oracle",
    "04_aspp_ablation.ipynb": "ASPP's rates on a dilated and an undilated backbone: planned "
    "contrasts, interior and band scores, effective receptive fields",
    "05_training_sessions.ipynb": "training in sessions that resume, one loss curve, the lr step, "
    "the arithmetic, TensorBoard, ending a Colab session",
    "06_report.ipynb": "the report's Table 1 and why it cannot be one confusion matrix, per-class "
    "IoU, confusion, protocols, multi-scale inference, your own photo",
    "07_your_own_data.ipynb": "your own classes and colour masks: train, score, predict, "
    "export to ONNX",
}
NOTEBOOKS = tuple(NOTEBOOK_TOPICS)

COLAB_MODULE = "google.colab"
# Colab's working folder; DEEPLAB_KIT_COLAB_ROOT moves it (the tests' stand-in for Colab).
COLAB_ROOT = Path(os.environ.get("DEEPLAB_KIT_COLAB_ROOT", "/content"))
DRIVE_MOUNT = COLAB_ROOT / "drive"  # where Colab mounts Google Drive
LOCAL_DATA = COLAB_ROOT / "data"  # the VM's local disk: VOC and SBD, one copy per session
DRIVE_FOLDER = "deeplab-kit"  # run folders go to MyDrive/deeplab-kit/runs
REPOSITORY_VARIABLE = "DEEPLAB_KIT_REPOSITORY"  # a fork's address, for the install cell


def in_colab() -> bool:
    """Whether this runs in Google Colab (its module is imported in every Colab kernel)."""
    return COLAB_MODULE in sys.modules


def drive_folder() -> Path | None:
    """The kit's folder on Google Drive when Drive is mounted in Colab, else None."""
    my_drive = DRIVE_MOUNT / "MyDrive"
    return my_drive / DRIVE_FOLDER if in_colab() and my_drive.is_dir() else None


def mount_drive() -> Path | None:
    """Mount Google Drive in Colab (Colab asks for permission) and return the kit's folder on
    it; outside Colab, or if mounting fails, None (run folders then stay on the local disk)."""
    if in_colab() and drive_folder() is None:
        try:
            from google.colab import drive

            drive.mount(str(DRIVE_MOUNT))
        except Exception as error:  # a refused permission must not stop the notebook
            print(f"Google Drive not mounted ({error}); run folders stay on this machine.")
    return drive_folder()


def flush_drive() -> str:
    """At the end of a Colab session: write everything still pending to Google Drive and
    unmount it (`drive.flush_and_unmount`, Colab's documented remedy for files written just
    before a session ends that never reach Drive: googlecolab/colabtools#2869, #287). Returns
    what it did, in one line; outside Colab, or with Drive not mounted, it does nothing."""
    if drive_folder() is None:
        return "Google Drive is not mounted here: nothing to flush"
    from google.colab import drive

    drive.flush_and_unmount()
    return "Google Drive flushed and unmounted: every run file written so far is on Drive"


def _checkout_at_or_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "deeplab_kit").is_dir():
            return candidate
    return None


def checkout(*, required: bool = False) -> Path | None:
    """The repository checkout the notebook runs in (found from the working directory, where
    Jupyter starts a notebook's kernel, or from the kit's own files in an editable install);
    None in Colab, where the kit is pip-installed without its notebooks (with `required`, a
    FileNotFoundError that says to clone the repository)."""
    package = Path(__file__).resolve().parents[1]  # deeplab_kit/
    found = _checkout_at_or_above(Path.cwd().resolve()) or _checkout_at_or_above(package.parent)
    if found is None and required:
        raise FileNotFoundError(
            "stored results live in the repository's notebooks/results/: run this from a "
            "checkout of the repository (git clone), not from a pip-installed kit"
        )
    return found


def home(environ: Mapping[str, str] | None = None) -> Path:
    """The folder under which data/ and runs/ go: $DEEPLAB_KIT_HOME, else the repository
    checkout the notebook runs in (from the working directory), else the working directory
    (/content in Colab)."""
    environ = os.environ if environ is None else environ
    if environ.get("DEEPLAB_KIT_HOME"):
        return Path(environ["DEEPLAB_KIT_HOME"]).expanduser().resolve()
    here = Path.cwd().resolve()
    return _checkout_at_or_above(here) or here


def _owner_repo(address: str = REPOSITORY) -> str:
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?/?", address)
    if not match:
        raise ValueError(f"{address!r} is not a https://github.com/OWNER/REPO address")
    return match[1]


def raw_url(address: str = REPOSITORY, branch: str = BRANCH) -> str:
    return f"https://raw.githubusercontent.com/{_owner_repo(address)}/{branch}"


def colab_url(notebook: str, address: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The link that opens notebooks/<notebook> of the repository in Colab."""
    path = f"{_owner_repo(address)}/blob/{branch}/notebooks/{notebook}"
    return f"https://colab.research.google.com/github/{path}"


COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"


def badge_table() -> str:
    """README's notebook table: one row per notebook with its "Open in Colab" badge."""
    lines = ["| notebook | what it covers | |", "|---|---|---|"]
    for name in NOTEBOOKS:
        badge = f"[![Open In Colab]({COLAB_BADGE})]({colab_url(name)})"
        lines.append(f"| [{name}](notebooks/{name}) | {NOTEBOOK_TOPICS[name]} | {badge} |")
    return "\n".join(lines) + "\n"


# The install cell: `os.environ.get("DEEPLAB_KIT_REPOSITORY", "<the address>")`, then pip.
_INSTALL = re.compile(
    REPOSITORY_VARIABLE + r"\", \"(https://github\.com/[\w.-]+/[\w.-]+?)(?:\.git)?\""
)
_COLAB_LINK = re.compile(
    r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w.-]+)/(\S+?\.ipynb)"
)


def install_address(notebook: str | os.PathLike) -> str | None:
    """The address a notebook's first code cell pip-installs the kit from (None if none)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = next(("".join(c["source"]) for c in cells if c["cell_type"] == "code"), "")
    in_colab_only = f'"{COLAB_MODULE}" in sys.modules' in source
    match = _INSTALL.search(source + "\n") if in_colab_only else None
    return match[1] if match else None


def check_repository_links(
    readme: str | None = None, notebooks_dir: str | os.PathLike | None = None
) -> list[str]:
    """Everything that disagrees with `REPOSITORY`: notebooks whose first cell does not install
    the kit from it only in Colab, and README "Open in Colab" links (if `readme`, its text, is
    given) that point elsewhere or at a missing notebook. An empty list: all agree."""
    if notebooks_dir is None:
        notebooks_dir = (checkout() or Path.cwd()) / "notebooks"
    notebooks_dir = Path(notebooks_dir)
    problems = []
    for name in NOTEBOOKS:
        path = notebooks_dir / name
        if not path.is_file():
            problems.append(f"{path}: notebook missing")
            continue
        address = install_address(path)
        if address is None:
            problems.append(f"{path}: first code cell does not pip-install git+<address> in Colab")
        elif address.rstrip("/") != REPOSITORY:
            problems.append(f"{path}: installs from {address}, not {REPOSITORY}")
    if readme is not None:
        links = _COLAB_LINK.findall(readme)
        for owner_repo, branch, target in links:
            if owner_repo != _owner_repo() or branch != BRANCH:
                problems.append(
                    f"README: Colab link to {owner_repo}@{branch}, not {_owner_repo()}@{BRANCH}"
                )
            if not (notebooks_dir.parent / target).is_file():
                problems.append(f"README: Colab link to {target}, which does not exist")
        linked = {Path(target).name for _, _, target in links}
        if links:
            problems += [
                f"README: no Colab badge for {name}" for name in NOTEBOOKS if name not in linked
            ]
    return problems


def setup(profile: str, voc: str = "", sbd: str = "") -> dict:
    """What a notebook's first cell does in Colab after installing the kit: mount Google Drive,
    turn on Colab's custom widget manager (ipywidgets 8's widgets are blank without it), set
    the profile, and put VOC (and SBD) on the VM's local disk from where they are on Drive
    (`voc`, `sbd`: a path under the Drive mount such as "MyDrive/VOCtrainval_11-May-2012.tar",
    an archive or a folder holding VOCdevkit; "" for none: the full profile then downloads
    VOC to the local disk). Returns the environment it set. Outside Colab it does nothing."""
    if not in_colab():
        return {}
    from google.colab import output

    output.enable_custom_widget_manager()
    mount_drive()
    settings = {"DEEPLAB_KIT_PROFILE": profile.strip().lower(), "DEEPLAB_KIT_DATA": str(LOCAL_DATA)}
    LOCAL_DATA.mkdir(parents=True, exist_ok=True)
    for what, source in (("VOC", voc), ("SBD", sbd)):
        if source.strip():
            local_copy(DRIVE_MOUNT / source.strip().strip("/"), LOCAL_DATA, what)
    os.environ.update(settings)
    runs = drive_folder()
    where = runs / "runs" if runs else "on this VM (Drive not mounted)"
    print(f"profile {settings['DEEPLAB_KIT_PROFILE']}; data: {LOCAL_DATA}; run folders: {where}")
    return settings


def local_copy(source: Path, target: Path, what: str = "VOC") -> Path:
    """Put `source` (an archive on Drive, or a folder) under `target` on the local disk, once:
    a marker file remembers a finished copy, so running the cell again in the same session
    costs nothing. Drive is only read."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no {what} there on Google Drive (check the path)")
    marker = target / f".copied-{source.name}"
    if marker.is_file():
        return target
    print(f"copying {what} from {source} to this VM's disk (once per session) ...")
    if source.is_file():
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        with tarfile.open(source) as archive:  # "data": no paths outside `target`, no devices
            archive.extractall(target, **safe)
    elif what == "VOC" and locate_voc(source) is not None:  # a folder holding VOCdevkit
        voc = locate_voc(source) / "VOCdevkit" / "VOC2012"
        shutil.copytree(voc, target / "VOCdevkit" / "VOC2012", dirs_exist_ok=True)
    else:  # SBD's folder (SBD/ or benchmark_RELEASE/), kept under its own name
        shutil.copytree(source, target / source.name, dirs_exist_ok=True)
    marker.write_text(str(source) + "\n")
    return target
