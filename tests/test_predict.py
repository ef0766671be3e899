"""predict.py: the trained network of a real short run classifies images from the command line."""
import io
import json
import os
import shutil

import numpy as np
import pytest

import imFunctions as imf
import predict
from conftest import run_script
from helpers import checkpoint_tensor, numpy_forward, prepared_image, softmax

CLASSES = ["shiba_inu", "samoyed"]


def a_test_image(run, breed):
    return run.data_dir / "test" / breed / sorted(os.listdir(run.data_dir / "test" / breed))[0]


def answers(capsys, *argv):
    """predict.py's exit status and its --json lines, parsed."""
    status = predict.main(["--json", *map(str, argv)])
    return status, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_accuracy_on_the_test_split_equals_the_runs_last_test_set_accuracy(short_run, capsys):
    test_dir = short_run.data_dir / "test"

    _, found = answers(capsys, "--checkpoint-dir", short_run.checkpoint_dir, *(test_dir / c for c in CLASSES))

    correct = [answer["class"] == os.path.basename(os.path.dirname(answer["image"])) for answer in found]
    last = [line for line in short_run.stdout.splitlines() if line.startswith("Test Set Accuracy: ")][-1]
    assert len(found) == 8
    assert f"Test Set Accuracy: {np.mean(correct):.4f}" == last


def test_images_are_prepared_exactly_as_training_prepared_its_test_set(short_run):
    classifier = predict.Classifier(short_run.checkpoint_dir)
    paths = predict.find_images([short_run.data_dir / "test" / c for c in CLASSES])[0]
    dataset = imf.loadDataset(CLASSES, 64, short_run.data_dir)

    feed = classifier.feed(np.stack([imf.load_image(path, 64) for path in paths]))

    np.testing.assert_array_equal(feed[classifier.model["X"]], dataset.test_x)
    assert feed[classifier.model["keepRate1"]] == feed[classifier.model["keepRate2"]] == 1.0  # no dropout


def test_an_image_gets_the_same_answer_alone_as_in_a_batch(short_run, tmp_path, capsys):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")  # skipped in the middle of the batch
    images = [*predict.find_images([short_run.data_dir / "test"])[0], tmp_path / "broken.jpg",
              short_run.data_dir / "images" / "beagle_2.jpg"]  # a beagle: neither class, no certain answer

    _, batched = answers(capsys, "--checkpoint-dir", short_run.checkpoint_dir, *images)
    _, alone = answers(capsys, "--checkpoint-dir", short_run.checkpoint_dir, "--batch-size", 1, *images)

    assert len(batched) == len(images) - 1
    assert [a["image"] for a in batched] == [a["image"] for a in alone]
    for in_batch, by_itself in zip(batched, alone):
        assert in_batch["class"] == by_itself["class"], in_batch["image"]
        # The same up to float rounding, which depends on the batch's shape in TensorFlow's CPU kernels.
        assert in_batch["probability"] == pytest.approx(by_itself["probability"], abs=1e-4), in_batch["image"]


def test_json_is_one_object_per_image_with_its_class_and_every_probability(short_run, capsys, monkeypatch):
    image = os.path.relpath(a_test_image(short_run, "samoyed"), short_run.data_dir)
    monkeypatch.chdir(short_run.data_dir)

    status, found = answers(capsys, "--checkpoint-dir", short_run.checkpoint_dir, image)

    assert status == 0 and len(found) == 1
    answer = found[0]
    assert set(answer) == {"image", "class", "probability", "probabilities"}
    assert answer["image"] == image  # as given
    assert list(answer["probabilities"]) == CLASSES and sum(answer["probabilities"].values()) == pytest.approx(1)
    assert answer["class"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert answer["probability"] == answer["probabilities"][answer["class"]]


def numpy_answer(run, image):
    """The probabilities of the classes for ``image``, from the last checkpoint's weights in numpy."""
    tensor = checkpoint_tensor(run.checkpoint_dir / "model.ckpt-18")
    return softmax(numpy_forward(prepared_image(run, image), tensor)[2])


def test_plain_output_is_path_class_and_probability_per_line(short_run, capsys):
    # The test image the network is least sure of: on saturated ones any input would print 1.0000.
    images = [short_run.data_dir / "test" / breed / name for breed in CLASSES
              for name in sorted(os.listdir(short_run.data_dir / "test" / breed))]
    image, probabilities = min(((image, numpy_answer(short_run, image)) for image in images),
                               key=lambda pair: pair[1].max())

    status = predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), str(image)])

    path, label, probability = capsys.readouterr().out.rstrip("\n").split("\t")
    assert status == 0 and path == str(image)
    assert label == CLASSES[int(np.argmax(probabilities))]
    assert float(probability) == pytest.approx(probabilities.max(), abs=1e-4)  # printed to 4 places


