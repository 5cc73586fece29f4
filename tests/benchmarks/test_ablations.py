"""Tests for benchmarks/ablations.py: the rows' configs, the shared base run, the
JSON and Markdown output, a failing row reported in its cells, a missing nuclei
folder skipped; the training and evaluation run for two steps on a tiny config."""

import json

import numpy as np
import pytest

from benchmark_scripts import load_benchmark

from samples.shapes.backbone import light_backbone, light_backbone_shapes

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


abl = load_benchmark("ablations")
BASE = abl.Row("base", "base")
# Seconds per run on a CPU: the light backbone of the shapes sample, small heads.
TINY = {"BACKBONE": staticmethod(light_backbone),
        "COMPUTE_BACKBONE_SHAPE": staticmethod(light_backbone_shapes),
        "TOP_DOWN_PYRAMID_SIZE": 32, "FPN_CLASSIF_FC_LAYERS_SIZE": 32,
        "MASK_HEAD_CONV_CHANNELS": 16, "POST_NMS_ROIS_TRAINING": 50,
        "POST_NMS_ROIS_INFERENCE": 50, "DETECTION_MAX_INSTANCES": 10}


def _differences(a, b):
    sa, sb = abl.config_settings(a), abl.config_settings(b)
    assert sa.keys() == sb.keys()
    out = set()
    for name in sa:
        x, y = sa[name], sb[name]
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            same = np.shape(x) == np.shape(y) and np.array_equal(x, y)
        else:
            same = x == y
        if not same:
            out.add(name)
    return out


@pytest.mark.parametrize("dataset", abl.DATASETS)
@pytest.mark.parametrize("inference", [False, True])
def test_each_row_differs_from_the_base_in_exactly_its_change(dataset, inference):
    import mrcnn.config as config_module

    settings = abl.settings_for(dataset, steps=7, epochs=3, seed=5)
    base = abl.make_config(settings, BASE, inference=inference)
    # The CPU sizes' base: the samples' light backbone (a callable), the paper's choices.
    assert base.BACKBONE is light_backbone
    assert (base.ROI_POOLING_METHOD, base.ROI_ALIGN_AGGREGATION, base.MASK_LOSS,
            base.CLASS_AGNOSTIC_MASK, base.HEAD_ARCHITECTURE) == (
                "roi_align", "avg", "sigmoid", False, "fpn")
    assert (base.SEED, base.STEPS_PER_EPOCH, base.LEARNING_RATE_COSINE_EPOCHS) == (5, 7, 3)
    assert base.BATCH_SIZE == (1 if inference else settings["config"]["IMAGES_PER_GPU"])
    for row in abl.ROWS:
        changed = {name for name, _ in row.changes}
        if "HEAD_ARCHITECTURE" in changed and not hasattr(config_module.Config,
                                                          "HEAD_ARCHITECTURE"):
            with pytest.raises(ValueError, match="no setting HEAD_ARCHITECTURE"):
                abl.make_config(settings, row, inference=inference)
            continue
        config = abl.make_config(settings, row, inference=inference)
        diff = _differences(base, config)
        for name, value in row.changes:
            assert getattr(config, name) == value
        if "HEAD_ARCHITECTURE" in changed:
            # The head also takes its own defaults for what the base leaves unset.
            derived = set(getattr(config_module, "C4_DEFAULTS", {}))
            assert "HEAD_ARCHITECTURE" in diff and diff - changed <= derived, row.name
            assert not (diff - changed) & set(settings["config"])
        else:
            assert diff == changed, row.name


def test_rows_without_a_change_share_the_base_run():
    small = abl.settings_for("shapes")
    runs = {abl.run_name(r, small) for r in abl.ROWS}
    assert runs == {"base", "roi_pool", "roi_warp", "roialign_max", "softmax",
                    "class_agnostic", "r50_c4", "r50_fpn", "x50_fpn"}
    assert {r.name for r in abl.ROWS if abl.run_name(r, small) == "base"} == {
        "roialign_avg", "sigmoid", "class_specific"}
    # With --full the base is ResNet-50-FPN itself.
    full = abl.settings_for("shapes", full=True)
    assert {r.name for r in abl.ROWS if abl.run_name(r, full) == "base"} == {
        "roialign_avg", "sigmoid", "class_specific", "r50_fpn"}
    assert abl.effective_changes(abl.select_rows("r50_c4")[0], full) == (
        ("HEAD_ARCHITECTURE", "c4"),)
    assert [r.name for r in abl.select_rows("softmax, roi_pool")] == ["roi_pool", "softmax"]
    with pytest.raises(ValueError, match="unknown row.*bogus"):
        abl.select_rows("softmax,bogus")
    grouped = [name for _, names in abl.GROUPS for name in names]
    assert sorted(grouped) == sorted(abl.ROW_NAMES) and set(abl.PAPER) == set(abl.ROW_NAMES)


