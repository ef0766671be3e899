"""filter_gif.py: GIFs of filters and feature maps from a real short training run's snapshots."""
import contextlib
import io
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import filter_gif as fg
import imFunctions as imf
from conftest import run_script
from helpers import (GAP, HEADER, checkpoint_tensor, exit_status, expected_grad_cam, grey_levels, numpy_conv_stack,
                     prepared_image, tile)

SNAPSHOT_STEPS = list(range(0, 19, 2))  # the short run snapshots every 2 of its 18 steps
SCALE = 12


def frames_of(path):
    return iio.imread(path, index=None, mode="RGB")


def snapshot_kernels(run, layer, step):
    weights = tf.train.load_checkpoint(str(run.checkpoint_dir / "snapshots" / f"filters-{step}"))
    return weights.get_tensor(f"{layer}/weights{layer[4:]}")


@pytest.fixture(scope="module")
def gifs(short_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("gifs")
    image = short_run.data_dir / "test" / "samoyed" / sorted(os.listdir(short_run.data_dir / "test" / "samoyed"))[0]
    assert fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(out), "--image", str(image)]) == 0
    return out, image


# --------------------------------------------------------------------------- filter GIFs

def test_one_gif_and_one_last_frame_png_per_layer(gifs):
    out, _ = gifs

    for layer in ("conv1_1", "conv1_2", "conv2_2"):
        assert len(frames_of(out / f"{layer}.gif")) == len(SNAPSHOT_STEPS)
        assert (out / f"{layer}.png").exists()


def test_frame_size_matches_the_grid_of_the_layers_filters(gifs):
    out, _ = gifs
    cell = 3 * SCALE + GAP

    assert frames_of(out / "conv1_1.gif").shape[1:] == (HEADER + 4 * cell + GAP, 8 * cell + GAP, 3)
    assert frames_of(out / "conv2_2.gif").shape[1:] == (HEADER + 8 * cell + GAP, 8 * cell + GAP, 3)


def test_first_and_last_frames_show_different_filters(gifs):
    for layer in ("conv1_1", "conv1_2", "conv2_2"):
        frames = frames_of(gifs[0] / f"{layer}.gif")[:, HEADER:]  # below the step number
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 2, layer


def test_the_gif_loops_and_holds_its_last_frame(gifs):
    with Image.open(gifs[0] / "conv1_1.gif") as gif:
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
        loop = gif.info["loop"]

    assert loop == 0
    assert durations[:-1] == [100] * (len(SNAPSHOT_STEPS) - 1) and durations[-1] == 2000


def test_conv1_1_kernels_are_drawn_in_rgb_with_one_scale_for_all_frames(short_run, gifs):
    last = np.asarray(Image.open(gifs[0] / "conv1_1.png"))
    all_kernels = [snapshot_kernels(short_run, "conv1_1", step) for step in SNAPSHOT_STEPS]
    low, high = min(k.min() for k in all_kernels), max(k.max() for k in all_kernels)

    expected = grey_levels(all_kernels[-1][..., 5], low, high)  # kernel 5: [3, 3, rgb]
    assert np.abs(tile(last, 5, 3, 3, SCALE, 8) - expected).max() <= 1


def test_deeper_kernels_are_grey_means_over_their_input_channels_on_one_scale(short_run, gifs):
    last = frames_of(gifs[0] / "conv1_2.gif")[-1]  # grey GIFs hold exact values
    means = [snapshot_kernels(short_run, "conv1_2", step).mean(axis=2) for step in SNAPSHOT_STEPS]
    low, high = min(m.min() for m in means), max(m.max() for m in means)

    pixels = tile(last, 7, 3, 3, SCALE, 8)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert np.abs(pixels[..., 0] - grey_levels(means[-1][..., 7], low, high)).max() <= 1


def test_input_channel_shows_that_channel_instead_of_the_mean(short_run, tmp_path):
    fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv2_2",
             "--input-channel", "5"])
    kernels = [snapshot_kernels(short_run, "conv2_2", step)[:, :, 5, :] for step in SNAPSHOT_STEPS]
    low, high = min(k.min() for k in kernels), max(k.max() for k in kernels)

    last = np.asarray(Image.open(tmp_path / "conv2_2.png"))
    assert np.abs(tile(last, 3, 3, 3, SCALE, 8)[..., 0] - grey_levels(kernels[-1][..., 3], low, high)).max() <= 1


