"""Train a tiny Mask R-CNN for a few steps under a tf.distribute setup and save
its weights; run as a subprocess by tests/engine/test_distribute.py.

    python tests/distributed_worker.py --setup single|mirrored|multiworker \\
        --out weights.npz [--steps 2] [--clip 0.1 ...] [--data same|varied]

* ``single``: one device, one image per step.
* ``mirrored``: ``MirroredStrategy`` over two logical CPU devices, one image
  per replica (two per step).
* ``multiworker``: ``MultiWorkerMirroredStrategy`` picked by `MaskRCNN` from
  ``TF_CONFIG`` (set by the caller), ``IMAGES_PER_GPU = 1`` per worker.

For every ``--clip`` value the script resets the weights to the initial
ones, trains ``--steps`` steps of SGD with that GRADIENT_CLIP_NORM (``none``:
no clipping) and stores the trainable weights as ``clip<i>/<variable path>``
in ``--out``, plus the initial weights as ``initial/<path>`` and the images
each worker's pipeline read as ``image_ids``.

``--data same``: every image is the same picture, and nothing in the
pipeline or graph samples at random (all anchors are used as RPN targets,
every proposal is kept as a RoI), so each replica computes exactly what one
device computes on one image, and the mean over two replicas must equal it.
(One device with a batch of two copies is not a bit-exact reference: its
kernels sum in another order, and with random weights on 64 px images a few
backbone gradients move by up to 2 %.) ``--data varied``: different pictures
(rectangles drawn from the image index).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--setup", choices=("single", "mirrored", "multiworker"),
                        required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--clip", nargs="+", default=["none"])
    parser.add_argument("--data", choices=("same", "varied"), default="same")
    parser.add_argument("--seed", type=int, default=None,
                        help="Config.SEED (initial weights); none: unseeded")
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--precision", default=None, help="Config.MIXED_PRECISION")
    parser.add_argument("--unreadable", action="store_true",
                        help="every image fails to load (OSError) in this process")
    return parser.parse_args()


def main():
    args = parse_args()
    import tensorflow as tf

    if args.setup == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import numpy as np

    from model_fixtures import RectanglesDataset, TinyConfig
    from mrcnn import model as modellib

    class WorkerConfig(TinyConfig):
        IMAGES_PER_GPU = 1
        STEPS_PER_EPOCH = args.steps
        VALIDATION_STEPS = 0
        LEARNING_RATE = 0.01
        SEED = args.seed
        MIXED_PRECISION = args.precision
        # No random sampling anywhere (see the module docstring).
        RPN_TRAIN_ANCHORS_PER_IMAGE = 4096
        POST_NMS_ROIS_TRAINING = 24
        TRAIN_ROIS_PER_IMAGE = 32
        ROI_POSITIVE_RATIO = 1.0

    class SamePicture(RectanglesDataset):
        """Every image is image 0's picture and masks."""

        def load_image(self, image_id):
            return super().load_image(0)

        def load_mask(self, image_id):
            return super().load_mask(0)

    dataset_class = SamePicture if args.data == "same" else RectanglesDataset
    data = dataset_class([1, 2, 3, 2, 1, 3, 2, 3], seed=0)
    seen = []
    original_load = data.load_image

    def recording_load(image_id):
        if args.unreadable:
            raise OSError(f"cannot read image {image_id} (--unreadable)")
        seen.append(int(image_id))
        return original_load(image_id)

    data.load_image = recording_load

    config = WorkerConfig()
    strategy = None
    if args.setup == "mirrored":
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    model_dir = args.model_dir or os.path.dirname(os.path.abspath(args.out))
    model = modellib.MaskRCNN("training", config, model_dir, strategy=strategy)
    keras_model = model.keras_model
    variables = keras_model.trainable_variables
    initial = [np.array(v) for v in variables]
    result = {f"initial/{v.path}": w for v, w in zip(variables, initial)}
    for i, clip in enumerate(args.clip):
        for v, w in zip(variables, initial):
            v.assign(w)
        config.GRADIENT_CLIP_NORM = None if clip == "none" else float(clip)
        model.epoch = 0
        model.train(data, None, learning_rate=config.LEARNING_RATE, epochs=1,
                    layers="all", verbose=0)
        for v in keras_model.trainable_variables:
            result[f"clip{i}/{v.path}"] = np.array(v)
        optimizer = keras_model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        result[f"applied_steps{i}"] = np.array(inner.iterations.numpy())
    result["image_ids"] = np.array(sorted(set(seen)), np.int64)
    result["replicas"] = np.array(model.strategy.num_replicas_in_sync
                                  if model.strategy is not None else 1)
    np.savez(args.out, **result)
    print(f"saved {len(result)} arrays to {args.out}", flush=True)


if __name__ == "__main__":
    main()
