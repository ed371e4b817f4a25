"""The Colab plan: a row per notebook and profile, every time labelled measured or estimated,
the measured ones read from the stored files, the estimates scaling as their arithmetic says,
and README's table the code's own."""

import json
import re
from pathlib import Path

import pytest

from deeplab_kit.config import RunConfig
from deeplab_kit.course import colab, plan, results

ROOT = Path(__file__).resolve().parents[1]
LABELLED = re.compile(r"\((measured|measured, stored|estimated)\)$")


@pytest.fixture(scope="module")
def table():
    return plan.plan()


def test_every_notebook_has_a_row_per_profile_it_runs_in(table):
    notebooks = {name[:2] for name in colab.NOTEBOOKS}
    assert set(table.index.get_level_values("notebook")) == notebooks
    for notebook in notebooks:
        profiles = set(table.loc[notebook].index)
        assert {"quick", "full"} <= profiles, notebook
    experiments = ("03", "04", "05")  # where a student's run and the whole one differ
    assert all({"cpu", "complete"} <= set(table.loc[n].index) for n in experiments)


def test_every_time_says_how_it_is_known(table):
    for (notebook, profile), row in table.iterrows():
        for column in ("2-core CPU", "free T4"):
            cell = row[column]
            known = (
                LABELLED.search(cell)
                or cell in ("needs a GPU",)
                or cell.startswith(("runs on the CPU", "about the CPU's"))
            )
            assert known, f"{notebook} {profile} {column}: {cell!r}"
        if profile in ("full", "complete") and notebook not in ("01", "02"):
            assert row["free T4"].endswith("(estimated)"), (notebook, profile)


def test_measured_times_are_the_stored_files(table):
    record = results.read_stored_json("notebook-times/notebook-times.json")
    for row in record["rows"]:
        shown = table.loc[(row["notebook"][:2], "quick"), "2-core CPU"]
        assert shown == f"{plan._minutes(row['seconds'])} (measured)"
    made = {"03": ("going-deeper", "cascaded-blocks"), "04": ("ablation",), "05": ("demo",)}
    for notebook, names in made.items():
        shown = table.loc[(notebook, "cpu"), "2-core CPU"]
        seconds = sum(
            json.loads((results.store(name) / "provenance.json").read_text())["seconds"]
            for name in names
        )
        factor = 2 if notebook == "05" else 1  # the demo run twice: in sessions, then in one
        expected = f"{plan._minutes(factor * seconds)} (measured, stored)"
        assert shown == expected


def test_estimates_scale_with_the_work():
    report = RunConfig.from_recipe("report")
    # a step's operations grow with the pixels: four times the area, about four times the work
    assert plan.step_flops(report, 512) == pytest.approx(4 * plan.step_flops(report, 256), rel=0.05)
    # one 20-epoch session is a tenth of the 200-epoch run; the complete ablation more than the
    # student's three runs, going deeper at output stride 8 more than at 32
    assert plan.t4_minutes("report-session") == pytest.approx(plan.t4_minutes("report") / 10)
    assert plan.t4_minutes("ablation-complete") > 10 * plan.t4_minutes("ablation")
    deep = report.replace(extra_blocks=3, aspp=False)
    assert plan.step_flops(deep.replace(output_stride=8), 321) > 3 * plan.step_flops(
        deep.replace(output_stride=32), 321
    )
    with pytest.raises(ValueError, match="no estimate"):
        plan.t4_minutes("nothing")


def test_readme_holds_the_plan_as_the_code_computes_it(table):
    readme = (ROOT / "README.md").read_text()
    assert plan.dumps(table) in readme
