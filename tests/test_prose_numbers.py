"""Numbers in prose cannot go stale: every number with a decimal point that README or a
notebook's markdown states as a score, a difference or a time (followed by %, "points" or "s")
is either quoted (`course.quoted_numbers`, and what `course.table1` derives from it) or listed
below with how it is computed: from the stored files in notebooks/results/, or by the kit's code
before any training (an experiment design's geometry); the test recomputes each and compares it
within the rounding shown. README's sections of quoted numbers and of
benchmark measurements (each with the command that measures it) are not stored results and are
left out."""

import json
import re
import tempfile
from functools import cache
from pathlib import Path

import pytest

from deeplab_kit.course import ablation, colab, experiments, going_deeper, results, table1
from deeplab_kit.course.quoted_numbers import (
    PAPER_TABLE1,
    PAPER_TABLE2,
    QUOTED_MIOU,
    REPORT_TABLE1,
)
from deeplab_kit.runtime.run_files import read_confusion

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.])([-+]?\d+\.\d+)(?=\s?(?:%|points?\b|s\b))")
LEFT_OUT = ("## Performance", "## Reference numbers")  # README sections that are not stored


# --- what the stored files say ------------------------------------------------------------------


@cache
def experiment(name):
    return results.stored_experiment(name)


def scores(name, setting, column="miou"):
    """A setting's stored scores over its seeds (the ablation's settings name their backbone)."""
    table, _ = experiment(name)
    if name == "ablation":
        backbone, setting = setting.split(" / ")
        table = table[table["backbone"] == backbone]
    return table.loc[table["setting"] == setting, column]


def mean(name, setting, column="miou"):
    return 100 * scores(name, setting, column).mean()


def contrast(name, a, b, key="mean difference", column="miou", pairs=None):
    """A paired test's number in points (or its p-value), over the stored planned pairs."""
    table, record = experiment(name)
    pairs = pairs or [tuple(pair) for pair in record["planned pairs"]]
    if name == "ablation":
        tests = ablation.tests(table, pairs, column=column)
    else:
        tests = going_deeper.tests(table, pairs)
    value = tests.loc[(a, b), key]
    return value if key.startswith("p") else 100 * value


def twice(name, setting):
    rows = {row["setting"]: row for row in experiment(name)[1][experiments.TWICE]}
    return rows[setting]["change (points)"]


def oracle(name, setting):
    rows = {row["setting"]: row for row in experiment(name)[1]["geometry"]}
    return rows[setting]["oracle mIoU (%)"]


def largest_gain(name):
    table, _ = experiment(name)
    return 100 * results.stored_gains(name, table)["gain"].max()


def seed_zero(name, setting):
    table, _ = experiment(name)
    return 100 * table.loc[(table["setting"] == setting) & (table["seed"] == 0), "miou"].item()


def spread(name, setting, how):
    return 100 * getattr(scores(name, setting), how)()


def twice_result(setting):
    rows = {row["setting"]: row for row in experiment("cascaded-blocks")[1][experiments.TWICE]}
    return 100 * rows[setting]["twice the epochs"]


def sweep_mean(lr):
    """The ablation sweep's tune mIoU at `lr`, averaged over its settings (%)."""
    rows = [r for r in experiment("ablation")[1]["lr sweep"] if r["lr"] == lr]
    return 100 * sum(r["tune miou"] for r in rows) / len(rows)


DILATED, UNDILATED = "dilated / paper", "undilated / paper"
RATE_1, SMALL_RATES = "undilated / rate 1", "undilated / small rates"
POOLING = "undilated / paper + pooling"


def exploratory(a, b):
    return contrast("ablation", a, b, pairs=[(a, b)])


def paper_step(blocks):
    return lambda: PAPER_TABLE2[blocks] - PAPER_TABLE2[blocks - 1]


def seconds(name):
    return results.read_stored_json(f"{name}/provenance.json")["seconds"]


def demo(key):
    scores = results.read_stored_json("demo/metrics.json")
    explained = table1.explain_micro_macro(read_confusion(scores))["value (%)"]
    return explained[key]