def test_per_frame_norm_scales_each_frame_on_its_own(short_run, tmp_path):
    fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_2",
             "--per-frame-norm"])
    means = snapshot_kernels(short_run, "conv1_2", SNAPSHOT_STEPS[-1]).mean(axis=2)

    last = frames_of(tmp_path / "conv1_2.gif")[-1]
    expected = grey_levels(means[..., 7], means.min(), means.max())
    assert np.abs(tile(last, 7, 3, 3, SCALE, 8)[..., 0] - expected).max() <= 1


def test_every_k_takes_every_kth_snapshot(short_run, tmp_path):
    fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_1",
             "--every", "3"])

    assert len(frames_of(tmp_path / "conv1_1.gif")) == len(SNAPSHOT_STEPS[::3])


def copied_checkpoints(run, tmp_path):
    shutil.copytree(run.checkpoint_dir, tmp_path / "checkpoints")
    return tmp_path / "checkpoints"


def test_a_truncated_snapshot_is_skipped_and_the_rest_animated(short_run, tmp_path, capsys):
    checkpoints = copied_checkpoints(short_run, tmp_path)
    (checkpoints / "snapshots" / "filters-8.data-00000-of-00001").write_bytes(b"half")

    status = fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1"])

    assert status == 0
    assert len(frames_of(tmp_path / "out" / "conv1_1.gif")) == len(SNAPSHOT_STEPS) - 1
    assert "Warning: skipped 1 unreadable snapshot(s): filters-8" in capsys.readouterr().err


def test_a_snapshot_still_being_written_is_left_out(short_run, tmp_path):
    checkpoints = copied_checkpoints(short_run, tmp_path)
    os.remove(checkpoints / "snapshots" / "filters-18.index")  # TF writes the index last

    fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1"])

    assert len(frames_of(tmp_path / "out" / "conv1_1.gif")) == len(SNAPSHOT_STEPS) - 1


# --------------------------------------------------------------------------- feature maps

@pytest.fixture(scope="module")
def numpy_maps(short_run, gifs):
    """The image's feature maps at every snapshot, computed in numpy."""
    prepared = prepared_image(short_run, gifs[1])
    return [numpy_conv_stack(prepared, checkpoint_tensor(short_run.checkpoint_dir / "snapshots" / f"filters-{step}"))
            for step in SNAPSHOT_STEPS]


def most_active(maps):
    return list(np.argsort(-maps.sum(axis=(0, 1)))[:2])


def drawn_channels(png_path, maps_per_snapshot, channels, side, zoom):
    """Pairs of (drawn, expected) grey levels of the chosen channels in a feature GIF's last frame."""
    last = np.asarray(Image.open(png_path))
    low = min(m[..., channels].min() for m in maps_per_snapshot)
    high = max(m[..., channels].max() for m in maps_per_snapshot)
    return [(tile(last, index, side, side, zoom, len(channels))[..., 0].astype(int),
             grey_levels(maps_per_snapshot[-1][..., channel], low, high))
            for index, channel in enumerate(channels)]


def test_an_activation_frame_equals_the_feature_map_computed_from_that_snapshot(gifs, numpy_maps):
    out, image = gifs
    conv1_2 = [maps["conv1_2"] for maps in numpy_maps]

    for drawn, expected in drawn_channels(out / f"{image.stem}_conv1_2.png", conv1_2, most_active(conv1_2[-1]), 64, 1):
        assert np.abs(drawn - expected).max() <= 1
    assert len(frames_of(out / f"{image.stem}_conv1_2.gif")) == len(SNAPSHOT_STEPS)


def test_by_default_the_image_gifs_show_each_layers_two_most_active_channels_and_say_which(short_run, gifs,
                                                                                          numpy_maps, tmp_path,
                                                                                          capsys):
    fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_1",
             "--image", str(gifs[1])])

    chosen = {layer: most_active(numpy_maps[-1][layer]) for layer in ("conv1_2", "conv2_2")}
    said = [line for line in capsys.readouterr().out.splitlines() if "most active" in line]
    assert said == [f"Feature GIFs of {gifs[1].name} show the two most active channels at step 18: "
                    f"conv1_2 {chosen['conv1_2'][0]} and {chosen['conv1_2'][1]}, "
                    f"conv2_2 {chosen['conv2_2'][0]} and {chosen['conv2_2'][1]}"]


