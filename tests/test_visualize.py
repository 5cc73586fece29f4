"""Tests for mrcnn.visualize / mrcnn.visualization.stats: figures are rendered to PNG
(Agg, fixed dpi) and the pixels are checked where the drawing should put them."""

import colorsys

import matplotlib
import numpy as np
import pytest
import skimage.io
from matplotlib.figure import Figure

from mrcnn import visualize
from mrcnn.visualization import stats as visualize_stats

DPI = 100


def render(fig, tmp_path, name="fig.png"):
    """Save ``fig`` as a PNG at DPI and read it back as uint8 RGB [rows, cols, 3]."""
    fig.set_dpi(DPI)
    path = tmp_path / name
    fig.savefig(path, dpi=DPI)
    return skimage.io.imread(path)[:, :, :3]


def pixel_of(ax, png, row, col):
    """PNG colour at the centre of image pixel (row, col) drawn by imshow in ``ax``."""
    x, y = ax.transData.transform((col, row))
    return png[int(png.shape[0] - y), int(x)].astype(int)


def data_coords(ax, png, rows, cols):
    """PNG pixel positions -> data (x, y) coordinates of ``ax``."""
    display = np.stack([cols + 0.5, png.shape[0] - rows - 0.5], axis=1)
    return ax.transData.inverted().transform(display)


# ----------------------------------------------------------------------------- colours
def test_random_colors_deterministic_with_seed_and_evenly_spaced_hues():
    a = visualize.random_colors(7, seed=3)
    b = visualize.random_colors(7, seed=3)
    assert a == b
    assert visualize.random_colors(7, seed=4) != a  # another permutation of the same set
    expected = {tuple(colorsys.hsv_to_rgb(i / 7, 1.0, 1.0)) for i in range(7)}
    assert {tuple(round(v, 9) for v in c) for c in a} == \
        {tuple(round(v, 9) for v in c) for c in expected}
    dim = visualize.random_colors(5, bright=False, seed=0)
    assert all(max(c) == pytest.approx(0.7) for c in dim)
    assert visualize.random_colors(0) == []


# ----------------------------------------------------------------------------- pixels
def test_apply_mask_blends_inside_only_and_returns_new_array():
    image = np.full((4, 5, 3), 100, dtype=np.uint8)
    image[0, 0] = (10, 20, 30)
    mask = np.zeros((4, 5), dtype=bool)
    mask[1:3, 2:4] = True
    out = visualize.apply_mask(image, mask, (1.0, 0.5, 0.0), alpha=0.4)
    # 100 * 0.6 + 0.4 * 255 * c  for c = 1, 0.5, 0
    assert out.dtype == np.uint8
    assert (out[1:3, 2:4] == (162, 111, 60)).all()
    outside = ~mask
    assert (out[outside] == image[outside]).all()
    assert (image == 100).sum() == 4 * 5 * 3 - 3  # input untouched

    as_float = visualize.apply_mask(image.astype(np.float32), mask, (1.0, 0.5, 0.0), 0.4)
    assert as_float.dtype == np.float32
    assert as_float[1, 2] == pytest.approx((162.0, 111.0, 60.0))

    with pytest.raises(ValueError, match="mask shape"):
        visualize.apply_mask(image, mask[:3], (1, 0, 0))


def test_draw_box_outlines_border_pixels_of_exclusive_box():
    image = np.zeros((8, 8), dtype=np.int32)
    out = visualize.draw_box(image, (2, 1, 6, 5), 7)
    expected = np.zeros((8, 8), dtype=np.int32)
    expected[2, 1:5] = expected[5, 1:5] = 7
    expected[2:6, 1] = expected[2:6, 4] = 7
    assert (out == expected).all()
    assert (out == 7).sum() == 12
    assert not image.any()
    rgb = visualize.draw_box(np.zeros((4, 4, 3), np.uint8), (0, 0, 4, 4), (255, 0, 0))
    assert (rgb[0, :, 0] == 255).all() and (rgb[1:3, 1:3] == 0).all()


# ----------------------------------------------------------------------------- instances
def _one_instance_scene():
    image = np.full((64, 64, 3), 81, dtype=np.uint8)
    masks = np.zeros((64, 64, 1), dtype=bool)
    masks[10:30, 12:36, 0] = True
    boxes = np.array([[10, 12, 30, 36]])
    return image, masks, boxes