def test_backbone_rows_take_their_own_cpu_schedule():
    small = abl.settings_for("shapes")
    c4, softmax = abl.select_rows("r50_c4")[0], abl.select_rows("softmax")[0]
    own = abl.row_settings(small, c4)
    extra = abl.SIZES[("shapes", "small")]["backbones"]
    assert (own["steps"], own["epochs"]) == (extra["steps"], extra["epochs"])
    assert own["config"]["STEPS_PER_EPOCH"] == extra["steps"]
    assert own["config"]["IMAGES_PER_GPU"] == extra["config"]["IMAGES_PER_GPU"]
    assert abl.row_settings(small, softmax) is small
    # An explicit schedule (--steps / --epochs) is every row's; --full has one schedule.
    fixed = abl.settings_for("shapes", steps=4, epochs=1)
    assert abl.row_settings(fixed, c4) is fixed
    full = abl.settings_for("shapes", full=True)
    assert abl.row_settings(full, c4) is full


def test_median_step_ms_leaves_out_the_first_steps():
    assert abl.median_step_ms([9.0, 5.0, 4.0, 0.1, 0.2, 0.3]) == pytest.approx(200.0)
    assert abl.median_step_ms([9.0, 0.1, 0.3]) == pytest.approx(200.0)  # few steps: drop one
    assert abl.median_step_ms([9.0]) is None


def test_settings_validate_the_schedule():
    with pytest.raises(ValueError, match="--steps / --epochs"):
        abl.settings_for("shapes", steps=0)
    with pytest.raises(ValueError, match="unknown data set 'coco'"):
        abl.settings_for("coco")
    full = abl.settings_for("nuclei", full=True)
    assert full["config"]["IMAGE_MIN_DIM"] > abl.settings_for("nuclei")["config"]["IMAGE_MIN_DIM"]


@pytest.mark.slow
def test_table_trains_evaluates_and_reports_each_row(tmp_path):
    # A row whose change is invalid: its error is reported, the others run.
    bad = abl.Row("bad_mask_loss", "bad", (("MASK_LOSS", "bogus"),))
    rows = abl.select_rows("roialign_avg,sigmoid") + [bad]
    out = str(tmp_path / "table.json")
    messages = []
    results = abl.run_table(["shapes", "nuclei"], rows, steps=3, epochs=1, overrides=TINY,
                            out=out, nuclei_dir=str(tmp_path / "no_nuclei"), log=messages.append,
                            train_images=8, val_images=4)
    shapes = results["datasets"]["shapes"]
    assert shapes["rows"] == {"roialign_avg": "base", "sigmoid": "base",
                              "bad_mask_loss": "bad_mask_loss"}
    assert shapes["runs"]["base"]["rows"] == ["roialign_avg", "sigmoid"]
    bad_run = shapes["runs"][shapes["rows"]["bad_mask_loss"]]
    assert "MASK_LOSS" in bad_run["error"] and "bogus" in bad_run["error"]
    assert len(shapes["runs"]) == 2  # the base trained once
    run = shapes["runs"]["base"]
    assert "error" not in run, run
    assert run["steps"] == 3 and run["step_ms"] > 0 and run["wall_s"] > 0
    assert np.isfinite(run["last_loss"])
    for metric in ("AP", "AP50", "AP75"):
        assert 0.0 <= run["segm"][metric] <= 1.0
    nuclei = results["datasets"]["nuclei"]
    assert nuclei["runs"] == {} and "nuclei data not found" in nuclei["skipped"]
    assert any("skipped" in m for m in messages)

    with open(out) as f:
        saved = json.load(f)
    assert saved["datasets"]["shapes"]["rows"] == shapes["rows"]
    assert saved["datasets"]["shapes"]["runs"]["base"]["segm"]["AP"] == pytest.approx(
        shapes["runs"]["base"]["segm"]["AP"])
    with open(str(tmp_path / "table.md")) as f:
        markdown = f.read()
    header = [line for line in markdown.splitlines() if line.startswith("| group")]
    assert header == ["| " + " | ".join(abl.COLUMNS) + " |"]
    lines = {cells["row"]: cells for cells in abl.table_rows(shapes)}
    assert set(lines) == {"RoIAlign, avg", "sigmoid (per-class binary)"}
    assert lines["sigmoid (per-class binary)"]["group"] == "mask loss (Table 2b)"
    base_cells = [lines["RoIAlign, avg"][c] for c in ("mask AP", "AP50", "AP75", "ms / step")]
    assert base_cells == [lines["sigmoid (per-class binary)"][c]
                          for c in ("mask AP", "AP50", "AP75", "ms / step")]
    assert float(base_cells[0]) == pytest.approx(100 * shapes["runs"]["base"]["segm"]["AP"],
                                                 abs=0.05)
    assert (lines["RoIAlign, avg"]["paper AP50"], lines["RoIAlign, avg"]["paper AP75"]) == (
        "51.2", "31.5")
    assert "skipped: nuclei data not found" in markdown
