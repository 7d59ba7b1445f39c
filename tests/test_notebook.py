"""notebooks/explore_predictions.ipynb runs top to bottom (nbclient) in a kernel of this Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore_predictions.ipynb"


def execute(monkeypatch, tiny: bool):
    """Run the notebook in a ``python3`` kernel; jupyter_client starts it with ``sys.executable`` (the
    kernel spec's ``python`` is replaced by the running interpreter), so it imports this framecast."""
    monkeypatch.delenv("FRAMECAST_CKPT", raising=False)
    if tiny:
        monkeypatch.setenv("FRAMECAST_NOTEBOOK_TINY", "1")
    else:
        monkeypatch.delenv("FRAMECAST_NOTEBOOK_TINY", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    return nb


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def check(nb) -> None:
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and {"image/png", "image/gif"} & set(o.data)]
    kinds = sorted({k for o in images for k in o.data if k.startswith("image/")})
    # comparison, curves, surprise, hidden state (PNG); side by side and dream (GIF)
    assert len(images) == 6 and kinds == ["image/gif", "image/png"]
    assert nb.cells[-1].outputs[0].text.strip() == sys.executable


def test_notebook_runs_tiny(monkeypatch):
    """The notebook with FRAMECAST_NOTEBOOK_TINY=1: three training steps of a one-layer, 8-channel model."""
    check(execute(monkeypatch, tiny=True))


@pytest.mark.slow
def test_notebook_runs_full(monkeypatch):
    """The notebook as a user runs it: about a minute of training on a laptop CPU."""
    check(execute(monkeypatch, tiny=False))