@cache
def design_geometry(name):
    root = Path(tempfile.mkdtemp(prefix=f"{name}-geometry-"))
    return going_deeper.design_geometry(going_deeper.DESIGNS[name], root)


def oracle_before_training(name, setting):
    return design_geometry(name).loc[setting, "oracle mIoU (%)"]


def deeper(stride):
    return lambda: oracle_before_training("going-deeper", f"block7 OS{stride}")


def cascaded():
    return oracle_before_training("cascaded-blocks", "block7 OS16")


def stride_mean(stride):
    return lambda: mean("going-deeper", f"block7 OS{stride}")


def stride_step(a, b, key="mean difference"):
    return lambda: contrast("going-deeper", f"block7 OS{a}", f"block7 OS{b}", key)


def fall_from_os8(stride):
    return lambda: mean("going-deeper", "block7 OS8") - mean("going-deeper", f"block7 OS{stride}")


def paper_fall_from_os8(stride):
    return lambda: PAPER_TABLE1[8] - PAPER_TABLE1[stride]


def share_of_best(side, curve):
    """Table 1 by the map's side: a curve's value at a map `side` cells wide as a share of the
    curve's best (%), as `plot_map_size` draws it ("measured" or "paper, quoted")."""

    def compute():
        table, record = experiment("going-deeper")
        shares = going_deeper.map_size_shares(table, record["geometry"], PAPER_TABLE1)
        return shares.loc[side, f"{curve} (% of best)"]

    return compute


