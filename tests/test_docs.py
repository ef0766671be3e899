"""docs/: every picture the README names is there and decodes; docs/make_pictures.py remakes them on a mirror."""
import os
import re

import pytest
from PIL import Image

from conftest import REPO, run_script

README = open(os.path.join(REPO, "README.md")).read()
NAMED = sorted(set(re.findall(r"docs/[\w.-]+\.(?:png|gif)", README)))


def decodes(path):
    """Every frame of the picture decoded (a GIF's too); its (width, height)."""
    with Image.open(path) as picture:
        for frame in range(getattr(picture, "n_frames", 1)):
            picture.seek(frame)
            picture.load()
        return picture.size


def test_the_readme_names_the_filter_gif_and_an_explanation_on_its_first_screen():
    first_screen = "\n".join(README.splitlines()[:30])

    assert "docs/conv1_1.gif" in first_screen
    assert re.search(r"docs/explained_\w+\.png", first_screen)


@pytest.mark.parametrize("name", NAMED)
def test_every_picture_the_readme_names_exists_and_decodes(name):
    width, height = decodes(os.path.join(REPO, name))

    assert width > 0 and height > 0


def test_docs_stays_under_6_mb():
    total = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(os.path.join(REPO, "docs"))
                for name in names if "__pycache__" not in folder)

    assert total <= 6_000_000


def test_the_smallest_configuration_makes_every_picture_but_the_screenshots(archives, tmp_path):
    result = run_script("docs/make_pictures.py", ["--archives", archives.directory, "--image-size", 32, "--epochs", 1,
                                                  "--snapshot-every", 2, "--no-screenshots", "--out", tmp_path / "out"],
                        cwd=tmp_path)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    made = sorted(os.listdir(tmp_path / "out"))
    assert made == sorted(["conv1_1.gif", "photo_conv1_2.gif", "photo_conv2_2.gif", "convolution_demo.png",
                           "pooling_demo.png", "pooling_photo.png", "explained_shiba_inu.png", "explained_samoyed.png",
                           "accuracy_curves.png"])
    for name in made:
        decodes(tmp_path / "out" / name)


def test_a_photos_folder_without_the_photos_is_one_line_and_exit_status_2(tmp_path):
    result = run_script("docs/make_pictures.py", ["--photos", tmp_path, "--no-screenshots"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (f"make_pictures.py: error: {tmp_path / 'images'} is missing: --photos needs images/ and "
                             f"annotations/list.txt, --archives the two archives\n")