def test_the_default_image_gifs_are_never_black(gifs):
    out, image = gifs

    for layer, side in (("conv1_2", 64), ("conv2_2", 32)):
        last = np.asarray(Image.open(out / f"{image.stem}_{layer}.png"))
        for index in (0, 1):
            assert tile(last, index, side, side, 64 // side, 2).max() > 0, (layer, index)


@pytest.fixture(scope="module")
def dead_and_live(numpy_maps):
    """A conv2_2 channel that is zero everywhere on the image at the last snapshot, and a live one."""
    activity = numpy_maps[-1]["conv2_2"].max(axis=(0, 1))
    dead = np.flatnonzero(activity == 0)
    assert len(dead), "the short run is expected to leave some conv2_2 channel dead for this image"
    return int(dead[0]), int(np.argmax(activity))


@pytest.fixture(scope="module")
def chosen_channels_run(short_run, gifs, dead_and_live, tmp_path_factory):
    """filter_gif.py with --channels DEAD LIVE for conv2_2; its output folder and stderr."""
    out, stderr = tmp_path_factory.mktemp("chosen"), io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(out), "--layers",
                          "conv1_1", "--image", str(gifs[1]), "--feature-layers", "conv2_2",
                          "--channels", *map(str, dead_and_live)])
    assert status == 0
    return out, stderr.getvalue()


def test_channels_given_by_number_are_the_ones_shown(chosen_channels_run, gifs, numpy_maps, dead_and_live):
    conv2_2 = [maps["conv2_2"] for maps in numpy_maps]

    for drawn, expected in drawn_channels(chosen_channels_run[0] / f"{gifs[1].stem}_conv2_2.png", conv2_2,
                                          list(dead_and_live), 32, 2):
        assert np.abs(drawn - expected).max() <= 1


def test_a_channel_given_by_number_that_is_zero_everywhere_gets_a_warning(chosen_channels_run, gifs, dead_and_live):
    dead, _ = dead_and_live

    assert (f"Warning: conv2_2 channel(s) {dead} zero everywhere on {gifs[1].name} at step 18: black in the GIF\n"
            in chosen_channels_run[1])


def test_the_image_gifs_show_two_channels_side_by_side_at_the_image_size(gifs):
    out, image = gifs

    for layer in ("conv1_2", "conv2_2"):
        frames = frames_of(out / f"{image.stem}_{layer}.gif")
        assert frames.shape[1:] == (HEADER + 64 + 2 * GAP, 2 * (64 + GAP) + GAP, 3), layer


def test_image_writes_one_png_per_conv_and_pool_layer_with_every_channel(gifs):
    out, image = gifs
    expected = {"conv1_1": (32, 64, 1), "conv1_2": (32, 64, 1), "pool1": (32, 32, 1),
                "conv2_1": (64, 32, 1), "conv2_2": (64, 32, 1), "pool2": (64, 16, 2)}  # channels, side, zoom

    for layer, (channels, side, zoom) in expected.items():
        cell = side * zoom + GAP
        with Image.open(out / f"{image.stem}_features_{layer}.png") as png:
            assert png.size == (8 * cell + GAP, HEADER + channels // 8 * cell + GAP), layer


def test_the_per_layer_pngs_draw_each_channel_on_its_own_scale(gifs, numpy_maps):
    out, image = gifs
    conv1_2 = numpy_maps[-1]["conv1_2"]  # the latest full checkpoint is step 18, the last snapshot's weights
    png = np.asarray(Image.open(out / f"{image.stem}_features_conv1_2.png"))

    for channel in range(32):
        expected = grey_levels(conv1_2[..., channel], 0.0, conv1_2[..., channel].max() or 1.0)
        assert np.abs(tile(png, channel, 64, 64, 1, 8)[..., 0].astype(int) - expected).max() <= 1, channel


def test_without_a_full_checkpoint_the_feature_pngs_come_from_the_latest_snapshot(short_run, gifs, tmp_path, capsys):
    checkpoints = copied_checkpoints(short_run, tmp_path)
    for name in os.listdir(checkpoints):  # no full checkpoint left
        if name.startswith("model.ckpt-"):
            os.remove(checkpoints / name)
    (checkpoints / "snapshots" / "filters-18.data-00000-of-00001").write_bytes(b"half")

    status = fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1",
                      "--image", str(gifs[1])])

    assert status == 0
    assert "feature maps from the snapshot of step 16" in capsys.readouterr().err
    assert (tmp_path / "out" / f"{gifs[1].stem}_features_pool2.png").exists()


def test_channels_all_animates_a_grid_of_every_channel(short_run, gifs, tmp_path):
    _, image = gifs
    fg.main(["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path), "--layers", "conv1_1",
             "--image", str(image), "--feature-layers", "conv2_2", "--channels", "all"])

    frames = frames_of(tmp_path / f"{image.stem}_conv2_2.gif")
    cell = 64 + GAP  # 32-px maps zoomed to the 64-px image size
    assert frames.shape[1:] == (HEADER + 8 * cell + GAP, 8 * cell + GAP, 3)


