"""Every notebook runs top to bottom, stores its widgets' state, and is committed without outputs."""

import base64
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# notebook -> (modules it needs beyond the base install, widget views it must leave behind, what draws them:
# PNGs in ipywidgets Image models, and/or the explorer's canvas module and its data in an anywidget model)
EXPECT = {
    "01_quickstart": (("rmt_lab.trace",), 0, ()),
    "02_attention_explorer": (("rmt_lab.trace",), 2, ("canvas", "png")),
    "03_memory_dynamics": (("rmt_lab.trace",), 1, ("png",)),
    "04_scaling_benchmarks": ((), 0, ()),
    "05_reproduce_paper_figures": ((), 0, ()),
}


def test_every_notebook_is_listed_and_stored_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == sorted(EXPECT)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} hold outputs; strip them before committing"
        assert nb.cells[0].cell_type == "markdown", f"{path.name} should open by saying what it shows"


def _image_models(nb) -> list[bytes]:
    """PNG bytes of every stored ipywidgets Image model."""
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    images = []
    for model in state.values():
        if model["model_name"] != "ImageModel":
            continue
        for buffer in model.get("buffers", []):
            if buffer["path"] == ["value"]:
                images.append(base64.b64decode(buffer["data"]))
    return images, state


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_stores_widget_state(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    needs, views, drawn_by = EXPECT[path.stem]
    for module in needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{path.name} needs {module}, which this checkout does not have yet")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))  # kernel connection files, not in ~
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert not errors, errors
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook showed no figure"
    shown = [o["data"][WIDGET_VIEW]["model_id"] for o in outputs if WIDGET_VIEW in o.get("data", {})]
    images, state = _image_models(nb)
    assert len(shown) == views
    if views:
        assert all(model_id in state for model_id in shown), "a displayed widget's state was not stored"
    if "png" in drawn_by:
        assert images and all(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000 for png in images)
    if "canvas" in drawn_by:  # the stored state carries the module and what it needs to ask for maps
        explorer = [m["state"] for m in state.values() if m["model_name"] == "AnyModel"]
        assert len(explorer) == 1 and "export default" in explorer[0]["_esm"]
        assert explorer[0]["meta"]["segments"] and len(explorer[0]["meta"]["cmap"]) == 256