def test_folders_are_searched_recursively_in_sorted_order_for_any_case_of_suffix(short_run, tmp_path, capsys):
    picture = a_test_image(short_run, "samoyed")
    for name in ("b/inner/x.JPG", "b/a.png", "c.jpeg", "a.Jpg", "notes.txt", "b/skip.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(picture, tmp_path / name)

    _, found = answers(capsys, "--checkpoint-dir", short_run.checkpoint_dir, tmp_path)

    assert [a["image"] for a in found] == [str(tmp_path / name) for name in ("a.Jpg", "b/a.png", "b/inner/x.JPG",
                                                                              "c.jpeg")]


# --------------------------------------------------------------------------- failures

def test_an_unreadable_file_is_one_warning_line_the_rest_are_classified_and_the_exit_status_is_1(short_run, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    good = a_test_image(short_run, "samoyed")

    result = run_script("predict.py", ["--checkpoint-dir", short_run.checkpoint_dir, good, "broken.jpg", good],
                        cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr == "Warning: skipped broken.jpg: not a readable image\n"
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [str(good), str(good)]


def test_a_missing_file_is_a_warning_and_exit_status_1(short_run, capsys):
    status = predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "no/such.jpg"])

    assert status == 1 and capsys.readouterr().err == "Warning: skipped no/such.jpg: no such file\n"


def test_a_folder_without_images_is_a_warning_and_exit_status_1(short_run, tmp_path, capsys):
    status = predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), str(tmp_path)])

    assert status == 1 and capsys.readouterr().err == f"Warning: no .jpg, .jpeg or .png images in {tmp_path}\n"


def run_folder(run, directory):
    """A checkpoint folder holding ``run``'s run.json and mean image but no checkpoint."""
    directory.mkdir()
    for name in ("run.json", "mean_image.npy"):
        shutil.copy(run.checkpoint_dir / name, directory / name)
    return directory


def error_line(capsys):
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


def test_a_folder_without_a_checkpoint_is_one_line_and_exit_status_2(short_run, tmp_path, capsys):
    folder = run_folder(short_run, tmp_path / "checkpoints")

    status = predict.main(["--checkpoint-dir", str(folder), "any.jpg"])

    assert status == 2
    assert error_line(capsys) == (f"predict.py: error: no full checkpoint in {folder}: "
                                  f"train first (python visualize_convnets.py)\n")


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, message", [
    pytest.param("run.json", None, "{path} is missing", id="run.json missing"),
    pytest.param("run.json", b'{"classes": ["shiba_inu", "sam', "{path} is not JSON", id="run.json cut short"),
    pytest.param("run.json", b'{"classes": ["shiba_inu", "samoyed"]}', "{path} is not a run description",
                 id="run.json without image_size"),
    pytest.param("mean_image.npy", None, "{path} is missing", id="mean missing"),
    pytest.param("mean_image.npy", b"\x93NUMPY\x01\x00garbled", "{path} is not a numpy array", id="mean garbled"),
    pytest.param("mean_image.npy", npy_bytes(np.zeros((32, 32, 3), np.float32)),
                 "{path} is not a 64x64 RGB mean image (shape (32, 32, 3))", id="mean of another size"),
])
def test_a_missing_or_garbled_run_description_is_one_line_naming_the_file_and_exit_status_2(
        name, content, message, short_run, tmp_path, capsys):
    folder = run_folder(short_run, tmp_path / "checkpoints")
    os.remove(folder / name)
    if content is not None:
        (folder / name).write_bytes(content)

    status = predict.main(["--checkpoint-dir", str(folder), "any.jpg"])

    assert status == 2
    assert error_line(capsys).startswith("predict.py: error: " +
                                         message.format(path=folder / name))


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--batch-size", "ten"], "argument --batch-size: invalid int value: 'ten'"),
    ([], "the following arguments are required: IMAGE_OR_FOLDER"),
])
def test_bad_flags_are_one_line_and_exit_status_2(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_status:
        predict.main(flags + (["x.jpg"] if flags else []))

    assert exit_status.value.code == 2
    assert error_line(capsys).endswith(f"error: {message}\n")


def test_a_run_json_that_differs_from_the_checkpoints_record_loses_to_it_with_one_warning(short_run, tmp_path,
                                                                                         capsys):
    folder = tmp_path / "checkpoints"
    shutil.copytree(short_run.checkpoint_dir, folder)
    recorded = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**recorded, "classes": ["samoyed", "shiba_inu"], "seed": 7}))
    image = a_test_image(short_run, "samoyed")

    predict.main(["--checkpoint-dir", str(folder), "--json", str(image)])
    with_edited, err = capsys.readouterr()
    predict.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--json", str(image)])

    assert err == (f"Warning: {folder / 'run.json'} is not what the checkpoints record: using the run model.ckpt-18 "
                   f"records (seed {recorded['seed']})\n")
    assert json.loads(with_edited) == json.loads(capsys.readouterr().out)  # the classes in the recorded order