# --------------------------------------------------------------------------- Grad-CAM

def test_image_writes_the_grad_cam_png_the_picture_beside_it_under_its_heat_map(short_run, gifs):
    out, image = gifs
    picture = imf.load_image(str(image), 64)
    heat = expected_grad_cam(short_run, image)[3]
    zoom = 224 // 64

    png = np.asarray(Image.open(out / f"{image.stem}_gradcam.png").convert("RGB"))

    assert png.shape == (HEADER + 64 * zoom + 2 * GAP, 2 * (64 * zoom + GAP) + GAP, 3)
    np.testing.assert_array_equal(tile(png, 0, 64, 64, zoom, 2), picture)
    jet = 255 * np.stack([np.clip(1.5 - np.abs(4 * heat - centre), 0, 1) for centre in (3, 2, 1)], axis=-1)
    overlay = 0.5 * picture + 0.5 * jet  # blue, cyan, yellow, red as the heat rises
    assert np.abs(tile(png, 1, 64, 64, zoom, 2) - overlay).max() <= 1


def test_without_a_full_checkpoint_there_is_no_grad_cam_and_one_warning(short_run, gifs, tmp_path, capsys):
    checkpoints = copied_checkpoints(short_run, tmp_path)
    for name in os.listdir(checkpoints):
        if name.startswith(("model.ckpt-", "checkpoint")):
            os.remove(checkpoints / name)

    status = fg.main(["--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "out"), "--layers", "conv1_1",
                      "--image", str(gifs[1])])

    assert status == 0 and not (tmp_path / "out" / f"{gifs[1].stem}_gradcam.png").exists()
    assert f"Warning: no Grad-CAM: no full checkpoint in {checkpoints}: " in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("flags, message", [
    (["--layers", "conv3_1"], "unknown --layers layer 'conv3_1' of the tutorial network; available: conv1_1, conv1_2, "
                              "conv2_1, conv2_2"),
    (["--feature-layers", "fc1"], "unknown --feature-layers layer 'fc1' of the tutorial network; available: conv1_1, "
                                  "conv1_2, pool1, conv2_1, conv2_2, pool2"),
    (["--channels", "32"], "--channels takes channel numbers 0..31 or 'all', got '32'"),
    (["--channels", "one"], "--channels takes channel numbers 0..31 or 'all', got 'one'"),
    (["--every", "0"], "--every must be at least 1, got 0"),
    (["--fps", "0"], "--fps must be between 0.01 and 50 (GIF delays are hundredths of a second, and browsers "
                     "slow anything faster than 50 down to 10), got 0"),
    (["--fps", "1e-9"], "--fps must be between 0.01 and 50 (GIF delays are hundredths of a second, and browsers "
                        "slow anything faster than 50 down to 10), got 1e-09"),
    (["--scale", "100000"], "--scale 100000 makes frames 2400018 px wide; a GIF can be at most 65535 px, so "
                            "--scale can be at most 2729"),
    (["--input-channel", "40"], "--input-channel must be in 0..31, got 40"),
])
def test_bad_flags_are_one_line_and_exit_2(flags, message, short_run, tmp_path, capsys):
    # Flags are checked by the parser, layers and channels against the run's network once it is read:
    # either way before anything is written.
    status = exit_status(fg.main, ["--checkpoint-dir", str(short_run.checkpoint_dir), "--out", str(tmp_path / "out"),
                                   *flags])

    assert status == 2
    assert capsys.readouterr().err.endswith(f"error: {message}\n")
    assert not (tmp_path / "out").exists()


def test_an_empty_checkpoint_folder_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()

    status = fg.main(["--checkpoint-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])

    assert status == 2
    assert capsys.readouterr().err == (f"filter_gif.py: error: no filter snapshots in "
                                       f"{tmp_path / 'empty' / 'snapshots'}: train first (python visualize_convnets.py)\n")


def test_feature_maps_from_the_command_line_show_no_tensorflow_start_up_noise(short_run, gifs, tmp_path):
    result = run_script("filter_gif.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--out", tmp_path / "out",
                                          "--layers", "conv1_1", "--image", gifs[1]], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_an_unreadable_image_is_one_line_and_exit_2(short_run, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")

    result = run_script("filter_gif.py", ["--checkpoint-dir", short_run.checkpoint_dir, "--out", tmp_path / "out",
                                          "--image", tmp_path / "broken.jpg"], cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == (f"filter_gif.py: error: cannot read image {tmp_path / 'broken.jpg'} (not an image, "
                             f"damaged, or over Pillow's decompression-bomb limit of 178956970 pixels)\n")
    assert not (tmp_path / "out").exists()
