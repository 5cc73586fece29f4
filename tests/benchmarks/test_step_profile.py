"""Tests for benchmarks/step_profile.py: op self-times from nested trace events,
the stage of an op name (layers, gradients, frozen layers, losses, optimizer),
oneDNN verbose lines and their counts between the step markers, and a traced
training step of a tiny model grouped by stage."""


import pytest

from benchmark_scripts import load_benchmark
from model_fixtures import RectanglesDataset, TinyConfig


sp = load_benchmark("step_profile")
FROZEN = sp.FROZEN_BWD

STAGES = {"res2a_branch2a": "backbone", "bn2a_branch2a": "backbone", "fpn_p2": "FPN",
          "rpn_model": "RPN head", "rpn_conv_shared": "RPN head", "ROI": "proposals",
          "proposal_targets": "detection targets", "roi_align_classifier": "RoIAlign",
          "roi_align_mask": "RoIAlign", "mrcnn_class_conv1": "box head",
          "mrcnn_mask_conv1": "mask head", "anchors": "other graph layers"}


def test_op_self_times_subtract_nested_ops_on_the_same_line():
    lines = [
        [("outer/op:While", 0, 100), ("outer/inner_a:Conv2D", 10, 30),
         ("outer/inner_b:Relu", 50, 20), ("ExecutorState::Process", 0, 500),
         ("later/op:MatMul", 200, 7), ("EagerLocalExecute: __inference_f_1", 300, 90)],
        [("other/thread:Conv2D", 0, 40), ("later/op:MatMul", 5, 3)],
    ]
    times = sp.op_self_times(lines)
    assert times[("outer/op", "While")] == 50           # 100 - 30 - 20
    assert times[("outer/inner_a", "Conv2D")] == 30
    assert times[("outer/inner_b", "Relu")] == 20
    assert times[("later/op", "MatMul")] == 10          # summed over both lines
    assert times[("other/thread", "Conv2D")] == 37      # nested MatMul subtracted
    assert not any("Execut" in name for name, _ in times)


