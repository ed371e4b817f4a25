"""The course as a student meets it, read from the notebooks' JSON (no kernel): every idea
introduced before it is used, links and "notebook NN" mentions that resolve, each notebook
opening with what it assumes and its cost and closing with what was learned and the next one,
exercises that check themselves, the library's own code on the page, cells that stay thin."""

import inspect
import json
import re
from pathlib import Path

import pytest

from deeplab_kit import model
from deeplab_kit.course import colab, exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ORDER = colab.NOTEBOOKS
MAX_CELL_LINES = 15

# The ideas each notebook introduces, in bold where it defines them. No earlier notebook, and no
# earlier cell of the same notebook, may use them; the notebook's opening cell (what it is
# about) and every notebook's closing cell (what was learned, what comes next) may name them.
CONCEPTS = {
    "01_data.ipynb": ("void", "class imbalance", "pixel accuracy", "mean IoU", "trainaug",
                      "keyed", "memory-mapped"),
    "02_atrous_convolution.ipynb": ("atrous convolution", "space to batch", "feature map",
                                    "output stride", "receptive field", "multi-grid", "ASPP",
                                    "image pooling", "valid share"),
    "03_going_deeper.ipynb": ("cascaded blocks", "block-majority oracle", "converged", "paired",
                              "Holm's correction", "resolved"),
    "04_aspp_ablation.ipynb": ("planned contrasts", "exploratory", "interior", "outline band",
                               "effective receptive field"),
    "05_training_sessions.ipynb": ("run folder", "checkpoint", "autocast", "channels_last"),
    "06_report.ipynb": ("confusion matrix", "precision", "recall", "F1", "micro", "weighted",
                        "macro", "protocol", "DeepLabv3+", "multi-scale"),
    "07_your_own_data.ipynb": ("classes file", "ONNX"),
}  # fmt: skip
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")
MENTION = re.compile(r"\bnotebooks? (\d\d)\b", re.IGNORECASE)
DEFINITION = re.compile(r"^\s*(async\s+def|def|class)\s", re.MULTILINE)


