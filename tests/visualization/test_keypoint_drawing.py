"""Tests of mrcnn.visualization.keypoints: which keypoints and skeleton lines are drawn."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from mrcnn import visualize
from mrcnn.visualization.keypoints import drawn_keypoints

SKELETON = ((0, 1), (1, 2), (0, 2))


def markers(ax):
    return [line for line in ax.lines if line.get_linestyle() == "None"]


def edges(ax):
    return [line for line in ax.lines if line.get_linestyle() != "None"]


def test_ground_truth_draws_visible_keypoints_and_their_edges_only():
    image = np.zeros((40, 50, 3), np.uint8)
    points = np.array([[[10.5, 5.5, 2], [20.0, 8.0, 2], [30.0, 9.0, 1]],    # one occluded
                       [[5.0, 30.0, 2], [0, 0, 0], [15.0, 35.0, 2]]])      # one unlabelled
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    out = visualize.display_keypoints(image, [[0, 5, 12, 35], [25, 0, 40, 20]], points,
                                      SKELETON, visibility=True, ax=ax)
    assert out is None
    assert len(markers(ax)) == 4                      # 2 + 2 visible
    assert len(edges(ax)) == 2                        # (0, 1) of the first, (0, 2) of the second
    assert len(ax.patches) == 2                       # the boxes
    # A keypoint at a pixel's centre is drawn on that pixel (imshow: centre at c).
    first = markers(ax)[0]
    assert (first.get_xdata()[0], first.get_ydata()[0]) == (10.0, 5.0)


def test_detections_use_the_score_threshold_and_a_new_figure():
    image = np.zeros((20, 20, 3), np.uint8)
    points = np.array([[[2.0, 2.0, 0.9], [4.0, 4.0, 0.01], [6.0, 6.0, 0.3]]])
    assert drawn_keypoints(points).tolist() == [[True, False, True]]
    fig = visualize.display_keypoints(image, None, points, SKELETON, min_score=0.2)
    ax = fig.axes[0]
    assert len(markers(ax)) == 2 and len(edges(ax)) == 1 and not ax.patches
    fig = visualize.display_keypoints(image, None, points, min_score=0.95)
    assert not fig.axes[0].lines


def test_bad_input_is_named():
    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match=r"keypoints must be \[N, K, 3\]"):
        visualize.display_keypoints(image, None, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"skeleton edge \(0, 3\)"):
        visualize.display_keypoints(image, None, np.zeros((1, 3, 3)), [(0, 3)])
    with pytest.raises(ValueError, match="1 boxes for 2 instances"):
        visualize.display_keypoints(image, [[0, 0, 1, 1]], np.zeros((2, 3, 3)))