@pytest.mark.parametrize("name, expected", [
    ("StatefulPartitionedCall/mask_rcnn_1/res2a_branch2a_1/convolution", ("backbone", "fwd")),
    ("StatefulPartitionedCall/gradient_tape/mask_rcnn_1/res2a_branch2a_1/convolution/"
     "Conv2DBackpropFilter", ("backbone", "bwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/rpn_model_5/rpn_conv_shared_1/Relu",
     ("RPN head", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/fpn_p2_1/BiasAdd", ("FPN", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/ROI_1/map/while/NonMaxSuppressionV3",
     ("proposals", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/proposal_targets_1/map/TensorListStack",
     ("detection targets", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/roi_align_mask_1/MrcnnRoiAlign",
     ("RoIAlign fwd", "fwd")),
    ("StatefulPartitionedCall/gradient_tape/mask_rcnn_1/roi_align_classifier_1/"
     "MrcnnRoiAlignGrad", ("RoIAlign bwd", "bwd")),
    ("StatefulPartitionedCall/gradient_tape/mask_rcnn_1/mrcnn_class_conv1_1/convolution/"
     "Conv2DBackpropInput", ("box head", "bwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/mrcnn_mask_conv1_1/BiasAdd", ("mask head", "fwd")),
    # Frozen layer: its backward is reported on its own, its forward stays in its stage.
    ("StatefulPartitionedCall/gradient_tape/mask_rcnn_1/bn2a_branch2a_1/FusedBatchNormGradV3",
     (sp.FROZEN_BWD, "bwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/bn2a_branch2a_1/FusedBatchNormV3",
     ("backbone", "fwd")),
    ("StatefulPartitionedCall/losses/SparseSoftmaxCrossEntropyWithLogits", ("losses", "fwd")),
    ("StatefulPartitionedCall/gradient_tape/losses/mul", ("losses", "bwd")),
    ("StatefulPartitionedCall/gradient_tape/weight_decay/Square_3/Mul",
     ("weight decay", "bwd")),
    ("StatefulPartitionedCall/SGD/AssignSubVariableOp_7", ("optimizer", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/anchors_1/BroadcastTo", ("other graph layers", "fwd")),
    ("StatefulPartitionedCall/mask_rcnn_1/unknown_thing/Add", ("other graph layers", "fwd")),
    ("StatefulPartitionedCall/adam_1/Sqrt_3", ("optimizer", "fwd")),   # see the test
    ("IteratorGetNext", ("step plumbing", "fwd")),
])
def test_stage_of_op_names(name, expected):
    optimizer = "adam_1" if "adam" in name else "SGD"     # Keras numbers the second one
    assert sp.stage_of(name, STAGES, frozen={"bn2a_branch2a"}, model_scope="mask_rcnn",
                       optimizer_scope=optimizer) == expected


def test_stage_table_sums_per_step_in_stage_order():
    times = {("StatefulPartitionedCall/mask_rcnn_1/fpn_p2_1/BiasAdd", "BiasAdd"): 4e9,
             ("StatefulPartitionedCall/gradient_tape/mask_rcnn_1/fpn_p2_1/x", "Mul"): 2e9,
             ("StatefulPartitionedCall/mask_rcnn_1/res2a_branch2a_1/conv", "Conv2D"): 6e9,
             ("StatefulPartitionedCall", "StatefulPartitionedCall"): 100e9}  # a wrapper
    rows, total = sp.stage_table(times, 2, STAGES, set(), "mask_rcnn", "SGD")
    assert rows == [("backbone", 3.0, 0.0, 3.0), ("FPN", 2.0, 1.0, 3.0)]
    assert total == 6.0
    text = sp.format_stage_table(rows, total, "title")
    assert "| FPN | 2.0 | 1.0 | 3.0 | 50.0 % |" in text


CONV_BF16 = ("onednn_verbose,v1,primitive,exec,cpu,convolution,brgconv:avx512_core_bf16,"
             "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB16b::f0 "
             "bia:f32::blocked:a::f0 dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
             "alg:convolution_direct,mb4_ic16oc32_ih64oh32kh3sh2dh0ph1_iw64ow32kw3sw2dw0pw1,"
             "0.512")
REORDER = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,"
           "src:f32::blocked:abcd::f0 dst:bf16::blocked:acdb::f0,,,4x16x64x64,0.25")
CONV_F32_OLD = ("onednn_verbose,exec,cpu,convolution,jit:avx512_core,backward_weights,"
                "src_f32::blocked:acdb:f0 wei_f32::blocked:Acdb16a:f0,,alg:convolution_direct,"
                "mb1_ic3oc64,1.5")


def test_parse_onednn_line():
    assert sp.parse_onednn_line(CONV_BF16) == (
        "convolution", "brgconv:avx512_core_bf16", "forward_training",
        "src:bf16 wei:bf16 bia:f32 dst:bf16", 0.512)
    assert sp.parse_onednn_line(REORDER) == ("reorder", "jit:uni", "undef",
                                             "src:f32 dst:bf16", 0.25)
    kind, impl, prop, _, ms = sp.parse_onednn_line(CONV_F32_OLD)
    assert (kind, impl, prop, ms) == ("convolution", "jit:avx512_core", "backward_weights", 1.5)
    create = CONV_BF16.replace(",exec,", ",create:cache_miss,")
    assert sp.parse_onednn_line(create) is None
    assert sp.parse_onednn_line("some other output") is None


def test_count_onednn_kernels_between_markers():
    lines = [REORDER, sp.ONEDNN_BEGIN, CONV_BF16, CONV_BF16, REORDER, "noise",
             sp.ONEDNN_END, CONV_BF16]
    counts = sp.count_onednn_kernels(lines)
    conv = ("convolution", "forward_training", "src:bf16 wei:bf16 bia:f32 dst:bf16",
            "brgconv:avx512_core_bf16")
    reorder = ("reorder", "undef", "src:f32 dst:bf16", "jit:uni")
    assert counts.keys() == {conv, reorder}
    assert counts[conv][0] == 2 and counts[conv][1] == pytest.approx(1.024)
    assert counts[reorder] == [1, 0.25]
    # Without markers every exec line counts.
    assert sp.count_onednn_kernels([CONV_BF16, REORDER])[conv][0] == 1
    table = sp.format_onednn_counts(counts, steps=2)
    assert "| convolution | forward_training |" in table and "| 1 | 0.5 |" in table


def test_traced_training_step_of_a_tiny_model_is_grouped_by_stage(tmp_path):
    import keras
    import tensorflow as tf

    from mrcnn import model as modellib
    from mrcnn.data.pipeline import build_training_dataset

    class Config(TinyConfig):
        IMAGES_PER_GPU = 1
        BACKBONE = "resnet50"
        OPTIMIZER = "SGD"

    config = Config()
    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("training", config, str(tmp_path))
    model.set_trainable("heads", verbose=0)
    model.compile(0.001, 0.9)
    batch = next(iter(build_training_dataset(RectanglesDataset([2, 1]), config,
                                             shuffle=False, repeat=False)))
    data = tf.data.Dataset.from_tensors(batch).repeat()
    keras_model = model.keras_model
    keras_model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    logdir = str(tmp_path / "trace")
    tf.profiler.experimental.start(logdir)
    keras_model.fit(data, epochs=1, steps_per_epoch=1, verbose=0)
    tf.profiler.experimental.stop()

    op_times = sp.read_xspace_ops(logdir)
    stages, frozen = sp.layer_stages(keras_model)
    assert stages["rpn_conv_shared"] == "RPN head" and stages["res2a_branch2a"] == "backbone"
    assert "res2a_branch2a" in frozen and "fpn_p2" not in frozen    # "heads" preset
    rows, total = sp.stage_table(op_times, 1, stages, frozen, keras_model.name,
                                 keras_model.optimizer.name)
    by_stage = {stage: (f, b) for stage, f, b, _ in rows}
    for stage in ("backbone", "FPN", "RPN head", "proposals", "detection targets",
                  "RoIAlign fwd", "box head", "mask head", "losses", "optimizer"):
        assert by_stage.get(stage, (0, 0))[0] > 0, stage
    for stage in ("FPN", "RPN head", "RoIAlign bwd", "box head", "mask head", "losses"):
        assert by_stage[stage][1] > 0, stage
    # "heads": no convolution of the frozen ResNet is differentiated, and the
    # proposals and targets get no gradient at all (held constant).
    def bwd_ops(stage):
        return [(n, t) for n, t in op_times if "gradient_tape" in n and sp.stage_of(
            n, stages, frozen, keras_model.name, keras_model.optimizer.name)[0] == stage]
    assert not [n for n, t in bwd_ops("backbone") if "Conv2D" in t], bwd_ops("backbone")
    assert FROZEN not in by_stage
    assert not bwd_ops("proposals") and not bwd_ops("detection targets")
    # Every gradient op of a named layer has been attributed to a stage.
    names = [n for n, _ in op_times if "gradient_tape/mask_rcnn" in n]
    assert names
    unattributed = [n for n in names if sp.stage_of(
        n, stages, frozen, keras_model.name, keras_model.optimizer.name)[0]
        in ("other graph layers", "step plumbing")]
    assert len(unattributed) <= 0.02 * len(names), unattributed[:5]


def test_layer_stages_name_the_mask_and_keypoint_heads_rows_and_layers():
    import keras

    x = keras.Input((4,))
    names = ("mask_rois", "mask_rois_padded", "mrcnn_kp_conv1", "keypoint_rois_padded",
             "keypoint_roi_expand", "mrcnn_keypoints_per_roi", "roi_align_keypoint",
             "res2a_branch2a")
    y = x
    for name in names:
        y = keras.layers.Identity(name=name)(y)
    stages, frozen = sp.layer_stages(keras.Model(x, y))
    assert [stages[n] for n in names] == ["mask head", "mask head"] + ["keypoint head"] * 4 + [
        "RoIAlign", "backbone"]
    assert "keypoint head" in sp.STAGES and not frozen
