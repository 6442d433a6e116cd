"""The notebooks in notebooks/ run top to bottom (each asserts its own outcome),
draw the figures they promise, and are stored without outputs.

Set MXOPT_NOTEBOOK_FIGURES=<dir> to keep the executed notebooks' figures as PNG
files there, to look at them."""
import base64
import glob
import json
import os
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
# Figures each notebook must draw (cells whose output includes a PNG).
FIGURES = {"quickstart.ipynb": 2, "wgan_clip_weights.ipynb": 2, "continue_mxnet_run.ipynb": 1,
           "port_gluon_sgd.ipynb": 1}


def test_every_notebook_is_listed():
    assert NOTEBOOKS == sorted(FIGURES)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_without_outputs(name):
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


@pytest.fixture
def kernel_manager(tmp_path):
    """A kernel running this interpreter (whatever 'python3' kernels are installed)."""
    spec_dir = tmp_path / "kernels" / "mxopt-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mxopt tests", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name="mxopt-test", kernel_spec_manager=specs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_and_draws(name, kernel_manager, monkeypatch):
    # Figures become PNG outputs (matplotlib's Agg renderer behind the inline backend).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = nbformat.read(os.path.join(NOTEBOOK_DIR, name), as_version=4)
    NotebookClient(nb, km=kernel_manager, timeout=600,
                   resources={"metadata": {"path": NOTEBOOK_DIR}}).execute()
    pngs = [out["data"]["image/png"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(pngs) == FIGURES[name]
    keep = os.environ.get("MXOPT_NOTEBOOK_FIGURES")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for i, png in enumerate(pngs, 1):
            with open(os.path.join(keep, f"{name[:-6]}_{i}.png"), "wb") as f:
                f.write(base64.b64decode(png))
