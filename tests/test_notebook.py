"""visualizing_convnets.ipynb: committed without outputs, and run top to bottom in a real kernel.

The notebook is executed once (nbclient, ipykernel) against the local mirror at 32 px for two epochs, its
parameters injected after the cell tagged ``parameters`` as papermill does; the tests then read its outputs,
cell by cell (found by their tags), and the files it wrote. Then, in the same kernel, the training cell is run
again with one more epoch: it must carry on from the checkpoint. The TensorBoard that ``%tensorboard`` starts
lives on after its kernel; its info file (under the kernel's TMPDIR) names it, and the fixture stops it.
"""
import ast
import base64
import glob
import io
import json
import os
import re
import shutil
import signal
import sys
import time
import urllib.request
from pathlib import Path

import mirror
import pytest
from conftest import REPO
from helpers import inject_parameters
from PIL import Image

JUPYTER = "Jupyter runs the notebook: pip install -r requirements-notebook.txt"
nbformat = pytest.importorskip("nbformat", reason=JUPYTER)
NotebookClient = pytest.importorskip("nbclient", reason=JUPYTER).NotebookClient

NOTEBOOK = os.path.join(REPO, "visualizing_convnets.ipynb")
DEFAULTS = {"image_size": 224, "epochs": 400, "data_dir": "data", "logdir": "logs", "checkpoint_dir": "checkpoints",
            "gif_dir": "gifs", "figures_dir": "figures", "augment": None, "pretrained": None,
            "pretrained_weights": None}
EPOCHS = 2


def committed():
    return nbformat.read(NOTEBOOK, as_version=4)


def tagged(notebook, tag):
    [cell] = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    return cell


def outputs_of(cell, mime):
    return [output["data"][mime] for output in cell.outputs if mime in output.get("data", {})]


def printed(cell):
    return "".join(output["text"] for output in cell.outputs if output["output_type"] == "stream")


