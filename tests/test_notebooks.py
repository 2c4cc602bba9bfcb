"""The two widget notebooks: committed clean, and run top to bottom headless (nbclient) on a fresh kernel.

Each panel cell must leave a widget view whose root is the expected panel (checked through the widget
state nbclient records: the root box's heading carries the panel's <h3> title), and no cell may leave an
error or a traceback. What a browser draws is checked by tests/test_browser.py.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT / "tools_dev"))
import build_notebooks  # noqa: E402

VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"
PANEL_CELLS = build_notebooks.PANELS  # notebook -> cell id -> (module, class) of the panel it shows


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(PROJECT_ROOT / name, as_version=4)


@pytest.mark.parametrize("name", sorted(build_notebooks.NOTEBOOKS))
def test_committed_notebook_is_what_the_generator_writes(name: str) -> None:
    expected = build_notebooks.render(build_notebooks.NOTEBOOKS[name])
    assert (PROJECT_ROOT / name).read_text(encoding="utf-8") == expected, (
        f"{name} differs from tools_dev/build_notebooks.py: edit the cell texts there and rerun it")


@pytest.mark.parametrize("name", sorted(build_notebooks.NOTEBOOKS))
def test_committed_notebook_is_clean_and_names_its_kernel(name: str) -> None:
    notebook = read(name)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec == {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                            "language": "python"}
    assert "widgets" not in notebook.metadata  # no saved widget state
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert code[0].id == "context" and "NotebookContext()" in code[0].source
    # Short teaching cells around the panels: one markdown cell before each panel cell.
    ids = [cell.id for cell in notebook.cells]
    for panel_cell in PANEL_CELLS[name]:
        before = notebook.cells[ids.index(panel_cell) - 1]
        assert before.cell_type == "markdown" and before.source.startswith("## ")


@pytest.mark.parametrize("name", sorted(PANEL_CELLS))
def test_notebook_runs_headless_and_every_panel_cell_shows_its_panel(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORA_WORK_DIR", str(tmp_path / "work"))  # the kernel inherits it: no files land here
    notebook = read(name)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(PROJECT_ROOT)}})
    client.execute()

    problems = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
                if output.output_type == "error"
                or (output.output_type == "stream" and output.name == "stderr"
                    and ("Traceback" in output.text or "Error" in output.text))]
    assert problems == []
    assert all(cell.execution_count for cell in notebook.cells if cell.cell_type == "code")

    state = notebook.metadata.widgets[STATE_MIME]["state"]
    cells = {cell.id: cell for cell in notebook.cells}
    for cell_id, (module, class_name) in PANEL_CELLS[name].items():
        views = [output.data[VIEW_MIME]["model_id"] for output in cells[cell_id].outputs
                 if output.output_type == "display_data" and VIEW_MIME in output.get("data", {})]
        assert len(views) == 1, f"cell {cell_id!r} of {name} shows {len(views)} widget views"
        root = state[views[0]]["state"]
        assert "lora-panel" in root["_dom_classes"]
        heading = state[root["children"][0].removeprefix("IPY_MODEL_")]["state"]["value"]
        assert f"<h3>{getattr(importlib.import_module(module), class_name).title}</h3>" in heading