def test_display_instances_mask_colour_inside_mask_only(tmp_path):
    image, masks, boxes = _one_instance_scene()
    fig = visualize.display_instances(image, boxes, masks, np.array([1]), ["BG", "thing"],
                                      figsize=(5, 5), show_bbox=False, captions=[""],
                                      colors=[(1.0, 0.0, 0.0)])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    png = render(fig, tmp_path)
    blended = np.array([np.rint(0.5 * 81 + 0.5 * 255), np.rint(0.5 * 81), np.rint(0.5 * 81)])
    # Pixels away from the mask outline (drawn on the mask's border).
    inner = np.zeros((64, 64), dtype=bool)
    inner[11:29, 13:35] = True
    outer = np.ones((64, 64), dtype=bool)
    outer[9:31, 11:37] = False
    for r in range(64):
        for c in range(64):
            got = pixel_of(ax, png, r, c)
            if inner[r, c]:
                assert np.abs(got - blended).max() <= 2, (r, c, got)
            elif outer[r, c]:
                assert np.abs(got - 81).max() <= 2, (r, c, got)


def test_display_instances_box_drawn_on_the_box_pixels_border(tmp_path):
    image, masks, boxes = _one_instance_scene()
    fig = visualize.display_instances(image, boxes, masks, np.array([1]), ["BG", "thing"],
                                      figsize=(5, 5), show_mask=False, captions=[""],
                                      colors=[(0.0, 0.0, 1.0)])
    ax = fig.axes[0]
    png = render(fig, tmp_path).astype(int)
    blue = (png[:, :, 2] > 150) & (png[:, :, 0] < 60)
    rows, cols = np.nonzero(blue)
    assert len(rows) > 50
    xy = data_coords(ax, png, rows, cols)
    # The rectangle's edges lie on pixel borders: x = 11.5 / 35.5, y = 9.5 / 29.5.
    near_x = np.minimum(np.abs(xy[:, 0] - 11.5), np.abs(xy[:, 0] - 35.5)) < 0.8
    near_y = np.minimum(np.abs(xy[:, 1] - 9.5), np.abs(xy[:, 1] - 29.5)) < 0.8
    inside_x = (xy[:, 0] > 10.7) & (xy[:, 0] < 36.3)
    inside_y = (xy[:, 1] > 8.7) & (xy[:, 1] < 30.3)
    assert np.all((near_x & inside_y) | (near_y & inside_x))
    for edge in (np.abs(xy[:, 0] - 11.5) < 0.8, np.abs(xy[:, 0] - 35.5) < 0.8,
                 np.abs(xy[:, 1] - 9.5) < 0.8, np.abs(xy[:, 1] - 29.5) < 0.8):
        assert edge.sum() > 5  # every side is drawn
    # Inside the box the image is untouched (no mask drawn).
    assert np.abs(pixel_of(ax, png, 20, 24) - 81).max() <= 2


def test_display_instances_captions_scores_and_save_path(tmp_path):
    image, masks, boxes = _one_instance_scene()
    path = tmp_path / "instances.png"
    fig = visualize.display_instances(image, boxes, masks, np.array([1]), ["BG", "thing"],
                                      scores=np.array([0.875]), title="T", figsize=(3, 3),
                                      save_path=str(path))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["thing 0.875"]
    assert fig.axes[0].get_title() == "T"
    assert path.exists() and path.stat().st_size > 1000


def test_display_instances_draws_into_given_axes():
    image, masks, boxes = _one_instance_scene()
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    returned = visualize.display_instances(image, boxes, masks, [1], ["BG", "a"], ax=ax2)
    assert returned is None   # the caller's figure: not returned, so not shown twice
    assert len(ax2.images) == 1 and len(ax1.images) == 0


def test_display_instances_with_no_instances(tmp_path, capsys):
    image = np.full((32, 48, 3), 200, dtype=np.uint8)
    fig = visualize.display_instances(image, np.zeros((0, 4)), np.zeros((32, 48, 0), bool),
                                      np.zeros((0,), np.int32), ["BG"], figsize=(4, 3))
    assert "No instances to display" in capsys.readouterr().out
    ax = fig.axes[0]
    assert "No instances to display" in ax.get_title()
    png = render(fig, tmp_path)
    assert np.abs(pixel_of(ax, png, 16, 24) - 200).max() <= 1
    assert not ax.patches and not ax.texts


def test_display_instances_rejects_inconsistent_inputs():
    image, masks, boxes = _one_instance_scene()
    with pytest.raises(ValueError, match="class_ids"):
        visualize.display_instances(image, boxes, masks, [1, 2], ["BG", "a", "b"])
    with pytest.raises(ValueError, match="masks"):
        visualize.display_instances(image, boxes, masks[:10], [1], ["BG", "a"])
    with pytest.raises(ValueError, match="scores"):
        visualize.display_instances(image, boxes, masks, [1], ["BG", "a"], scores=[0.1, 0.2])