def stop(pid):
    """SIGTERM to a process that is not our child, then wait until it is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
    except ProcessLookupError:
        return


@pytest.fixture(scope="module")
def executed(archives, tmp_path_factory):
    """The notebook run top to bottom at 32 px, then its training cell again for one more epoch."""
    work = tmp_path_factory.mktemp("notebook")
    folders = {name: str(work / DEFAULTS[name]) for name in ("data_dir", "logdir", "checkpoint_dir", "gif_dir",
                                                              "figures_dir")}
    notebook = inject_parameters(committed(), {"image_size": 32, "epochs": EPOCHS, "augment": "flip", **folders})
    # The kernel's SIGINT and SIGTERM handlers, printed before the first cell and after the last.
    handlers = "import signal\nprint(signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(handlers, metadata={"tags": ["handlers-before"]}))
    notebook.cells.append(nbformat.v4.new_code_cell(handlers, metadata={"tags": ["handlers-after"]}))
    info_dir = work / "tmp" / ".tensorboard-info"
    os.makedirs(work / "tmp")
    # The article's download lines pass the official sizes: the mirror pads its archives to them.
    with mirror.MirrorServer(archives.directory, pad_to=mirror.OFFICIAL_SIZES) as server, \
            pytest.MonkeyPatch.context() as patch:
        patch.setenv("OXFORD_PETS_URL", server.url)
        patch.setenv("PYTHONPATH", REPO)  # the kernel starts in the work folder; Jupyter starts it beside the notebook
        patch.setenv("TMPDIR", str(work / "tmp"))  # where %tensorboard's TensorBoard leaves its info file
        patch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))  # tensorboard
        client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": work}})
        infos = []
        try:
            with client.setup_kernel():
                for index in range(len(notebook.cells)):
                    client.execute_cell(notebook.cells[index], index)
                infos = read_infos(info_dir)
                tensorboards = [tensorboard_tags(info) for info in infos]
                rerun = nbformat.v4.new_code_cell(tagged(notebook, "training").source)
                notebook.cells += [nbformat.v4.new_code_cell(f"epochs = {EPOCHS + 1}"), rerun]
                for index in range(len(notebook.cells) - 2, len(notebook.cells)):
                    client.execute_cell(notebook.cells[index], index)
        finally:
            nbformat.write(notebook, work / "executed.ipynb")  # to open in Jupyter when a test here fails
            for info in infos + read_infos(info_dir):  # the kernel's end may or may not have taken it along
                stop(info["pid"])
            shutil.rmtree(work / "data", ignore_errors=True)  # 811 MB of padding
    return {"notebook": notebook, "rerun": rerun, "folders": folders, "tensorboards": tensorboards, "infos": infos}


def read_infos(info_dir):
    infos = []
    for path in glob.glob(os.path.join(info_dir, "pid-*.info")):
        with open(path) as handle:
            infos.append(json.load(handle))
    return infos


def tensorboard_tags(info):
    with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/data/plugin/scalars/tags", timeout=30) as answer:
        return json.load(answer)


# --------------------------------------------------------------------------- the committed file

def test_the_committed_notebook_holds_no_outputs():
    code = [cell for cell in committed().cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)


def test_the_first_code_cell_is_tagged_parameters_and_holds_the_tutorials_defaults():
    first = next(cell for cell in committed().cells if cell.cell_type == "code")
    assigned = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(first.source).body}
    assert "parameters" in first.metadata.get("tags", [])
    assert {name: assigned[name] for name in DEFAULTS if name in assigned} == DEFAULTS


def test_the_notebook_holds_the_tutorials_seven_data_lines():
    source = "\n".join(cell.source for cell in committed().cells if cell.cell_type == "code")
    for line in ("imf.downloadImages('annotations.tar.gz', 19173078", "imf.downloadImages('images.tar.gz', 791918971",
                 "imf.maybeExtract('annotations.tar.gz'", "imf.maybeExtract('images.tar.gz'", "imf.sortImages(0.15",
                 "train_x, train_y, test_x, test_y, classes, classLabels = imf.buildDataset(",
                 "train_x, train_y = imf.shuffle(train_x, train_y)"):
        assert line in source


def test_the_notebook_states_the_readmes_expected_results():
    def numbers(text):
        paragraph = text.split("**Expected results.**", 1)[1].split("\n\n", 1)[0]
        return re.findall(r"\d+(?:\.\d+)?", paragraph)

    readme = Path(REPO, "README.md").read_text()
    assert numbers(committed().cells[0].source) == numbers(readme)
    assert "0.82 over the last 10 epochs and 0.83 over the last 50 (best 0.85)" in " ".join(readme.split())


# --------------------------------------------------------------------------- run top to bottom

def test_the_kernel_keeps_its_interrupt_after_training_predict_and_filter_gif_ran_in_it(executed):
    before = printed(tagged(executed["notebook"], "handlers-before"))
    assert before and printed(tagged(executed["notebook"], "handlers-after")) == before


def test_no_cell_fails(executed):
    errors = [output for cell in executed["notebook"].cells if cell.cell_type == "code" for output in cell.outputs
              if output["output_type"] == "error"]
    assert errors == []


def test_the_demos_show_their_figures_as_the_files_they_wrote(executed):
    figures = executed["folders"]["figures_dir"]
    for tag, names in (("convolution-demo", ["convolution_demo.png", "convolution_filters.png"]),
                       ("pooling-demo", ["pooling_demo.png"])):
        shown = [base64.b64decode(data) for data in outputs_of(tagged(executed["notebook"], tag), "image/png")]
        assert shown == [Path(figures, name).read_bytes() for name in names], tag


def test_the_graph_cell_lists_the_tutorials_name_scopes(executed):
    [listed] = outputs_of(tagged(executed["notebook"], "graph"), "text/plain")
    scopes = set(ast.literal_eval(listed))
    assert {"X", "Y_", "keepRate1", "keepRate2", "conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2", "fc1",
            "softmax", "cross_entropy", "accuracy", "train"} <= scopes


def test_training_prints_the_tutorials_lines_and_leaves_a_checkpoint(executed):
    text = printed(tagged(executed["notebook"], "training"))
    for epoch in range(1, EPOCHS + 1):
        assert re.search(rf"^Epoch number {epoch} Training Accuracy: \d\.\d{{4}}$", text, re.MULTILINE), text
    assert len(re.findall(r"^Test Set Accuracy: \d\.\d{4}$", text, re.MULTILINE)) == EPOCHS
    assert glob.glob(os.path.join(executed["folders"]["checkpoint_dir"], "model.ckpt-*.index"))


def test_the_augment_parameter_augments_the_training_batches(executed):
    text = printed(tagged(executed["notebook"], "training"))
    run = json.loads(open(os.path.join(executed["folders"]["checkpoint_dir"], "run.json")).read())

    assert "Augmenting the training batches: flip\n" in text
    assert run["segments"][0]["augment"] == ["flip"]


def test_rerunning_the_training_cell_carries_on_from_the_checkpoint(executed):
    text = printed(executed["rerun"])
    assert re.search(r"^Resumed from .*model\.ckpt-(\d+) at global step \1 ", text, re.MULTILINE), text
    assert "Epoch number 1 " not in text and f"Epoch number {EPOCHS + 1} Training Accuracy" in text


def test_tensorboard_inline_serves_the_notebooks_logs(executed):
    [html] = outputs_of(tagged(executed["notebook"], "tensorboard"), "text/html")
    [tags] = executed["tensorboards"]
    assert "iframe" in html and f"const port = {executed['infos'][0]['port']};" in html
    assert {"Loss", "Accuracy"} <= set(tags["train"]) and {"Loss", "Accuracy"} <= set(tags["test"])


def test_predict_answers_for_two_test_images_of_each_class(executed):
    lines = printed(tagged(executed["notebook"], "predict")).splitlines()
    assert [line.split("\t")[0].split(os.sep)[-2] for line in lines] == ["shiba_inu", "shiba_inu", "samoyed", "samoyed"]
    assert all(re.fullmatch(r"\S+\t(shiba_inu|samoyed)\t[01]\.\d{4}", line) for line in lines), lines


def test_the_explanations_are_shown_for_each_of_those_images(executed):
    shown = [base64.b64decode(data) for data in outputs_of(tagged(executed["notebook"], "explanations"), "image/png")]
    assert len(shown) == 4
    for data in shown:
        with Image.open(io.BytesIO(data)) as picture:  # the photo and 5 methods' panels, 32 px zoomed 7x, 16 px apart
            assert picture.size == (6 * 224 + 5 * 16, 26 + 224)


def test_the_filter_and_feature_map_gifs_are_shown_as_the_files_written(executed):
    cell = tagged(executed["notebook"], "gifs")
    gifs = executed["folders"]["gif_dir"]
    shown = [base64.b64decode(data) for data in outputs_of(cell, "image/gif")]
    stems = {os.path.basename(path)[:-len("_conv1_2.gif")] for path in glob.glob(os.path.join(gifs, "*_conv1_2.gif"))}
    [stem] = stems
    assert shown == [Path(gifs, name).read_bytes()
                     for name in ("conv1_1.gif", f"{stem}_conv1_2.gif", f"{stem}_conv2_2.gif")]
    assert all(data.startswith(b"GIF89a") for data in shown)


def test_the_tensorboard_the_notebook_started_is_stopped_after_it(executed):
    [info] = executed["infos"]
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)
