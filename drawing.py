"""Pictures: one uint8 scaler, one grid, one title strip, one PNG and one GIF writer.

Every picture the project makes is drawn here: the demos' figures, TensorBoard's probe
images, the filter, feature-map and feature-visualisation GIFs, the explanations. Files are encoded
in memory and written through files.write_bytes_atomically: never a half-written picture.
"""
import collections
import io
import math
import os

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

import files

GAP = 2  # white pixels between the tiles of every grid drawn (TensorBoard images, GIFs)
HEADER = 14  # pixels above a titled frame for its text (a layer's name and global step)
TITLE_HEIGHT = 26  # pixels above each panel of a figure for its title
PANEL_GAP = 16

# A written figure: its file, the arrays drawn in it by title, and where each one sits.
Figure = collections.namedtuple("Figure", "path panels boxes")


def to_uint8(values, low, high):
    """``values`` mapped linearly onto 0 (``low``) .. 255 (``high``), rounded, clipped outside."""
    return np.uint8(np.rint(np.clip(255.0 * (values - low) / max(high - low, 1e-12), 0, 255)))


def tile_grid(tiles, zoom, columns):
    """[n, h, w, c] uint8 tiles zoomed by nearest neighbour into a grid with white gaps; RGB out."""
    count, height, width, _ = tiles.shape
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    zoomed = tiles.repeat(zoom, axis=1).repeat(zoom, axis=2)
    if zoomed.shape[-1] == 1:
        zoomed = zoomed.repeat(3, axis=-1)
    cell_h, cell_w = height * zoom + GAP, width * zoom + GAP
    grid = np.full((rows * cell_h + GAP, columns * cell_w + GAP, 3), 255, np.uint8)
    for index in range(count):
        top, left = GAP + (index // columns) * cell_h, GAP + (index % columns) * cell_w
        grid[top:top + height * zoom, left:left + width * zoom] = zoomed[index]
    return grid


def feature_grid(maps, tile=64, columns=8):
    """[h, w, channels] feature maps as one grey uint8 grid (channel_tiles), each map shrunk to at most
    ``tile`` pixels so a 224-px run's event files stay small."""
    side = min(tile, maps.shape[0])
    shrunk = [np.asarray(Image.fromarray(picture).resize((side, side), Image.BOX)) for picture in channel_tiles(maps)]
    return tile_grid(np.stack(shrunk)[..., None], 1, columns)[..., 0]


def channel_tiles(maps):
    """[h, w, channels] activations (ReLU or pool outputs, so 0 is the floor) as [channels, h, w] uint8,
    each channel on its own scale: 0 black, that channel's own largest value white.

    Own scales rather than one for the layer: on real photos a few channels run several times
    stronger than the rest, and one scale spanning them all leaves the others nearly black, so
    TensorBoard's probe grids and the feature PNGs showed a handful of bright tiles. A channel that
    is zero everywhere stays black, so a dead channel still reads as dead; what is lost is the
    comparison of strength between tiles, which brightness on one scale could not show anyway.
    (The GIFs keep one scale over all their frames: there change through training is the point.)
    """
    return np.stack([to_uint8(maps[..., channel], 0.0, float(maps[..., channel].max()) or 1.0)
                     for channel in range(maps.shape[-1])])


def titled(grid, text):
    """``grid`` under a white strip of HEADER pixels holding ``text`` in black."""
    frame = Image.new("RGB", (grid.shape[1], grid.shape[0] + HEADER), "white")
    frame.paste(Image.fromarray(grid), (0, HEADER))
    ImageDraw.Draw(frame).text((GAP, 1), text, fill="black")
    return np.asarray(frame)


# --------------------------------------------------------------------------- figures

def save_panels(panels, path, cell=None, numbers=False, shared_scale=False):
    """``{title: 2-D array}`` drawn side by side in grey under their titles; returns the Figure.

    Each panel is scaled to [0, 255] on its own unless ``shared_scale``; ``cell`` pixels a
    value (default: about 224 px a panel); ``numbers`` writes each value on its cell, black
    on light cells and white on dark ones so every one reads. ``boxes`` holds each panel's
    (left, top, cell) in the figure.
    """
    all_values = np.concatenate([np.ravel(panel) for panel in panels.values()])
    tiles, scales = {}, {}
    for title, panel in panels.items():
        low, high = (all_values.min(), all_values.max()) if shared_scale else (panel.min(), panel.max())
        grey = to_uint8(panel, low, high)
        scale = scales[title] = cell or max(1, 224 // max(panel.shape))
        tile = Image.fromarray(grey).resize((panel.shape[1] * scale, panel.shape[0] * scale), Image.NEAREST)
        tiles[title] = tile.convert("RGB")
        if numbers:
            draw_numbers(tiles[title], panel, grey, scale)
    figure, lefts = panel_row(tiles)
    write_png(path, figure)
    return Figure(path, dict(panels), {title: (lefts[title], TITLE_HEIGHT, scales[title]) for title in panels})


def titled_panels(panels, zoom):
    """``{title: uint8 [h, w, 3]}`` zoomed by nearest neighbour and drawn side by side under their titles."""
    tiles = {title: Image.fromarray(picture).resize((picture.shape[1] * zoom, picture.shape[0] * zoom), Image.NEAREST)
             for title, picture in panels.items()}
    return panel_row(tiles)[0]


def panel_row(tiles):
    """``{title: PIL RGB image}`` left to right, PANEL_GAP apart, each under its title in a TITLE_HEIGHT strip (a
    title wider than its tile widens its column); returns the uint8 figure and each tile's left edge."""
    title_font = ImageFont.load_default(size=15)
    lefts, left = {}, 0
    for title, tile in tiles.items():
        lefts[title] = left
        left += max(tile.width, int(title_font.getlength(title)) + 4) + PANEL_GAP
    figure = Image.new("RGB", (left - PANEL_GAP, TITLE_HEIGHT + max(tile.height for tile in tiles.values())), "white")
    draw = ImageDraw.Draw(figure)
    for title, tile in tiles.items():
        figure.paste(tile, (lefts[title], TITLE_HEIGHT))
        draw.text((lefts[title], 4), title, fill="black", font=title_font)
    return np.asarray(figure), lefts


def heat_colours(heat):
    """[h, w] values in [0, 1] as [h, w, 3] jet colours in 0..255: blue, cyan, yellow, red."""
    return 255 * np.stack([np.clip(1.5 - np.abs(4 * heat - centre), 0, 1) for centre in (3, 2, 1)], axis=-1)


def overlay_heat(picture, heat):
    """A uint8 picture half under the jet colours of ``heat`` ([h, w] in [0, 1])."""
    return np.uint8(np.round(0.5 * picture + 0.5 * heat_colours(heat)))


def draw_numbers(tile, panel, grey, scale):
    """Each value centred on its cell of the zoomed tile, in the colour that contrasts with the cell;
    a grey outline per cell keeps white cells apart from each other and from the page."""
    font = ImageFont.load_default(size=max(10, scale * 2 // 5))
    draw = ImageDraw.Draw(tile)
    for (row, column), value in np.ndenumerate(panel):
        left, top = column * scale, row * scale
        draw.rectangle((left, top, left + scale - 1, top + scale - 1), outline=(150, 150, 150))
        colour = "black" if grey[row, column] >= 128 else "white"
        draw.text((left + scale / 2, top + scale / 2), f"{value:g}", fill=colour, font=font, anchor="mm")


# --------------------------------------------------------------------------- files

def encode_png(frame):
    """A uint8 [h, w] or [h, w, 3] array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path, frame):
    """One uint8 frame as a PNG, written through a temporary name: a full disk is one line."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    files.write_bytes_atomically(path, encode_png(frame))


def write_gif(path, frames, fps, hold_last_ms=2000):
    """uint8 frames as a looping GIF, encoded in memory and renamed into place: never a broken GIF.

    imageio takes ``duration`` in ms, not ``fps``.
    """
    frame_ms = 1000.0 / fps
    durations = [frame_ms] * (len(frames) - 1) + [max(frame_ms, hold_last_ms)]
    stack = np.stack(frames)
    if (stack[..., 0] == stack[..., 1]).all() and (stack[..., 1] == stack[..., 2]).all():
        stack = stack[..., 0]  # grey frames need no palette search: 3x faster to write
    # One frame (a run's first snapshot) takes its duration as a number: Pillow refuses a list of one.
    duration = durations if len(durations) > 1 else durations[0]
    files.write_bytes_atomically(path, iio.imwrite("<bytes>", stack, extension=".gif", duration=duration, loop=0))