def test_no_pyplot_figures_leak():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    image, masks, boxes = _one_instance_scene()
    visualize.display_instances(image, boxes, masks, [1], ["BG", "a"])
    visualize.display_images([image, image[:, :, 0]], titles=["a", "b"])
    visualize.plot_precision_recall(0.5, [1, 0.5], [0.5, 1])
    assert plt.get_fignums() == before
    assert matplotlib.get_backend()  # importing visualize did not break backends


# ----------------------------------------------------------------------------- grids
def test_display_images_grid_and_titles():
    images = [np.zeros((8, 8, 3)), np.ones((8, 8)), np.zeros((8, 8, 3)), np.zeros((8, 8))]
    fig = visualize.display_images(images, titles=["a", "b", "c", "d"], cols=3)
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c", "d"]
    assert fig.axes[3].get_subplotspec().rowspan.start == 1  # second row
    with pytest.raises(ValueError, match="titles"):
        visualize.display_images(images, titles=["a"])


def test_display_top_masks_orders_classes_by_area():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20, 3), dtype=bool)
    mask[0:2, 0:2, 0] = True     # class 1, area 4
    mask[5:15, 5:15, 1] = True   # class 2, area 100
    mask[0:5, 10:20, 2] = True   # class 1, area 50 -> class 1 total 54
    fig = visualize.display_top_masks(image, mask, np.array([1, 2, 1]), ["BG", "one", "two"],
                                      limit=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["H x W=20x20", "two", "one", "-"]
    class_one = fig.axes[2].images[0].get_array()
    assert class_one[0, 0] == 1 and class_one[0, 15] == 2 and class_one[10, 0] == 0


# ----------------------------------------------------------------------------- boxes / RoIs
def test_draw_boxes_solid_refined_box_position(tmp_path):
    image = np.full((40, 40, 3), 60, dtype=np.uint8)
    boxes = np.array([[5, 5, 15, 15]])
    refined = np.array([[20, 22, 35, 38]])
    fig = visualize.draw_boxes(image, boxes=boxes, refined_boxes=refined, captions=["c"],
                               visibilities=[2], title="boxes")
    ax = fig.axes[0]
    assert ax.get_title() == "boxes"
    assert [t.get_text() for t in ax.texts] == ["c"]
    rects = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
    corners = sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height()) for r in rects)
    assert corners == [(4.5, 4.5, 10, 10), (21.5, 19.5, 16, 15)]
    with pytest.raises(ValueError, match="refined_boxes"):
        visualize.draw_boxes(image, boxes=boxes, refined_boxes=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="give boxes"):
        visualize.draw_boxes(image)


