"""`MaskRCNN`: build, train, run and checkpoint Mask R-CNN (the old ``modellib`` API).

    from mrcnn import model as modellib
    model = modellib.MaskRCNN(mode="training", config=config, model_dir="logs")
    model.load_weights("mask_rcnn_coco.h5", by_name=True,
                       exclude=["mrcnn_class_logits", "mrcnn_bbox_fc",
                                "mrcnn_bbox", "mrcnn_mask"])
    model.train(train_set, val_set, learning_rate=config.LEARNING_RATE,
                epochs=10, layers="heads")

    model = modellib.MaskRCNN(mode="inference", config=config, model_dir="logs")
    model.load_weights(model.find_last())
    r = model.detect([image])[0]   # rois, class_ids, scores, masks

The graphs are assembled in `mrcnn.modeling.assembly`, the training step and layer presets
live in `mrcnn.engine.trainer`, image molding / unmolding in `mrcnn.inference.molding`.

Log directories and checkpoints: ``<model_dir>/<name>YYYYMMDDTHHMM/`` holds the
TensorBoard logs and ``mask_rcnn_<name>_<epoch:04d>.h5`` after each epoch
(``<name>`` is ``config.NAME`` lower-cased, epochs 1-based). `find_last`
returns the newest checkpoint; loading it makes `train` continue the epoch
numbering.
"""

import datetime
import os
import warnings

import numpy as np
import tensorflow as tf

from mrcnn.engine import checkpoints as _checkpoints
from mrcnn.engine import distribute as _distribute
from mrcnn.engine import evaluation_callback as _evaluation
from mrcnn.engine import schedules as _schedules
from mrcnn.weights import imagenet as _imagenet
from mrcnn.inference import molding as _inference
from mrcnn.engine import precision as _precision
from mrcnn.engine import trainer as _training
from mrcnn.engine import callbacks as _callbacks
from mrcnn.weights import io as _weights
from mrcnn.engine import xla as _xla
from mrcnn.structures.anchors import compute_backbone_shapes, generate_pyramid_anchors, \
    get_anchors_for_config, pixel_anchors_for_config
from mrcnn.modeling.assembly import build_inference_model
from mrcnn.inference.molding import unmold_detections as _unmold_detections
from mrcnn.data.input_checks import prepare_detect_images
from mrcnn.visualization.log import log  # noqa: F401  (old API: modellib.log)

# Names the old single-file ``modellib`` exposed, re-exported so user code and
# notebooks that reach for them keep working (each lives in its stage's module).
from mrcnn.data.pipeline import SkippedImages, build_training_dataset, data_generator, load_image_gt  # noqa: F401,E402
from mrcnn.legacy_api import (batch_pack_graph, detection_targets_graph, mrcnn_bbox_loss_graph,
                              mrcnn_class_loss_graph, mrcnn_mask_loss_graph, refine_detections_graph,
                              rpn_bbox_loss_graph, rpn_class_loss_graph, smooth_l1_loss)
from mrcnn.modeling.backbone import BatchNorm, conv_block, identity_block, resnet_graph  # noqa: F401,E402
from mrcnn.modeling.fpn import fpn_graph  # noqa: F401,E402
from mrcnn.modeling.roi_heads.box_head import fpn_classifier_graph  # noqa: F401,E402
from mrcnn.modeling.roi_heads.detection import DetectionLayer  # noqa: F401,E402
from mrcnn.modeling.roi_heads.mask_head import build_fpn_mask_graph  # noqa: F401,E402
from mrcnn.modeling.roi_heads.poolers import PyramidROIAlign  # noqa: F401,E402
from mrcnn.modeling.roi_heads.sampling import (DetectionTargetLayer, build_detection_targets,
                                               generate_random_rois)
from mrcnn.modeling.rpn.head import build_rpn_model, rpn_graph  # noqa: F401,E402
from mrcnn.modeling.rpn.proposals import ProposalLayer  # noqa: F401,E402
from mrcnn.modeling.rpn.targets import build_rpn_targets  # noqa: F401,E402
from mrcnn.structures.boxes_tf import (apply_box_deltas_graph, clip_boxes_graph, denorm_boxes_graph,
                                       log2_graph, norm_boxes_graph, overlaps_graph, trim_zeros_graph)