# (file, the number as written, how the stored files or the kit's code give it)
STORED = [
    ("03_going_deeper.ipynb", "86.8", deeper(8)),
    ("03_going_deeper.ipynb", "71.2", deeper(16)),
    ("03_going_deeper.ipynb", "34.8", deeper(64)),
    ("03_going_deeper.ipynb", "20.0", deeper(128)),
    ("03_going_deeper.ipynb", "12.8", deeper(256)),
    ("03_going_deeper.ipynb", "52.4", deeper(32)),
    ("03_going_deeper.ipynb", "1.5", lambda: experiments.CONVERGED_WITHIN),
    ("03_going_deeper.ipynb", "79.1", stride_mean(8)),
    ("03_going_deeper.ipynb", "67.1", stride_mean(16)),
    ("03_going_deeper.ipynb", "46.9", stride_mean(32)),
    ("03_going_deeper.ipynb", "18.0", stride_mean(64)),
    ("03_going_deeper.ipynb", "12.9", stride_mean(128)),
    ("03_going_deeper.ipynb", "12.0", stride_step(8, 16)),
    ("03_going_deeper.ipynb", "20.2", stride_step(16, 32)),
    ("03_going_deeper.ipynb", "28.9", stride_step(32, 64)),
    ("03_going_deeper.ipynb", "5.1", stride_step(64, 128)),
    ("03_going_deeper.ipynb", "0.1", stride_step(128, 256)),
    ("03_going_deeper.ipynb", "0.5", stride_step(128, 256, "smallest resolvable")),
    ("03_going_deeper.ipynb", "1.3", paper_fall_from_os8(16)),
    ("03_going_deeper.ipynb", "15.2", paper_fall_from_os8(64)),
    ("03_going_deeper.ipynb", "32.2", fall_from_os8(32)),
    ("03_going_deeper.ipynb", "61.1", fall_from_os8(64)),
    ("03_going_deeper.ipynb", "84.9", share_of_best(9, "measured")),
    ("03_going_deeper.ipynb", "79.8", share_of_best(9, "paper, quoted")),
    ("03_going_deeper.ipynb", "59.3", share_of_best(5, "measured")),
    ("03_going_deeper.ipynb", "56.3", share_of_best(5, "paper, quoted")),
    ("03_going_deeper.ipynb", "22.8", share_of_best(3, "measured")),
    ("03_going_deeper.ipynb", "27.0", share_of_best(3, "paper, quoted")),
    ("03_going_deeper.ipynb", "3.8", lambda: twice("going-deeper", "block7 OS8")),
    ("03_going_deeper.ipynb", "8.2", lambda: twice("going-deeper", "block7 OS32")),
    ("03_going_deeper.ipynb", "8.9", lambda: largest_gain("going-deeper")),
    ("README.md", "79.1", stride_mean(8)),
    ("README.md", "67.1", stride_mean(16)),
    ("README.md", "46.9", stride_mean(32)),
    ("README.md", "18.0", stride_mean(64)),
    ("README.md", "61.1", fall_from_os8(64)),
    ("README.md", "15.2", paper_fall_from_os8(64)),
    ("README.md", "59.3", share_of_best(5, "measured")),
    ("README.md", "56.3", share_of_best(5, "paper, quoted")),
    ("README.md", "3.8", lambda: twice("going-deeper", "block7 OS8")),
    ("README.md", "8.2", lambda: twice("going-deeper", "block7 OS32")),
    ("README.md", "4337.1", lambda: seconds("going-deeper")),
    ("03_going_deeper.ipynb", "84.4", cascaded),
    ("README.md", "84.4", cascaded),
    ("README.md", "71.2", deeper(16)),
    ("03_going_deeper.ipynb", "58.3", lambda: mean("cascaded-blocks", "block4 OS16")),
    ("README.md", "58.3", lambda: mean("cascaded-blocks", "block4 OS16")),
    ("03_going_deeper.ipynb", "70.1", lambda: mean("cascaded-blocks", "block5 OS16")),
    ("README.md", "70.1", lambda: mean("cascaded-blocks", "block5 OS16")),
    ("03_going_deeper.ipynb", "70.8", lambda: mean("cascaded-blocks", "block6 OS16")),
    ("README.md", "70.8", lambda: mean("cascaded-blocks", "block6 OS16")),
    ("03_going_deeper.ipynb", "66.6", lambda: mean("cascaded-blocks", "block7 OS16")),
    ("README.md", "66.6", lambda: mean("cascaded-blocks", "block7 OS16")),
    (
        "03_going_deeper.ipynb",
        "11.9",
        lambda: contrast("cascaded-blocks", "block4 OS16", "block5 OS16"),
    ),
    ("README.md", "11.9", lambda: contrast("cascaded-blocks", "block4 OS16", "block5 OS16")),
    (
        "03_going_deeper.ipynb",
        "13.1",
        lambda: contrast("cascaded-blocks", "block4 OS16", "block5 OS16", "smallest resolvable"),
    ),
    (
        "README.md",
        "13.1",
        lambda: contrast("cascaded-blocks", "block4 OS16", "block5 OS16", "smallest resolvable"),
    ),
    ("03_going_deeper.ipynb", "7.3", paper_step(5)),
    ("03_going_deeper.ipynb", "2.2", paper_step(6)),
    ("03_going_deeper.ipynb", "0.4", paper_step(7)),
    ("03_going_deeper.ipynb", "51.8", lambda: spread("cascaded-blocks", "block4 OS16", "min")),
    ("03_going_deeper.ipynb", "68.1", lambda: spread("cascaded-blocks", "block4 OS16", "max")),
    (
        "03_going_deeper.ipynb",
        "0.7",
        lambda: contrast("cascaded-blocks", "block5 OS16", "block6 OS16"),
    ),
    (
        "03_going_deeper.ipynb",
        "4.7",
        lambda: contrast("cascaded-blocks", "block5 OS16", "block6 OS16", "smallest resolvable"),
    ),
    (
        "03_going_deeper.ipynb",
        "4.2",
        lambda: contrast("cascaded-blocks", "block6 OS16", "block7 OS16"),
    ),
    (
        "03_going_deeper.ipynb",
        "6.9",
        lambda: contrast("cascaded-blocks", "block6 OS16", "block7 OS16", "smallest resolvable"),
    ),
    (
        "03_going_deeper.ipynb",
        "8.3",
        lambda: contrast("cascaded-blocks", "block4 OS16", "block7 OS16"),
    ),
    (
        "03_going_deeper.ipynb",
        "15.0",
        lambda: contrast("cascaded-blocks", "block4 OS16", "block7 OS16", "smallest resolvable"),
    ),
    ("03_going_deeper.ipynb", "65.3", lambda: seed_zero("cascaded-blocks", "block7 OS16")),
    ("03_going_deeper.ipynb", "72.0", lambda: seed_zero("cascaded-blocks", "block5 OS16")),
    ("03_going_deeper.ipynb", "8.3", lambda: twice("cascaded-blocks", "block4 OS16")),
    ("03_going_deeper.ipynb", "10.1", lambda: twice("cascaded-blocks", "block7 OS16")),
    ("03_going_deeper.ipynb", "76.4", lambda: twice_result("block4 OS16")),
    ("03_going_deeper.ipynb", "75.3", lambda: twice_result("block7 OS16")),
    (
        "03_going_deeper.ipynb",
        "1.0",
        lambda: twice_result("block4 OS16") - twice_result("block7 OS16"),
    ),
    ("03_going_deeper.ipynb", "21.6", lambda: largest_gain("cascaded-blocks")),
    ("README.md", "8.3", lambda: twice("cascaded-blocks", "block4 OS16")),
    ("README.md", "10.1", lambda: twice("cascaded-blocks", "block7 OS16")),
    ("README.md", "7119.2", lambda: seconds("cascaded-blocks")),
    ("04_aspp_ablation.ipynb", "81.1", lambda: sweep_mean(0.048)),
    ("04_aspp_ablation.ipynb", "78.9", lambda: sweep_mean(0.024)),
    ("04_aspp_ablation.ipynb", "76.9", lambda: sweep_mean(0.096)),
    ("04_aspp_ablation.ipynb", "2.1", lambda: contrast("ablation", DILATED, UNDILATED)),
    ("README.md", "2.1", lambda: contrast("ablation", DILATED, UNDILATED)),
    ("README.md", "+2.1", lambda: contrast("ablation", DILATED, UNDILATED)),
    ("04_aspp_ablation.ipynb", "+2.1", lambda: contrast("ablation", DILATED, UNDILATED)),
    (
        "04_aspp_ablation.ipynb",
        "5.3",
        lambda: contrast("ablation", DILATED, UNDILATED, "smallest resolvable"),
    ),
    ("README.md", "5.3", lambda: contrast("ablation", DILATED, UNDILATED, "smallest resolvable")),
    ("04_aspp_ablation.ipynb", "+0.8", lambda: contrast("ablation", UNDILATED, RATE_1)),
    ("04_aspp_ablation.ipynb", "+1.3", lambda: contrast("ablation", SMALL_RATES, UNDILATED)),
    ("04_aspp_ablation.ipynb", "8.3", lambda: contrast("ablation", POOLING, UNDILATED)),
    ("README.md", "8.3", lambda: contrast("ablation", POOLING, UNDILATED)),
    ("04_aspp_ablation.ipynb", "9.6", lambda: contrast("ablation", POOLING, UNDILATED, "sd")),
    ("04_aspp_ablation.ipynb", "71.4", lambda: spread("ablation", UNDILATED, "min")),
    ("04_aspp_ablation.ipynb", "80.6", lambda: spread("ablation", UNDILATED, "max")),
    ("04_aspp_ablation.ipynb", "52.7", lambda: spread("ablation", POOLING, "min")),
    ("04_aspp_ablation.ipynb", "77.0", lambda: spread("ablation", POOLING, "max")),
    ("04_aspp_ablation.ipynb", "53.4", lambda: mean("ablation", UNDILATED, "interior miou")),
    ("04_aspp_ablation.ipynb", "72.8", lambda: mean("ablation", UNDILATED, "band miou")),
    ("04_aspp_ablation.ipynb", "67.0", lambda: mean("ablation", "undilated / control")),
    ("04_aspp_ablation.ipynb", "78.5", lambda: mean("ablation", "dilated / control")),
    ("README.md", "67.0", lambda: mean("ablation", "undilated / control")),
    ("README.md", "78.5", lambda: mean("ablation", "dilated / control")),
    (
        "04_aspp_ablation.ipynb",
        "11.5",
        lambda: exploratory("dilated / control", "undilated / control"),
    ),
    ("04_aspp_ablation.ipynb", "6.7", lambda: exploratory("dilated / rate 1", "dilated / report")),
    (
        "04_aspp_ablation.ipynb",
        "4.7",
        lambda: exploratory("undilated / rate 1", "undilated / report"),
    ),
    ("04_aspp_ablation.ipynb", "1.7", lambda: twice("ablation", UNDILATED)),
    ("04_aspp_ablation.ipynb", "3.0", lambda: twice("ablation", DILATED)),
    ("README.md", "1.7", lambda: twice("ablation", UNDILATED)),
    ("README.md", "3.0", lambda: twice("ablation", DILATED)),
    ("04_aspp_ablation.ipynb", "1.5", lambda: experiments.CONVERGED_WITHIN),
    ("04_aspp_ablation.ipynb", "2.4", lambda: largest_gain("ablation")),
    ("README.md", "14058.1", lambda: seconds("ablation")),
    ("README.md", "424.7", lambda: seconds("demo")),
    ("README.md", "237.7", lambda: seconds("notebook-times")),
    ("06_report.ipynb", "89.0", lambda: demo("pixel accuracy")),
    ("06_report.ipynb", "88.4", lambda: demo("precision (weighted)")),
    ("06_report.ipynb", "88.3", lambda: demo("F1 (weighted)")),
    ("06_report.ipynb", "73.5", lambda: demo("background share of pixels")),
    ("06_report.ipynb", "78.6", lambda: demo("precision (macro)")),
    ("06_report.ipynb", "64.7", lambda: demo("recall (macro)")),
    ("06_report.ipynb", "55.8", lambda: demo("mIoU")),
    ("06_report.ipynb", "54.2", lambda: demo("mean IoU over object classes")),
    ("06_report.ipynb", "33.2", lambda: demo("pixel accuracy") - demo("mIoU")),
]


