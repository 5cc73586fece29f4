"""A seeded model's training losses and detections, as exact numbers.

Run it before and after a change that should not change the maths (a move of
code, a rename) and compare the two JSON files: every float is written with
``repr``, so equal files mean bit-identical results.

    python benchmarks/fingerprint.py --out before.json
    ... change ...
    python benchmarks/fingerprint.py --out after.json --compare before.json

It runs with ``TF_ENABLE_ONEDNN_OPTS=0`` unless the environment says otherwise
(oneDNN's kernels are not reproducible from run to run). It uses only the public API (``modellib.MaskRCNN``, ``train``, ``detect``,
``load_weights``, ``modellib.build_training_dataset``) on a tiny shapes config,
CPU, with ``SEED`` and ``DETERMINISTIC`` set, for both RoI pooling methods, and
records, per method:

* ``initial``: a digest of every initial weight, by variable path;
* ``step0``: the losses and a digest of every gradient (by variable path) of the
  first training batch, before any update: the forward and backward maths;
* ``losses``: the epoch losses of a short training run. A training run is
  chaotic: a change in the order of a sum (one ulp) grows over the steps;
* ``detections``: ``detect`` on held-out images with the trained weights, or
  with ``--weights DIR`` (``DIR/<method>.h5`` from an earlier ``--save-weights
  DIR`` run) so that two versions of the code detect with the same weights.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# oneDNN's CPU kernels are not bit-reproducible from run to run (measured: two runs
# of the same code differ from the second training step with them, are identical
# without); DETERMINISTIC cannot turn them off once TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from mrcnn import model as modellib  # noqa: E402
from samples.shapes.shapes import ShapesConfig, ShapesDataset  # noqa: E402


def demo_config(pooling, mode):
    """The shapes demo's own config (light backbone, 128 px, TRAIN_BN), short epochs."""
    from samples.shapes.shapes import ShapesInferenceConfig

    class Demo(ShapesInferenceConfig if mode == "inference" else ShapesConfig):
        NAME = "fp"
        STEPS_PER_EPOCH = 3
        VALIDATION_STEPS = 1
        SEED = 7
        DETERMINISTIC = True
        ROI_POOLING_METHOD = pooling
    return Demo()


def tiny_config(pooling, mode):
    class Tiny(ShapesConfig):
        NAME = "fp"
        BACKBONE = "resnet50"
        IMAGE_MIN_DIM = 64
        IMAGE_MAX_DIM = 64
        RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
        TOP_DOWN_PYRAMID_SIZE = 32
        FPN_CLASSIF_FC_LAYERS_SIZE = 32
        RPN_TRAIN_ANCHORS_PER_IMAGE = 64
        PRE_NMS_LIMIT = 300
        POST_NMS_ROIS_TRAINING = 60
        POST_NMS_ROIS_INFERENCE = 60
        TRAIN_ROIS_PER_IMAGE = 16
        MAX_GT_INSTANCES = 4
        MINI_MASK_SHAPE = (28, 28)
        MASK_POOL_SIZE = 7
        MASK_SHAPE = [14, 14]
        DETECTION_MAX_INSTANCES = 10
        DETECTION_MIN_CONFIDENCE = 0.0
        IMAGES_PER_GPU = 2 if mode == "training" else 1
        STEPS_PER_EPOCH = 3
        VALIDATION_STEPS = 1
        SEED = 7
        DETERMINISTIC = True
        ROI_POOLING_METHOD = pooling
    return Tiny()


def digest(array):
    array = np.ascontiguousarray(array)
    return hashlib.sha256(array.tobytes() + str(array.dtype).encode()).hexdigest()[:16]


def _by_path(variables, values):
    return {v.path: digest(np.asarray(x)) for v, x in zip(variables, values)}


def first_step(model, dataset):
    """Losses and gradient digests of the first batch (no update)."""
    import tensorflow as tf
    config = model.config
    batch = next(iter(modellib.build_training_dataset(dataset, config, shuffle=False,
                                                      seed=0)))
    keras_model = model.keras_model
    inputs = keras_model._ordered_inputs(batch)
    variables = keras_model.trainable_variables
    with tf.GradientTape() as tape:
        outputs = keras_model(inputs, training=True)
        losses = keras_model.compute_mrcnn_losses(inputs, outputs)
        total = tf.add_n([losses[k] for k in sorted(losses)])
    grads = tape.gradient(total, variables)
    pairs = [(v, g) for v, g in zip(variables, grads) if g is not None]
    return {"losses": {k: repr(float(v)) for k, v in sorted(losses.items())},
            "gradients": _by_path([v for v, _ in pairs], [g for _, g in pairs])}