from mrcnn.structures.image_meta import compose_image_meta, parse_image_meta, parse_image_meta_graph  # noqa: F401,E402
from mrcnn.structures.images import mold_image, unmold_image  # noqa: F401,E402

__all__ = ["MaskRCNN", "log", "BatchNorm", "mold_image", "unmold_image",
           "compose_image_meta", "parse_image_meta", "load_image_gt", "data_generator",
           "build_training_dataset", "compute_backbone_shapes"]

MODES = ("training", "inference")
def _no_save(keras_model, path):
    """Checkpoint writer of non-chief workers: they write nothing."""


class MaskRCNN:
    """Mask R-CNN model facade: ``self.keras_model`` plus training and inference.

    Args:
        mode: ``"training"`` or ``"inference"``.
        config: a `mrcnn.config.Config` (subclass) instance.
        model_dir: directory for log directories and checkpoints (str or path).
        strategy: optional ``tf.distribute.Strategy`` to build and train under.
            Without one, training uses ``MultiWorkerMirroredStrategy`` when
            ``TF_CONFIG`` describes a cluster, ``MirroredStrategy`` over
            ``GPU_COUNT`` GPUs when ``GPU_COUNT > 1``, else one device (see
            `mrcnn.engine.distribute`). Kept in ``self.strategy`` (None: default).

    ``config.MIXED_PRECISION`` selects float32, ``mixed_float16`` or
    ``mixed_bfloat16`` layers (see `mrcnn.engine.precision`); ``config.XLA`` turns on
    XLA auto-clustering (see `mrcnn.engine.xla`).
    """

    def __init__(self, mode, config, model_dir, strategy=None):
        if mode not in MODES:
            raise ValueError(f"MaskRCNN: mode must be one of {MODES}, got {mode!r}")
        if not isinstance(model_dir, (str, os.PathLike)):
            raise ValueError(f"MaskRCNN: model_dir must be a directory path (str or "
                             f"os.PathLike), got {type(model_dir).__name__}: {model_dir!r}")
        if not hasattr(config, "IMAGE_SHAPE") or not hasattr(config, "BATCH_SIZE"):
            raise ValueError("MaskRCNN: config must be an instance of a mrcnn.config.Config "
                             f"subclass (did you pass the class itself?), got {config!r}")
        # Created first: MultiWorkerMirroredStrategy must exist before any TF op runs.
        self.strategy = _distribute.resolve_strategy(config, strategy, mode)
        if mode == "inference" and config.GPU_COUNT > 1 and strategy is None:
            warnings.warn(f"MaskRCNN: GPU_COUNT={config.GPU_COUNT} in inference mode: detect() "
                          f"runs BATCH_SIZE={config.BATCH_SIZE} images per call on one "
                          f"device (GPU_COUNT splits training batches only)", stacklevel=2)
        self.mode = mode
        self.config = config
        self.model_dir = os.fspath(model_dir)
        self.epoch = 0
        # Debugging aid: True runs train()'s steps eagerly (slow per step, no
        # tf.function tracing; Python breakpoints work inside the losses).
        self.run_eagerly = False
        self._anchor_cache = {}
        self._predict_functions = {}
        self._optimizer_state = None  # of the last checkpoint loaded, until train()
        self.set_log_dir()
        # With SEED / DETERMINISTIC, seed before building so the initial weights
        # are reproducible too (train() seeds the data pipeline and TF again).
        _callbacks.configure_reproducibility(config.SEED, config.DETERMINISTIC)
        _xla.configure_xla(config.XLA)
        self.keras_model = self.build(mode=mode, config=config)

    # ------------------------------------------------------------------ building
    def build(self, mode, config):
        """Build and return the Keras model of ``mode`` (see `mrcnn.modeling.assembly`), under
        ``self.strategy``'s scope and ``config.MIXED_PRECISION``'s dtype policy."""
        policy = _precision.policy_name(config.MIXED_PRECISION)
        with _distribute.strategy_scope(getattr(self, "strategy", None)), \
                _precision.dtype_policy(policy):
            if mode == "training":
                return _training.training_model(config)
            return build_inference_model(config)

    @property
    def is_chief(self):
        """Whether this process writes checkpoints and logs: False only on the
        non-chief workers of a multi-worker run (see `mrcnn.engine.distribute`)."""
        return _distribute.is_chief(self.strategy)

    def _require(self, mode, what):
        if self.mode != mode:
            raise ValueError(f"MaskRCNN.{what} needs a model built with mode={mode!r}; "
                             f"this one is {self.mode!r}")

    # ------------------------------------------------------------------ logs / weights
    def _name(self):
        return (self.config.NAME or "mrcnn").lower()

    def set_log_dir(self, model_path=None):
        """Choose the log directory and starting epoch.

        With ``model_path`` of the form ``.../<name>YYYYMMDDTHHMM/
        mask_rcnn_<name>_NNNN.h5`` the log directory is that checkpoint's
        directory and ``self.epoch = NNNN`` (training resumes at epoch NNNN+1);
        otherwise a new directory stamped with the current time and epoch 0.
        An interrupted checkpoint ``mask_rcnn_<name>_NNNN_interrupted.h5``
        (weights part-way through epoch NNNN) gives ``self.epoch = NNNN - 1``:
        training re-runs epoch NNNN starting from those weights.
        """
        self.epoch = 0
        now = datetime.datetime.now()
        log_dir = None
        resumed = _checkpoints.resume_point(model_path) if model_path else None
        if resumed is not None:
            log_dir, self.epoch = resumed
        if log_dir is None:
            log_dir = os.path.join(self.model_dir, f"{self._name()}{now:%Y%m%dT%H%M}")
        self.log_dir = log_dir
        self.checkpoint_path = os.path.join(
            self.log_dir, f"mask_rcnn_{self._name()}_" + "{epoch:04d}.h5")

    def find_last(self):
        """Path of the newest checkpoint in the newest log directory of this config.

        Log directories are matched exactly as ``<name>YYYYMMDDTHHMM`` (so runs
        of another NAME starting the same, e.g. ``coco_person...`` for
        ``coco``, are ignored) and the newest timestamp wins. Regular
        checkpoints ``mask_rcnn_<name>_NNNN.h5`` come first; an interrupted one
        (``..._NNNN_interrupted.h5``, saved on Ctrl-C) is returned only when
        the directory has no regular checkpoint. Other files (the best checkpoint
        ``..._best.h5``, temporary files ``*.h5.tmp-<pid>``) are ignored.

        Raises:
            FileNotFoundError: no log directory or no checkpoint in it.
        """
        return _checkpoints.find_last_checkpoint(self.model_dir, self._name())

    def load_weights(self, filepath, by_name=False, exclude=None):
        """Load HDF5 weights (released COCO file or our checkpoint), then `set_log_dir`.

        ``exclude``: layer names to skip (implies ``by_name=True``, as in the old
        API), e.g. the class-specific heads when the class count differs.
        Returns the `mrcnn.weights.io.LoadReport`. Keeps a checkpoint's optimizer
        state for `train`; applies the RoI pooling rule (`mrcnn.engine.checkpoints`).
        """
        if exclude:
            by_name = True
        report = _weights.load_weights(self.keras_model, filepath, by_name=by_name,
                                       exclude=exclude)
        _checkpoints.after_load(self, report, exclude)
        self.set_log_dir(filepath)
        return report

    @property
    def roi_pooling_method(self):
        """The RoI pooling in effect: ``"roi_align"`` or ``"crop_and_resize"``."""
        return _checkpoints.pooling_method_of(self.keras_model)

    def save_weights(self, filepath):
        """Save all weights (legacy HDF5 layout, atomic); returns the path."""
        return _checkpoints.save_checkpoint(self.keras_model, filepath)

    def get_imagenet_weights(self):
        """Path of the local ImageNet ResNet weights for ``config.BACKBONE``.

        Nothing is downloaded; a missing file raises ``FileNotFoundError``
        saying which file to fetch and where to put it (`mrcnn.weights.imagenet`).
        Load it with ``mrcnn.weights.imagenet.load_imagenet_backbone(model.keras_model,
        path)``.
        """
        architecture = self.config.BACKBONE if isinstance(self.config.BACKBONE, str) \
            else "resnet50"
        return _imagenet.get_imagenet_weights(architecture)

    # ------------------------------------------------------------------ training
    def set_trainable(self, layer_regex, keras_model=None, indent=0, verbose=1):
        """Train the layers whose names fully match ``layer_regex`` (or preset name)."""
        regex = _training.resolve_layer_regex(layer_regex, self.config.HEAD_ARCHITECTURE)
        if verbose > 0 and keras_model is None:
            log(f"Selecting layers to train ({layer_regex})")
        return _training.set_trainable(keras_model or self.keras_model, regex,
                                       verbose=verbose, indent=indent)

    def compile(self, learning_rate, momentum):
        """Compile with ``config.OPTIMIZER`` (SGD with ``momentum`` by default; Adam or
        AdamW with their default betas), global-norm gradient clipping
        (``GRADIENT_CLIP_NORM``) and, under ``MIXED_PRECISION="mixed_float16"``,
        dynamic loss scaling (`mrcnn.engine.trainer.make_optimizer`). Resets the
        optimizer state."""
        # Several replicas: the train step clips the summed gradient itself.
        replicated = _distribute.replicas_in_sync(self.strategy) > 1
        self.keras_model.mrcnn_clip_norm = self.config.GRADIENT_CLIP_NORM if replicated \
            else None
        with _distribute.strategy_scope(self.strategy):
            optimizer = _training.make_optimizer(
                self.config, learning_rate, momentum, self.keras_model.trainable_variables,
                clip=not replicated)
            self.keras_model.compile(optimizer=optimizer, jit_compile=False,
                                     run_eagerly=self.run_eagerly)

    def train(self, train_dataset, val_dataset, learning_rate, epochs, layers,
              augmentation=None, custom_callbacks=None, no_augmentation_sources=None,
              verbose=1, evaluation=None):
        """Train up to epoch ``epochs`` (continuing from ``self.epoch``).

        Args:
            train_dataset, val_dataset: prepared `mrcnn.data.dataset.Dataset` objects
                (``val_dataset`` may be None, or VALIDATION_STEPS 0, to skip
                validation).
            learning_rate: a number (shaped by ``LEARNING_RATE_SCHEDULE``, ``WARMUP_STEPS``
                ...) or a ``LearningRateSchedule``, of the global step (`mrcnn.engine.schedules`).
            epochs: the epoch number to stop at (NOT a count): a model resumed
                at epoch 3 with ``epochs=5`` trains epochs 4 and 5.
            layers: ``"heads"``, ``"3+"``, ``"4+"``, ``"5+"``, ``"all"`` or a
                regex over layer names.
            augmentation: imgaug / albumentations augmenter (see `mrcnn.data.pipeline`).
            custom_callbacks: extra ``keras.callbacks.Callback`` objects.
            no_augmentation_sources: dataset sources not to augment.
            verbose: Keras ``fit`` verbosity (1 = progress bar).
            evaluation: None or an `mrcnn.engine.evaluation_callback.EvaluationConfig` (or
                dict): COCO AP every N epochs, ``..._best.h5``, early stopping.

        Returns:
            the Keras ``History``.

        Robustness (see `mrcnn.engine.callbacks`):

        * ``config.SKIP_BAD_IMAGES``: images that fail to load are dropped and
          counted (``history.history["skipped_images"]``: running total over
          the training and validation pipelines of this call) instead of
          stopping training; a data set where every image fails still raises.
        * A NaN/inf loss stops training after that batch and raises
          ``FloatingPointError`` naming the loss, epoch and step; no checkpoint
          is written for that epoch (nor for any epoch whose weights are not
          finite), so `find_last` gives the last finite weights.
        * ``KeyboardInterrupt``: the current weights are saved as
          ``mask_rcnn_<name>_<N:04d>_interrupted.h5`` (N = the unfinished
          epoch; skipped when no step ran since the last checkpoint or the
          weights are not finite), the path is printed, and the interrupt is
          re-raised.
        * ``config.SEED`` / ``config.DETERMINISTIC``: reproducible runs (see
          `mrcnn.engine.callbacks.configure_reproducibility`). The data
          pipeline restarts its seeded stream on every train() call, so a
          resumed run is reproducible but not identical to an uninterrupted one.
        * Checkpoints keep the optimizer state: after ``load_weights(find_last())``
          the first train() that runs epochs restores it (`mrcnn.engine.checkpoints`).
        """
        self._require("training", "train")
        regex = _training.resolve_layer_regex(layers, self.config.HEAD_ARCHITECTURE)
        learning_rate = _schedules.resolve_learning_rate(self.config, learning_rate)
        # Before seeding: building the evaluation model draws random numbers.
        evaluator = _evaluation.make_callback(self, evaluation, val_dataset, verbose)
        seed = _callbacks.configure_reproducibility(self.config.SEED,
                                                    self.config.DETERMINISTIC)
        on_error = "skip" if self.config.SKIP_BAD_IMAGES else "raise"
        skipped = SkippedImages() if on_error == "skip" else None
        # Third-party augmenters draw from global RNGs: with DETERMINISTIC the
        # augmenting map runs sequentially so they are consumed in a fixed order.
        sequential = self.config.DETERMINISTIC and augmentation is not None
        train_data = self._training_input(train_dataset, seed, on_error, skipped,
                                          augmentation=augmentation,
                                          no_augmentation_sources=no_augmentation_sources,
                                          num_parallel_calls=1 if sequential else None)
        val_data = None
        if val_dataset is not None and self.config.VALIDATION_STEPS > 0:
            val_data = self._training_input(val_dataset, None if seed is None else seed + 1,
                                            on_error, skipped)
        # Under MultiWorkerMirroredStrategy only the chief writes files.
        chief = self.is_chief
        if chief:
            os.makedirs(self.log_dir, exist_ok=True)
            _callbacks.remove_stale_temp_files(self.log_dir)
        guard = _callbacks.NonFiniteLossGuard()
        checkpoint = _callbacks.EpochCheckpoint(
            self.checkpoint_path, _checkpoints.save_checkpoint if chief else _no_save,
            verbose=verbose if chief else 0, guard=guard)
        # The skip report comes first so "skipped_images" reaches TensorBoard.
        report = [_callbacks.SkippedImagesReport(skipped, verbose)] if skipped else []
        logs = _training.tensorboard_callbacks(self.log_dir) if chief else []
        report += [evaluator] if evaluator else []  # before TensorBoard, to be in its logs
        callbacks = report + logs + [guard, checkpoint] + list(custom_callbacks or [])

        if verbose:
            log(f"\nStarting at epoch {self.epoch}. LR={learning_rate}\n")
            log(f"Checkpoint Path: {self.checkpoint_path}")
        self.set_trainable(regex, verbose=max(0, verbose - 1))
        self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
        _checkpoints.before_fit(self, epochs, verbose)
        _schedules.start_schedule(learning_rate, self.keras_model.optimizer,
                                  self.epoch * self.config.STEPS_PER_EPOCH)
        try:
            history = self.keras_model.fit(
                train_data, initial_epoch=self.epoch, epochs=epochs,
                steps_per_epoch=self.config.STEPS_PER_EPOCH, callbacks=callbacks,
                shuffle=False, validation_data=val_data,
                validation_steps=self.config.VALIDATION_STEPS if val_data is not None
                else None, verbose=verbose)
        except KeyboardInterrupt:
            self._save_interrupted(guard, checkpoint)
            raise
        finally:
            if checkpoint.saved:  # the last completed (saved) epoch, even if stopped
                self.epoch = max(self.epoch, _checkpoints.checkpoint_epoch(checkpoint.saved[-1]))
        if guard.failure is not None:
            raise FloatingPointError(guard.message)
        if evaluator is None or evaluator.stopped_epoch is None:  # else: stopped early
            self.epoch = max(self.epoch, epochs)
        return history

    def _training_input(self, dataset, seed, on_error, skipped, **kwargs):
        """The training pipeline of ``dataset``: one ``tf.data.Dataset`` of
        global batches, or under a multi-replica strategy one sharded pipeline
        per worker (`mrcnn.engine.distribute.distributed_dataset`)."""
        def build(batch_size, num_shards=1, shard_index=0, seed_offset=0):
            return build_training_dataset(
                dataset, self.config, shuffle=True, repeat=True,
                seed=None if seed is None else seed + 1000 * seed_offset,
                on_error=on_error, skipped_images=skipped, batch_size=batch_size,
                num_shards=num_shards, shard_index=shard_index, **kwargs)

        batch = _distribute.global_batch_size(self.config, self.strategy)
        if _distribute.replicas_in_sync(self.strategy) == 1:
            return build(batch)
        return _distribute.distributed_dataset(self.strategy, build, batch)

    def _save_interrupted(self, guard, checkpoint):
        """On Ctrl-C: save the weights of the unfinished epoch (see `train`)."""
        if not self.is_chief:
            return None
        return _callbacks.save_interrupted(self.keras_model, guard, checkpoint,
                                           self.checkpoint_path, _checkpoints.save_checkpoint)

    # ------------------------------------------------------------------ inference
    def get_anchors(self, image_shape):
        """Normalised anchors ``[A, 4]`` for a molded image of ``image_shape``.

        The pixel anchors of the last call are kept in ``self.anchors`` (as in
        the old API); both are cached per image size.
        """
        key = (int(image_shape[0]), int(image_shape[1]))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = (np.array(pixel_anchors_for_config(self.config, key)),
                                       get_anchors_for_config(self.config, key))
        self.anchors, normalised = self._anchor_cache[key]
        return normalised

    def mold_inputs(self, images):
        """See `mrcnn.inference.molding.mold_inputs`: ``(molded_images, image_metas, windows)``."""
        return _inference.mold_inputs(images, self.config)

    def unmold_detections(self, detections, mrcnn_mask, original_image_shape,
                          image_shape, window):
        """See `mrcnn.inference.molding.unmold_detections`: ``(boxes, class_ids, scores, masks)``."""
        return _unmold_detections(detections, mrcnn_mask, original_image_shape,
                                  image_shape, window)

    def _predict_function(self, batch_shape):
        """One compiled (tf.function) forward pass per input shape, reused across calls."""
        fn = self._predict_functions.get(batch_shape)
        if fn is None:
            model = self.keras_model

            @tf.function(reduce_retracing=False)
            def fn(images, metas, anchors):
                return model([images, metas, anchors], training=False)

            self._predict_functions[batch_shape] = fn
        return fn

    def _run_batches(self, molded, metas, verbose=0):
        """Run the inference graph on molded images in BATCH_SIZE chunks.

        Args:
            molded: list of ``[H', W', C]`` float32 molded images.
            metas: ``[N, IMAGE_META_SIZE]``.

        Returns:
            per-image ``(detections [D, 6], mrcnn_mask [D, mh, mw, NC])`` numpy
            (and ``mrcnn_keypoints [D, K, 3]`` with a keypoint head).
        """
        batch_size = self.config.BATCH_SIZE
        results = [None] * len(molded)
        for indices in _inference.group_by_shape([m.shape for m in molded], batch_size):
            images = np.stack([molded[i] for i in indices]).astype(np.float32)
            batch_metas = np.stack([metas[i] for i in indices]).astype(np.float32)
            pad = batch_size - len(indices)
            if pad:  # fill the last chunk with copies of its first image
                images = np.concatenate([images, np.repeat(images[:1], pad, axis=0)])
                batch_metas = np.concatenate([batch_metas,
                                              np.repeat(batch_metas[:1], pad, axis=0)])
            image_anchors = self.get_anchors(images.shape[1:3])
            anchors = np.broadcast_to(image_anchors, (batch_size,) + image_anchors.shape)
            if verbose:
                log("molded_images", images)
                log("image_metas", batch_metas)
                log("anchors", anchors)
            fn = self._predict_function(images.shape)
            outputs = fn(tf.constant(images), tf.constant(batch_metas),
                         tf.constant(np.ascontiguousarray(anchors, np.float32)))
            arrays = [outputs[name].numpy() for name in
                      ("detections", "mrcnn_mask", "mrcnn_keypoints") if name in outputs]
            for row, i in enumerate(indices):
                results[i] = tuple(a[row] for a in arrays)
        return results

    def detect(self, images, verbose=0):
        """Detect instances in images of any size and number.

        Args:
            images: list of images, sizes may differ: uint8 RGB ``[H, W, 3]``, or
                grayscale ``[H, W]`` / ``[H, W, 1]``, RGBA, uint16 or float images,
                converted as `mrcnn.data.input_checks.prepare_detect_images` documents.
                Bad input (not a list, empty, NaN/inf pixels, wrong rank) raises
                ValueError/TypeError naming the image index.
            verbose: 1 prints the inputs' statistics.

        Returns:
            list of dicts, one per image: ``rois`` int32 ``[N, 4]`` (y1, x1, y2,
            x2) original-image pixels (y2/x2 exclusive), ``class_ids`` int32
            ``[N]``, ``scores`` float32 ``[N]``, ``masks`` bool ``[H, W, N]``;
            with ``NUM_KEYPOINTS`` > 0 also ``keypoints`` float32 ``[N, K, 3]``
            ``(x, y, score)`` original-image pixels (continuous, the convention of
            `mrcnn.structures.keypoints`; zeros for keypoints the class lacks).
        """
        self._require("inference", "detect")
        images = prepare_detect_images(images, self.config.IMAGE_CHANNEL_COUNT)
        if verbose:
            log(f"Processing {len(images)} images")
        molded, metas, windows = [], [], []
        for i, image in enumerate(images):
            m, meta, window = _inference.mold_image_for_inference(image, self.config, i)
            molded.append(m)
            metas.append(meta)
            windows.append(window)
            if verbose:
                log("image", image)
        outputs = self._run_batches(molded, metas, verbose=verbose)
        return [_inference.unmold_result(outputs[i], np.shape(image), molded[i].shape,
                                         windows[i]) for i, image in enumerate(images)]

    def export(self, path, roi_align="tf"):
        """Write a SavedModel that detects in-graph: a uint8 ``[H, W, 3]`` image of any
        size -> ``rois``, ``class_ids``, ``scores``, ``masks`` (and ``keypoints``) as
        `detect` returns them.
        See `mrcnn.inference.export.export_saved_model` (``roi_align="tf"`` loads anywhere;
        ``"compiled"`` is faster but needs `mrcnn.inference.export.load_saved_model`)."""
        self._require("inference", "export")
        from mrcnn.inference.export import export_saved_model
        return export_saved_model(self, path, roi_align=roi_align)

    def detect_molded(self, molded_images, image_metas, verbose=0):
        """Detect on already molded images (e.g. from `mrcnn.data.pipeline.load_image_gt`).

        Args:
            molded_images: ``[N, H', W', C]`` (or list) molded images.
            image_metas: ``[N, IMAGE_META_SIZE]`` their metas (window and
                original shape are read from them).

        Returns:
            the same list of dicts as `detect`, in the metas' original-image
            coordinates.
        """
        self._require("inference", "detect_molded")
        molded = [np.asarray(m, np.float32) for m in molded_images]
        metas = np.asarray(image_metas, np.float32).reshape(len(molded), -1)
        outputs = self._run_batches(molded, metas, verbose=verbose)
        results = []
        for i, meta in enumerate(metas):
            parsed = parse_image_meta(meta)
            results.append(_inference.unmold_result(
                outputs[i], parsed["original_image_shape"], molded[i].shape, parsed["window"]))
        return results

    # ------------------------------------------------------------------ inspection
    def ancestor(self, tensor, name, checked=None):
        """Old API helper: the output tensor of the layer called ``name``, or None.

        (The old version searched the graph upstream of ``tensor``; layer names
        are unique in our graphs, so a lookup by name gives the same tensor.)
        """
        try:
            return self.keras_model.get_layer(name).output
        except ValueError:
            return None

    def find_trainable_layer(self, layer):
        """The layer owning the weights (a Keras wrapper's inner layer, else ``layer``)."""
        return _training.find_trainable_layer(layer)

    def get_trainable_layers(self):
        """Layers that have weights (inner layers of Keras wrappers)."""
        return [_training.find_trainable_layer(l) for l in self.keras_model.layers
                if l.weights]

    def run_graph(self, images, outputs, image_metas=None):
        """Run the inference model up to intermediate tensors (see
        `mrcnn.inference.molding.run_graph`): ``OrderedDict`` name -> numpy array."""
        self._require("inference", "run_graph")
        return _inference.run_graph(self, images, outputs, image_metas)
