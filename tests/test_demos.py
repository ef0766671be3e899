"""The tutorial's two demos in visualize_convnets.py: the article's filters, pooling examples and figures."""

import numpy as np
import pytest
import scipy.signal
from PIL import Image

import visualize_convnets as vc

POOLING_INPUT = [[1, 3, 2, 9], [7, 4, 1, 5], [8, 5, 2, 3], [4, 2, 1, 4]]


@pytest.fixture(scope="module")
def image(prepared_data_dir):
    return vc.demo_image(prepared_data_dir, "shiba_inu")


@pytest.fixture(scope="module")
def convolution(image, tmp_path_factory):
    return vc.demo_convolution(image, tmp_path_factory.mktemp("figures"))


@pytest.fixture(scope="module")
def pooling(tmp_path_factory):
    return vc.demo_pooling(tmp_path_factory.mktemp("figures"))


def drawn_cells(figure, title, shape, inset):
    """The grey level drawn for each value of a panel, read back from the PNG at ``inset`` in each cell."""
    left, top, cell = figure.boxes[title]
    with Image.open(figure.path) as png:
        pixels = np.asarray(png.convert("RGB"))
    rows, columns = np.indices(shape)
    return pixels[top + rows * cell + inset, left + columns * cell + inset]


def grey(values, low, high):
    return np.round(255 * (values - low) / (high - low)).astype(np.uint8)


# --------------------------------------------------------------------------- convolution

def test_the_filters_figure_shows_the_notebooks_four_7x7_filters(convolution):
    kernels = convolution[1].panels
    horizontal, vertical, outline = np.zeros((7, 7)), np.zeros((7, 7)), -np.ones((7, 7))
    horizontal[3, :] = 1
    vertical[:, 3] = 1
    outline[3, 3] = 8

    assert list(kernels) == ["Horizontal", "Vertical", "Identity", "Outline"]
    for name, expected in (("Horizontal", horizontal), ("Vertical", vertical), ("Identity", np.eye(7)),
                           ("Outline", outline)):
        np.testing.assert_array_equal(kernels[name], expected, err_msg=name)


def test_each_filter_convolves_the_grey_first_training_image_with_same_padding(image, convolution):
    panels = convolution[0].panels
    grey_image = np.mean(image, -1)

    assert list(panels) == ["grey input", "Horizontal", "Vertical", "Identity", "Outline"]
    np.testing.assert_array_equal(panels["grey input"], grey_image)
    for name, kernel in convolution[1].panels.items():
        expected = scipy.signal.correlate2d(grey_image, kernel, mode="same")  # zeros outside: SAME
        assert panels[name].shape == (224, 224)
        np.testing.assert_allclose(panels[name], expected, rtol=1e-5, atol=1e-2, err_msg=name)


def test_the_convolution_figure_draws_each_panel_at_224_px_on_its_own_grey_scale(convolution):
    figure = convolution[0]

    for title, panel in figure.panels.items():
        expected = grey(panel, panel.min(), panel.max())
        np.testing.assert_array_equal(drawn_cells(figure, title, panel.shape, 0), np.stack([expected] * 3, -1),
                                      err_msg=title)


def test_the_filters_figure_draws_every_kernel_cell(convolution):
    figure = convolution[1]

    for title, kernel in figure.panels.items():
        expected = grey(kernel, kernel.min(), kernel.max())
        np.testing.assert_array_equal(drawn_cells(figure, title, (7, 7), 3)[..., 0], expected, err_msg=title)


# --------------------------------------------------------------------------- pooling

def test_pooling_starts_from_the_articles_4x4_input(pooling):
    np.testing.assert_array_equal(pooling.panels["input 4x4"], POOLING_INPUT)


def test_a_2x2_kernel_at_stride_2_keeps_the_largest_of_each_quarter(pooling):
    np.testing.assert_array_equal(pooling.panels["2x2, stride 2"], [[7, 9], [8, 4]])


def test_a_3x3_kernel_at_stride_1_with_same_padding_keeps_the_size(pooling):
    np.testing.assert_array_equal(pooling.panels["3x3, stride 1, SAME"],
                                  [[7, 7, 9, 9], [8, 8, 9, 9], [8, 8, 5, 5], [8, 8, 5, 4]])


def test_a_3x3_kernel_at_stride_1_with_valid_padding_shrinks_to_2x2(pooling):
    np.testing.assert_array_equal(pooling.panels["3x3, stride 1, VALID"], [[8, 9], [8, 5]])


def test_the_pooling_figure_draws_every_panel_on_one_grey_scale(pooling):
    assert list(pooling.panels) == ["input 4x4", "2x2, stride 2", "3x3, stride 1, SAME", "3x3, stride 1, VALID"]
    for title, panel in pooling.panels.items():
        np.testing.assert_array_equal(drawn_cells(pooling, title, panel.shape, 3)[..., 0], grey(panel, 1, 9),
                                      err_msg=title)