def run(pooling, workdir, weights_dir=None, save_dir=None, make_config=None):
    make_config = make_config or tiny_config
    config = make_config(pooling, "training")
    size = int(config.IMAGE_SHAPE[0])
    train_set = ShapesDataset()
    train_set.load_shapes(16, size, size, seed=1)
    train_set.prepare()
    val_set = ShapesDataset()
    val_set.load_shapes(max(2, config.BATCH_SIZE), size, size, seed=2)
    val_set.prepare()

    model = modellib.MaskRCNN("training", make_config(pooling, "training"), workdir)
    initial = _by_path(model.keras_model.weights, model.keras_model.get_weights())
    step0 = first_step(model, train_set)
    model = modellib.MaskRCNN("training", make_config(pooling, "training"), workdir)
    history = model.train(train_set, val_set, learning_rate=0.002, epochs=2, layers="all")
    losses = {k: [repr(float(v)) for v in vals] for k, vals in sorted(history.history.items())}
    checkpoint = model.find_last()
    if save_dir:
        os.makedirs(save_dir, exist_ok=True)
        shutil.copyfile(checkpoint, os.path.join(save_dir, pooling + ".h5"))
    if weights_dir:
        checkpoint = os.path.join(weights_dir, pooling + ".h5")

    model = modellib.MaskRCNN("inference", make_config(pooling, "inference"), workdir)
    model.load_weights(checkpoint, by_name=True)
    detections = []
    for image_id in val_set.image_ids:
        r = model.detect([val_set.load_image(image_id)])[0]
        detections.append({
            "n": int(len(r["class_ids"])),
            "rois": r["rois"].tolist(),
            "class_ids": r["class_ids"].tolist(),
            "scores": [repr(float(s)) for s in r["scores"]],
            "masks": digest(r["masks"]),
            "mask_pixels": int(r["masks"].sum()),
        })
    return {"initial": initial, "step0": step0, "losses": losses, "detections": detections}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", help="a previous --out file; exit 1 if different")
    parser.add_argument("--pooling", nargs="+", default=["roi_align", "crop_and_resize"])
    parser.add_argument("--save-weights", help="folder: keep the trained weights there")
    parser.add_argument("--weights", help="folder of --save-weights: detect with those")
    parser.add_argument("--no-graph-optimizer", action="store_true",
                        help="turn off TensorFlow's graph optimizer (Grappler: op fusion)")
    parser.add_argument("--config", choices=("tiny", "demo"), default="tiny",
                        help="tiny: a small ResNet-50 config; demo: the shapes demo's config")
    args = parser.parse_args()
    if args.no_graph_optimizer:
        import tensorflow as tf
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    result = {}
    for pooling in args.pooling:
        with tempfile.TemporaryDirectory() as workdir:
            result[pooling] = run(pooling, workdir, args.weights, args.save_weights,
                                  demo_config if args.config == "demo" else tiny_config)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    for pooling, r in result.items():
        print(pooling, "first-batch losses:", r["step0"]["losses"])
        print(pooling, "losses:", {k: v[-1] for k, v in r["losses"].items()})
        print(pooling, "detections per image:", [d["n"] for d in r["detections"]])
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        same = all(before.get(pooling) == result[pooling] for pooling in result)
        print(("identical to " if same else "DIFFERENT from ") + args.compare)
        if not same:
            for pooling in result:
                for part in ("initial", "step0", "losses", "detections"):
                    old, new = before.get(pooling, {}).get(part), result[pooling][part]
                    if old != new:
                        print("  differs:", pooling, part)
                        if part in ("initial", "step0"):
                            flat_old = old.get("gradients", old) if part == "step0" else old
                            flat_new = new.get("gradients", new) if part == "step0" else new
                            changed = sorted(k for k in set(flat_old) | set(flat_new)
                                             if flat_old.get(k) != flat_new.get(k))
                            print("    ", len(changed), "of", len(flat_new), "differ:",
                                  changed[:6])
                            if part == "step0" and old.get("losses") != new.get("losses"):
                                print("     losses", old.get("losses"), "->", new["losses"])
                        if part == "losses":
                            for name in new:
                                if old.get(name) != new[name]:
                                    print("   ", name, old.get(name), "->", new[name])
            sys.exit(1)


if __name__ == "__main__":
    main()