def cells(name: str) -> list[dict]:
    return json.loads((NOTEBOOKS / name).read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def outputs(cell: dict) -> str:
    text = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            text.append("".join(output["text"]))
        elif "data" in output:
            text.append("".join(output["data"].get("text/plain", "")))
    return "".join(text)


def markdown(name: str) -> list[str]:
    return [source(cell) for cell in cells(name) if cell["cell_type"] == "markdown"]


def uses(text: str, term: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(term)}(?![\w-])", text, re.IGNORECASE) is not None


def defines(text: str, term: str) -> bool:
    return re.search(rf"\*\*`?{re.escape(term)}`?\*\*", text, re.IGNORECASE) is not None


def test_the_course_is_the_notebooks_in_order():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == list(ORDER)
    assert set(CONCEPTS) == set(ORDER)
    assert [name[:2] for name in ORDER] == [f"{k:02d}" for k in range(1, len(ORDER) + 1)]


@pytest.mark.parametrize("name", ORDER)
def test_every_idea_is_introduced_before_it_is_used(name):
    earlier = [text for other in ORDER[: ORDER.index(name)] for text in markdown(other)[1:-1]]
    own = markdown(name)
    for term in CONCEPTS[name]:
        where = next((k for k, text in enumerate(own) if defines(text, term)), None)
        assert where is not None, f"{name}: {term!r} is never defined (in bold)"
        used = [k for k, text in enumerate(own[1:where], start=1) if uses(text, term)]
        assert not used, f"{name}: {term!r} used in markdown cell(s) {used} before cell {where}"
        before = [text[:60] for text in earlier if uses(text, term)]
        assert not before, f"{term!r} (defined in {name}) is used earlier: {before}"


@pytest.mark.parametrize("name", ORDER)
def test_links_and_notebook_mentions_name_the_right_notebook(name):
    for text in markdown(name):
        for label, target in LINK.findall(text):
            if target.endswith(".ipynb"):
                assert target in ORDER, f"{name}: a link to {target}, which is not a notebook"
                for number in MENTION.findall(label) + re.findall(r"^(\d\d)$", label):
                    assert target.startswith(number), f"{name}: [{label}]({target})"
        bare = MENTION.findall(LINK.sub("", text))
        assert not bare, f"{name}: 'notebook {bare[0]}' without a link to it"


def test_the_library_and_readme_name_only_notebooks_that_exist():
    texts = {path: path.read_text() for path in (ROOT / "deeplab_kit").rglob("*.py")}
    texts[ROOT / "README.md"] = (ROOT / "README.md").read_text()
    for path, text in texts.items():
        for found in re.findall(r"\b\d\d_\w+\.ipynb", text):
            assert found in ORDER, f"{path.relative_to(ROOT)} names {found}"
        for number in MENTION.findall(text):
            assert 1 <= int(number) <= len(ORDER), f"{path.relative_to(ROOT)}: notebook {number}"


@pytest.mark.parametrize("name", ORDER)
def test_each_notebook_opens_with_what_it_assumes_and_what_it_costs(name):
    opening = markdown(name)[0]
    assert opening.startswith(f"# {name[:2]} · ")
    assert "**Assumes**" in opening and "**You will**" in opening
    code = [cell for cell in cells(name) if cell["cell_type"] == "code"]
    assert source(code[2]) == f'plan.plan("{name[:2]}")'
    assert "2-core CPU" in outputs(code[2]) and "free T4" in outputs(code[2])


@pytest.mark.parametrize("name", ORDER)
def test_each_notebook_ends_with_what_was_learned_and_the_next_one(name):
    closing = markdown(name)[-1]
    assert "## What we learned" in closing and "## Next" in closing
    learned = closing.split("## What we learned")[1].split("## Next")[0]
    assert learned.count("\n- ") >= 2, f"{name}: the summary has fewer than two points"
    following = closing.split("## Next")[1]
    position = ORDER.index(name)
    wanted = ORDER[position + 1] if position + 1 < len(ORDER) else ORDER[0]
    assert f"({wanted})" in following, f"{name}: no link to {wanted} after '## Next'"


def exercise_cells(name: str) -> list[tuple[dict, dict]]:
    """(stub cell, the check cell after it) for each exercise of a notebook."""
    all_cells = cells(name)
    return [
        (cell, next(c for c in all_cells[k + 1 :] if c["cell_type"] == "code"))
        for k, cell in enumerate(all_cells)
        if "exercise" in cell["metadata"].get("tags", [])
    ]


def test_there_are_exercises_in_every_notebook_from_01_to_06():
    counts = {name: len(exercise_cells(name)) for name in ORDER}
    assert sum(counts.values()) >= 5
    assert all(counts[name] >= 1 for name in ORDER[:6]), counts


@pytest.mark.parametrize("name", [n for n in ORDER if exercise_cells(n)])
def test_exercises_are_unsolved_stubs_whose_checks_say_what_is_to_do(name):
    tested = (ROOT / "tests" / "test_exercises.py").read_text()
    for stub, check in exercise_cells(name):
        (function,) = re.findall(r"^def (\w+)\(", source(stub), re.MULTILINE)
        assert source(stub).rstrip().endswith("return None"), f"{name}: {function} is solved"
        called = re.search(r"exercises\.(check_\w+)\((\w+)", source(check))
        assert called and called[2] == function, f"{name}: no check after {function}"
        assert hasattr(exercises, called[1]) and called[1] in tested
        assert outputs(check).strip() == f"to do: fill in {function} (it returned None)"


def test_the_aspp_module_is_on_the_page_as_the_library_has_it():
    shown = [outputs(cell) for name in ORDER for cell in cells(name) if cell["cell_type"] == "code"]
    source_code = inspect.getsource(model.ASPP).rstrip()
    assert any("# deeplab_kit.model, line" in text and source_code in text for text in shown), (
        "no notebook output prints deeplab_kit.model.ASPP's source"
    )


@pytest.mark.parametrize("name", ORDER)
def test_cells_are_short_thin_and_executed(name):
    code = [cell for cell in cells(name) if cell["cell_type"] == "code"]
    for k, cell in enumerate(code):
        text = source(cell)
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) <= MAX_CELL_LINES, f"{name} code cell {k}: {len(lines)} lines"
        if "exercise" not in cell["metadata"].get("tags", []):  # logic lives in the library
            assert not DEFINITION.search(text), f"{name} code cell {k} defines a function"
        assert cell["execution_count"] is not None, f"{name} code cell {k} was not executed"
        if re.search(r"widgets\.\w+_(explorer|browser|upload)\(", text):
            # nbval reads the marker only as a comment line of its own
            assert text.splitlines()[0] == "# NBVAL_IGNORE_OUTPUT", f"{name} code cell {k}"
    assert "Profile.from_env()" in source(code[1])  # the profile cell
    assert code[1]["metadata"].get("tags") == ["parameters"]


def test_the_rate_sliders_and_their_plain_twin_are_in_the_primer():
    sources = [source(cell) for cell in cells("02_atrous_convolution.ipynb")]
    assert any("widgets.atrous_rate_explorer(" in text for text in sources)
    assert any("plot_atrous_explorer(" in text for text in sources)