# --- what prose may state -------------------------------------------------------------------------


def quoted_numbers() -> list[float]:
    values = [*PAPER_TABLE1.values(), *PAPER_TABLE2.values(), *QUOTED_MIOU["mIoU (%)"]]
    for scores in REPORT_TABLE1.values():
        values += [v for v in scores.values()] + [100 * v for v in scores.values()]
    bound = table1.table1_bound()
    values += [v for column in bound.columns for v in bound[column]]
    return values


def prose(name: str) -> str:
    if name == "README.md":
        text = (ROOT / name).read_text()
        sections = re.split(r"(?m)^(?=## )", text)
        return "".join(s for s in sections if not s.startswith(LEFT_OUT))
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")


def shown(value: float, written: str) -> bool:
    """Whether `value` rounds to `written` (a sign, if written, must match too)."""
    digits = len(written.split(".")[1])
    number = float(written)
    return any(
        abs(round(candidate, digits) - number) < 10 ** (-digits) / 2
        for candidate in ((value,) if written[0] in "+-" else (value, abs(value)))
    )


FILES = ("README.md", *colab.NOTEBOOKS)


@pytest.mark.parametrize("name", FILES)
def test_every_stated_number_is_quoted_or_stored(name):
    quoted = quoted_numbers()
    stored = {written: how for file, written, how in STORED if file == name}
    for written in NUMBER.findall(prose(name)):
        if written in stored:
            assert shown(stored[written](), written), (
                f"{name}: {written} is now {stored[written]()}"
            )
        else:
            assert any(shown(v, written) for v in quoted), (
                f"{name}: {written} is neither quoted nor listed"
            )


def test_every_listed_number_is_still_stated():
    for name, written, _ in STORED:
        assert written in NUMBER.findall(prose(name)), f"{name} no longer states {written}"


def test_a_number_that_the_files_no_longer_hold_is_caught():
    assert shown(81.94, "81.9") and not shown(81.84, "81.9")
    assert shown(-3.3, "3.3") and not shown(-3.3, "+3.3")
    assert not any(shown(v, "54.9") for v in quoted_numbers())  # 54.82 is quoted, 54.9 is not