def test_draw_rois_pastes_positive_masks(tmp_path, capsys):
    image = np.full((32, 32, 3), 50, dtype=np.uint8)
    rois = np.array([[4, 4, 12, 12], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=float)
    masks = np.ones((3, 7, 7), dtype=np.float32)
    fig = visualize.draw_rois(image, rois, rois, masks, np.array([0, 2, 0]),
                              ["BG", "a", "b"], limit=2)
    out = capsys.readouterr().out
    assert "Positive ROIs: 1" in out and "Negative ROIs: 2" in out
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["b"]
    shown = ax.images[0].get_array()
    assert (np.asarray(shown[25, 25]) != 50).any()     # positive RoI mask pasted
    assert (np.asarray(shown[8, 8]) == 50).all()       # negative RoI: no mask


def test_display_differences_captions_score_and_iou():
    image = np.zeros((30, 30, 3), dtype=np.uint8)
    gt_mask = np.zeros((30, 30, 1), dtype=bool)
    gt_mask[5:15, 5:15] = True
    pred_mask = np.zeros((30, 30, 2), dtype=bool)
    pred_mask[5:15, 5:10, 0] = True   # IoU 0.5 with the gt
    pred_mask[20:25, 20:25, 1] = True  # no overlap
    # Predictions given in increasing score order: captions follow score order.
    fig = visualize.display_differences(
        image, np.array([[5, 5, 15, 15]]), np.array([1]), gt_mask,
        np.array([[20, 20, 25, 25], [5, 5, 15, 10]]), np.array([1, 1]),
        np.array([0.6, 0.9]), pred_mask[..., ::-1], ["BG", "a"], iou_threshold=0.5)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.90 / 0.50", "0.60 / 0.00"]


# ----------------------------------------------------------------------------- stats
def test_table_text_and_html():
    table = [["name", "value"], ["alpha", 1], ["b<c", 22.5]]
    assert visualize.table_to_text(table) == (
        "name   value\n"
        "-----  -----\n"
        "alpha  1\n"
        "b<c    22.5")
    html = visualize.table_to_html(table)
    assert "<th style='text-align:left'>name</th>" in html
    assert "b&lt;c" in html and "b<c" not in html


def test_display_table_prints_text_outside_notebooks(capsys):
    rendered = visualize.display_table([["x", "y"], [1, 2]])
    out = capsys.readouterr().out
    assert out.strip() == rendered
    assert rendered.splitlines()[2] == "1  2"


class _FakeVariable:
    def __init__(self, path, values):
        self.path, self._values = path, np.asarray(values, dtype=np.float32)

    def numpy(self):
        return self._values


class _FakeModel:
    def __init__(self, weights):
        self.keras_model = type("K", (), {"weights": weights})()


def test_display_weight_stats_flags_suspicious_weights(capsys):
    model = _FakeModel([
        _FakeVariable("conv1/kernel", [[1.0, -2.0], [0.5, 0.5]]),
        _FakeVariable("conv2/kernel", np.zeros((3, 3))),
        _FakeVariable("conv2/bias", np.zeros(3)),
        _FakeVariable("conv3/kernel", [1.0, np.nan]),
        _FakeVariable("fc/kernel", [5000.0, 1.0]),
    ])
    rows = visualize.display_weight_stats(model)
    assert rows[0][0] == "WEIGHT NAME"
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["conv1/kernel"][1:5] == ["(2, 2)", "  -2.0000", "  +1.0000",
                                           f"{np.std([1, -2, 0.5, 0.5]):+9.4f}"]
    assert by_name["conv1/kernel"][5] == ""
    assert "dead" in by_name["conv2/kernel"][5]
    assert by_name["conv2/bias"][5] == ""
    assert "NaN" in by_name["conv3/kernel"][5]
    assert "Overflow" in by_name["fc/kernel"][5]
    assert "conv2/kernel" in capsys.readouterr().out
    with pytest.raises(ValueError, match="keras"):
        visualize_stats.weight_stats_table(object())


def test_plot_precision_recall_and_overlaps():
    fig = visualize.plot_precision_recall(0.625, [1.0, 1.0, 0.5], [0.0, 0.5, 1.0])
    ax = fig.axes[0]
    assert ax.get_title() == "Precision-Recall Curve. AP@50 = 0.625"
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0]
    assert list(line.get_ydata()) == [1.0, 1.0, 0.5]

    overlaps = np.array([[0.9, 0.0], [0.1, 0.7], [0.6, 0.0]])
    fig = visualize.plot_overlaps([1, 2], [1, 2, 2], [0.9, 0.8, 0.7], overlaps,
                                  ["BG", "a", "b"], threshold=0.5)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0.900\nmatch", "0.000\n", "0.100\n", "0.700\nmatch",
                     "0.600\nwrong", "0.000\n"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a (0.90)", "b (0.80)", "b (0.70)"]


def test_figures_show_once_in_notebooks(monkeypatch):
    """Inside Jupyter a created figure is shown at once (old plt.show() behaviour) and
    not a second time when it is also the cell's result; an explicit display works."""
    import IPython.display

    shown = []
    monkeypatch.setattr(visualize_stats, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    image, masks, boxes = _one_instance_scene()
    fig = visualize.display_instances(image, boxes, masks, [1], ["BG", "a"], figsize=(2, 2))
    assert isinstance(fig, visualize_stats.NotebookFigure)
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"
    fig._ipython_display_()  # IPython's displayhook on the cell result
    assert len(shown) == 1
    fig._ipython_display_()  # a later, explicit display(fig)
    assert len(shown) == 2
    # Drawing into a caller's axes shows nothing by itself.
    own = Figure()
    visualize.display_instances(image, boxes, masks, [1], ["BG", "a"], ax=own.add_subplot())
    assert len(shown) == 2


def test_display_weight_stats_reads_real_keras_variables(capsys):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
    model.get_layer("fc").kernel.assign(np.zeros((3, 2), np.float32))
    rows = visualize.display_weight_stats(model)
    names = [r[0] for r in rows[1:]]
    assert len(names) == 2
    assert names[0].endswith("fc/kernel") and names[1].endswith("fc/bias")
    assert rows[1][1] == "(3, 2)" and "dead" in rows[1][5]
    assert rows[2][5] == ""  # an all-zero bias is normal
