"""The notebooks in notebooks/ run top to bottom, and are committed without outputs.

Each notebook is executed with nbclient in a fresh kernel running THIS Python
(a throw-away kernelspec pointing at ``sys.executable``, so the kernel sees the
same virtual environment as pytest whatever ``python`` is on PATH), from the
``notebooks/`` directory, with the small settings (``MRCNN_NOTEBOOK_SMALL=1``),
logs in a temporary directory and ``MRCNN_WEIGHTS`` pointing at a file that
does not exist (so the demo takes its documented fallback). The executed copy
lives in memory only; the committed files are never rewritten.
"""

import json
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("demo", "train_shapes", "inspect_data", "inspect_model", "inspect_weights")
KERNEL_NAME = "mrcnn-notebook-test"
CELL_TIMEOUT_S = 300


def _read(name):
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


# --------------------------------------------------------------------------- committed files
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_valid_and_has_no_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert code_cells, f"{name}.ipynb has no code cells"
    for i, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{name}.ipynb code cell {i} has committed outputs"
        assert cell.execution_count is None, f"{name}.ipynb code cell {i} has an execution count"
    first = code_cells[0].source
    assert "sys.path" in first and "%matplotlib inline" in first and "_settings" in first


def test_notebook_list_matches_folder():
    on_disk = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NOTEBOOKS)


# --------------------------------------------------------------------------- execution
@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec directory whose kernel runs ``sys.executable -m ipykernel_launcher``."""
    base = tmp_path_factory.mktemp("jupyter")
    spec_dir = base / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "mrcnn test kernel", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return base


def _execute(name, tmp_path, kernel_dir, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("MRCNN_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MRCNN_LOGS", str(tmp_path / "logs"))
    monkeypatch.setenv("MRCNN_WEIGHTS", str(tmp_path / "no_such_weights.h5"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = _read(name)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    return nb


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _count(nb, mime):
    return sum(1 for out in _outputs(nb) if mime in out.get("data", {}))


def _text(nb):
    parts = []
    for out in _outputs(nb):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "text/plain" in out.get("data", {}):
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


def _errors(nb):
    return [out for out in _outputs(nb) if out.output_type == "error"]


@pytest.mark.slow
def test_demo_runs_with_fallback(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("demo", tmp_path, kernel_dir, monkeypatch)
    assert not _errors(nb)
    text = _text(nb)
    assert "No weights file at" in text and "no_such_weights.h5" in text
    assert "RANDOM" in text  # no shapes checkpoint in the fresh logs dir either
    # three photographs and one generated shapes image were drawn
    assert _count(nb, "image/png") >= 4
    for name in ("astronaut", "coffee", "chelsea"):
        assert f"{name}:" in text
    assert _count(nb, "text/html") >= 1  # the summary table


@pytest.mark.slow
def test_train_shapes_trains_and_evaluates(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("train_shapes", tmp_path, kernel_dir, monkeypatch)
    assert not _errors(nb)
    checkpoints = sorted((tmp_path / "logs").glob("shapes*/mask_rcnn_shapes_*.h5"))
    # heads to epoch 1, then all layers to epoch 2: one checkpoint per epoch
    assert [p.name for p in checkpoints] == ["mask_rcnn_shapes_0001.h5",
                                             "mask_rcnn_shapes_0002.h5"]
    text = _text(nb)
    assert "mAP @ IoU=0.5:" in text
    assert "mask_rcnn_shapes_0002.h5" in text  # the inference model loaded the last one
    # samples, ground truth, predictions and the precision-recall curve
    assert _count(nb, "image/png") >= 5


@pytest.mark.slow
def test_inspect_data_runs(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("inspect_data", tmp_path, kernel_dir, monkeypatch)
    assert not _errors(nb)
    text = _text(nb)
    for expected in ("anchors", "rpn_match", "mini-mask", "input_gt_masks"):
        assert expected in text, expected
    assert "refined positive anchors match their gt boxes" in text
    assert _count(nb, "image/png") >= 8


@pytest.mark.slow
def test_inspect_model_runs(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("inspect_model", tmp_path, kernel_dir, monkeypatch)
    assert not _errors(nb)
    text = _text(nb)
    for expected in ("rpn_class", "proposals", "mrcnn_class", "detections", "masks"):
        assert expected in text, expected
    assert _count(nb, "image/png") >= 7


@pytest.mark.slow
def test_inspect_weights_runs(tmp_path, kernel_dir, monkeypatch):
    nb = _execute("inspect_weights", tmp_path, kernel_dir, monkeypatch)
    assert not _errors(nb)
    tables = "".join(out["data"]["text/html"] for out in _outputs(nb)
                     if "text/html" in out.get("data", {}))
    # display_weight_stats lists every weight (any backbone has the FPN and RPN ones);
    # the parts table follows it
    for expected in ("fpn_c5p5/kernel", "rpn_conv_shared/kernel", "mrcnn_mask/",
                     "classifier head", "mask head"):
        assert expected in tables, expected
    assert "weight arrays" in _text(nb)
    assert _count(nb, "image/png") >= 2  # histograms and per-layer std plot


# --------------------------------------------------------------------------- the original's patterns
ORIGINAL_PATTERNS = [
    # The original notebooks' helper and call: a pyplot Axes passed in, the call
    # as the cell's last line. One image, not two.
    ("import matplotlib.pyplot as plt\n"
     "import numpy as np\n"
     "from mrcnn import visualize\n"
     "def get_ax(rows=1, cols=1, size=4):\n"
     "    _, ax = plt.subplots(rows, cols, figsize=(size * cols, size * rows))\n"
     "    return ax\n"
     "image = np.full((32, 48, 3), 120, np.uint8)\n"
     "masks = np.zeros((32, 48, 1), bool); masks[4:20, 6:30] = True\n"
     "visualize.display_instances(image, np.array([[4, 6, 20, 30]]), masks, np.array([1]),\n"
     "                            ['BG', 'thing'], ax=get_ax())", {"image/png": 1}),
    # A figure the function creates, as the cell's last line: shown once.
    ("visualize.display_instances(image, np.array([[4, 6, 20, 30]]), masks, np.array([1]),\n"
     "                            ['BG', 'thing'], figsize=(3, 3))", {"image/png": 1}),
    # A table shown as HTML, then returned: not printed again as text.
    ("import keras\n"
     "net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='fc')])\n"
     "visualize.display_weight_stats(net)", {"text/html": 1}),
]


def test_original_notebook_patterns_show_each_figure_once(tmp_path, kernel_dir, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                                          "%matplotlib inline")]
    nb.cells += [nbformat.v4.new_code_cell(source) for source, _ in ORIGINAL_PATTERNS]
    nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL_NAME,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell, (source, expected) in zip(nb.cells[1:], ORIGINAL_PATTERNS):
        # Nothing shown again as the cell's value (an execute_result).
        assert [o.output_type for o in cell.outputs if o.output_type == "execute_result"] == []
        for mime, count in expected.items():
            found = sum(1 for out in cell.outputs if mime in out.get("data", {}))
            assert found == count, (source.splitlines()[-1], mime, found, cell.outputs)
