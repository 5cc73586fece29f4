"""Training machinery of the Mask R-CNN Keras model.

* `MaskRCNNKerasModel`: a functional ``keras.Model`` subclass whose
  ``train_step`` / ``test_step`` compute the five Mask R-CNN losses (and the
  keypoint loss with ``NUM_KEYPOINTS`` > 0, `loss_names`) from the
  graph's outputs (`mrcnn.modeling.losses`), weight them with ``config.LOSS_WEIGHTS``, add
  L2 weight decay on trainable kernels, and report each by name. No symbolic
  ``add_loss``: the graph only produces tensors.
* Layer-selection presets (``"heads"``, ``"3+"``, ``"4+"``, ``"5+"``, ``"all"``)
  and `set_trainable`, which walks nested models (``rpn_model``) and Keras
  wrapper layers (a custom backbone may use them; the heads' layers are plain).
* `EpochCheckpoint` (defined in `mrcnn.engine.callbacks`, with the NaN guard
  and the skipped-images report): saves ``mask_rcnn_<name>_<epoch:04d>.h5``
  after every epoch through `mrcnn.weights.io.save_weights` (atomic legacy-HDF5).
"""

import importlib.util
import re
import warnings

import keras
import tensorflow as tf

from mrcnn.constants import KEYPOINT_LOSS_NAME, LOSS_NAMES
from mrcnn.modeling.roi_heads.box_head import mrcnn_bbox_loss, mrcnn_class_loss
from mrcnn.modeling.roi_heads.keypoint_head import mrcnn_keypoint_loss
from mrcnn.modeling.roi_heads.mask_head import mrcnn_mask_loss
from mrcnn.modeling.rpn.loss import rpn_bbox_loss, rpn_class_loss
from mrcnn.engine import precision as mrcnn_precision
from mrcnn.engine.keras_compat import BuiltGraphFit
from mrcnn.engine.schedules import resolve_learning_rate
from mrcnn.structures.image_meta import parse_image_meta_graph
from mrcnn.engine.callbacks import EpochCheckpoint  # noqa: F401 (re-exported)
from mrcnn.modeling.assembly import build_training_model, training_input_names

__all__ = ["LOSS_NAMES", "loss_names", "LAYER_PRESETS", "resolve_layer_regex", "set_trainable",
           "find_trainable_layer", "weight_decay_variables", "MaskRCNNKerasModel",
           "EpochCheckpoint", "tensorboard_callbacks", "make_optimizer", "training_model"]


def loss_names(config=None, keypoints=None):
    """The losses a model of ``config`` reports, in order: `LOSS_NAMES` without the
    keypoint loss unless ``NUM_KEYPOINTS`` > 0 (or ``keypoints`` is True)."""
    if keypoints is None:
        keypoints = int(getattr(config, "NUM_KEYPOINTS", 0) or 0) > 0
    return tuple(n for n in LOSS_NAMES if keypoints or n != KEYPOINT_LOSS_NAME)


# Regular expressions (re.fullmatch against layer names) behind `train(layers=...)`.
_HEADS = r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)"
LAYER_PRESETS = {
    # The RPN, the FPN and the Mask R-CNN heads; the ResNet stays frozen.
    "heads": _HEADS,
    # ResNet stage N and up, plus the heads.
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|" + _HEADS,
    "5+": r"(res5.*)|(bn5.*)|" + _HEADS,
    # Everything.
    "all": ".*",
}


# With the C4 head the res5 stage is the box head (`mrcnn.modeling.roi_heads.c4`),
# so "heads" trains it too.
C4_LAYER_PRESETS = dict(LAYER_PRESETS, heads=LAYER_PRESETS["5+"])


def resolve_layer_regex(layers, head_architecture="fpn"):
    """A preset name -> its regex; anything else is taken as a regex itself.

    ``head_architecture`` (``Config.HEAD_ARCHITECTURE``): with ``"c4"``,
    ``"heads"`` includes the res5 stage, which is the C4 box head.
    """
    if not isinstance(layers, str):
        raise ValueError(f"layers: expected a preset name {sorted(LAYER_PRESETS)} or a "
                         f"regular expression string, got {layers!r}")
    presets = C4_LAYER_PRESETS if head_architecture == "c4" else LAYER_PRESETS
    regex = presets.get(layers, layers)
    try:
        re.compile(regex)
    except re.error as err:
        raise ValueError(f"layers={layers!r} is neither a preset "
                         f"{sorted(LAYER_PRESETS)} nor a valid regular expression: "
                         f"{err}") from err
    return regex


def find_trainable_layer(layer):
    """The layer that owns the weights: ``layer``, or a Keras wrapper's inner layer."""
    if isinstance(layer, keras.layers.Wrapper):
        return find_trainable_layer(layer.layer)
    return layer


def set_trainable(model, layer_regex, verbose=1, indent=0):
    """Make layers whose name fully matches ``layer_regex`` trainable, freeze the rest.

    Nested models (the shared ``rpn_model``) are matched by their own name and
    then walked, so their inner layers follow the same rule. Layers without
    weights are left alone. Returns the names of the layers set trainable.
    """
    regex = re.compile(layer_regex)
    selected = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            if verbose > 0:
                print(" " * indent + f"In model: {layer.name}")
            # Keras propagates a container's flag to its children, so switch
            # the container on first and let each child follow the regex. A
            # container whose children are all frozen has no trainable variables.
            layer.trainable = True
            selected += set_trainable(layer, layer_regex, verbose, indent + 4)
            continue
        if not layer.weights:
            continue
        trainable = regex.fullmatch(layer.name) is not None
        inner = find_trainable_layer(layer)
        layer.trainable = trainable
        inner.trainable = trainable
        if trainable:
            selected.append(layer.name)
            if verbose > 0:
                print(" " * indent + f"{layer.name:20}   ({type(inner).__name__})")
    return selected


def weight_decay_variables(variables):
    """The variables L2 weight decay applies to: kernels (no biases, no BN gamma/beta)."""
    return [v for v in variables if v.name.split("/")[-1].split(":")[0].endswith("kernel")]


class MaskRCNNKerasModel(BuiltGraphFit, keras.Model):
    """The Mask R-CNN functional graph with its own training / evaluation step.

    Built by `training_model` (the graph of
    `mrcnn.modeling.assembly.build_training_model` with this class, then
    `configure_losses`). ``fit`` / ``evaluate`` take a ``tf.data.Dataset`` of
    dicts keyed by the model's input names (see
    `mrcnn.data.pipeline.build_training_dataset`); the graph's outputs are a dict
    with at least ``rpn_class_logits, rpn_bbox, mrcnn_class_logits, mrcnn_bbox,
    mrcnn_mask_logits, output_rois, target_class_ids, target_bbox, target_mask``.

    Logs per step: the five weighted losses by name (six with keypoints:
    ``mrcnn_keypoint_loss``, from ``mrcnn_keypoint_logits``,
    ``target_keypoint_indices`` and ``target_keypoint_valid``), ``weight_decay_loss``
    (``0.5 * WEIGHT_DECAY * sum(kernel ** 2)`` over trainable kernels, so its
    gradient is ``WEIGHT_DECAY * kernel``) and their sum ``loss``.
    """

    def configure_losses(self, input_names, loss_weights, weight_decay, mask_loss="sigmoid",
                         keypoint_loss_weight=None):
        """Attach what the train/test steps need.

        Args:
            input_names: names of the model inputs, in the order of ``inputs``.
            loss_weights: dict loss name -> weight (missing names weigh 1).
            weight_decay: L2 weight-decay rate (0 disables it).
            mask_loss: ``Config.MASK_LOSS`` (see `mrcnn_mask_loss`).
            keypoint_loss_weight: None (no keypoint head) or
                ``Config.KEYPOINT_LOSS_WEIGHT``: the keypoint loss is then
                reported, times this and its ``loss_weights`` entry.
        """
        self.mrcnn_input_names = list(input_names)
        self.mrcnn_mask_loss_kind = mask_loss
        self.mrcnn_loss_names = loss_names(keypoints=keypoint_loss_weight is not None)
        self.mrcnn_loss_weights = {n: float(loss_weights.get(n, 1.0))
                                   for n in self.mrcnn_loss_names}
        if keypoint_loss_weight is not None:
            self.mrcnn_loss_weights[KEYPOINT_LOSS_NAME] *= float(keypoint_loss_weight)
        self.mrcnn_weight_decay = float(weight_decay)
        self._mrcnn_trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss",) + self.mrcnn_loss_names + ("weight_decay_loss",)}

    @property
    def metrics(self):
        trackers = getattr(self, "_mrcnn_trackers", None)
        return list(trackers.values()) if trackers else super().metrics

    # ------------------------------------------------------------------
    def _ordered_inputs(self, data):
        if isinstance(data, (tuple, list)) and len(data) >= 1 and isinstance(data[0], dict):
            data = data[0]  # (x, y) / (x,) tuples from some adapters
        if not isinstance(data, dict):
            raise ValueError("MaskRCNNKerasModel expects batches as dicts keyed by input "
                             f"names {self.mrcnn_input_names}, got {type(data).__name__}")
        missing = [n for n in self.mrcnn_input_names if n not in data]
        if missing:
            raise ValueError(f"training batch lacks inputs {missing}; it has "
                             f"{sorted(data)}")
        # Inputs in another dtype (e.g. uint8 masks from a user pipeline) are
        # cast to the graph's.
        dtypes = {t.name: t.dtype for t in self.inputs}
        return [data[n] if data[n].dtype == dtypes.get(n, data[n].dtype)
                else tf.cast(data[n], dtypes[n]) for n in self.mrcnn_input_names]

    def compute_mrcnn_losses(self, inputs, outputs):
        """Weighted losses (dict name -> scalar) from ordered inputs and the
        graph's outputs (a dict keyed by `TRAINING_OUTPUT_NAMES`)."""
        by_input = dict(zip(self.mrcnn_input_names, inputs))
        out = outputs
        rpn_match = by_input["input_rpn_match"]
        meta = tf.cast(by_input["input_image_meta"], tf.float32)
        active_class_ids = parse_image_meta_graph(meta)["active_class_ids"]
        mask_rows = tf.shape(out["mrcnn_mask_logits"])[1]
        raw = {
            "rpn_class_loss": rpn_class_loss(
                rpn_match, out["rpn_class_logits"]),
            "rpn_bbox_loss": rpn_bbox_loss(
                by_input["input_rpn_bbox"], rpn_match, out["rpn_bbox"]),
            "mrcnn_class_loss": mrcnn_class_loss(
                out["target_class_ids"], out["mrcnn_class_logits"], active_class_ids,
                rois=out["output_rois"]),
            "mrcnn_bbox_loss": mrcnn_bbox_loss(
                out["target_bbox"], out["target_class_ids"], out["mrcnn_bbox"]),
            # The mask head runs on the leading (positive-first) RoIs only.
            "mrcnn_mask_loss": mrcnn_mask_loss(
                out["target_mask"][:, :mask_rows], out["target_class_ids"][:, :mask_rows],
                out["mrcnn_mask_logits"], from_logits=True,
                mask_loss=self.mrcnn_mask_loss_kind),
        }
        if KEYPOINT_LOSS_NAME in self.mrcnn_loss_names:
            # The keypoint head runs on the leading (positive-first) RoIs, too.
            rows = tf.shape(out["mrcnn_keypoint_logits"])[1]
            raw[KEYPOINT_LOSS_NAME] = mrcnn_keypoint_loss(
                out["target_keypoint_indices"][:, :rows], out["target_keypoint_valid"][:, :rows],
                out["mrcnn_keypoint_logits"])
        return {name: tf.cast(raw[name], tf.float32) * self.mrcnn_loss_weights[name]
                for name in self.mrcnn_loss_names}

    def weight_decay_loss(self):
        """``0.5 * WEIGHT_DECAY * sum(w ** 2)`` over trainable kernels.

        One ``L2Loss`` op per kernel (``sum(w ** 2) / 2``), whose gradient is
        one multiply: ``Square`` + ``Sum`` gave a broadcast (``Tile``) of the
        upstream gradient and a multiply per kernel, more time in the training
        step than the optimizer's update.
        """
        kernels = weight_decay_variables(self.trainable_variables)
        if not kernels or self.mrcnn_weight_decay == 0:
            return tf.constant(0.0, tf.float32)
        total = tf.add_n([tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels])
        return self.mrcnn_weight_decay * total

    def _update_trackers(self, losses, decay, total):
        self._mrcnn_trackers["loss"].update_state(total)
        self._mrcnn_trackers["weight_decay_loss"].update_state(decay)
        for name in self.mrcnn_loss_names:
            self._mrcnn_trackers[name].update_state(losses[name])
        results = {name: t.result() for name, t in self._mrcnn_trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages step results across workers with
            # strategy.reduce("MEAN", value, axis=0), which needs an axis: [1]
            # in, a scalar out.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def train_step(self, data):
        inputs = self._ordered_inputs(data)
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self(inputs, training=True)
            # Name scopes: profiles group the losses' ops (and their gradients) by them.
            with tf.name_scope("losses"):
                losses = self.compute_mrcnn_losses(inputs, outputs)
            with tf.name_scope("weight_decay"):
                decay = self.weight_decay_loss()
            total = tf.add_n(list(losses.values())) + decay
            # Under a tf.distribute strategy the optimizer sums the replicas'
            # gradients: each replica contributes 1/N of its mean loss. Under
            # mixed_float16 the LossScaleOptimizer multiplies by its loss scale
            # (and divides the gradients by it again in apply_gradients).
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / replicas if replicas > 1 else total
            scaled = self.optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if pairs and replicas > 1 and getattr(self, "mrcnn_clip_norm", None):
            pairs = self._clip_across_replicas(pairs, replicas)
        if pairs:
            self.optimizer.apply_gradients(pairs)
        return self._update_trackers(losses, decay, total)

    def _clip_across_replicas(self, pairs, replicas):
        """Global-norm clipping of the replicas' summed gradient.

        Keras optimizers clip each replica's gradient before summing them, which
        is not the clipping of the total gradient that one device does. Here
        the gradients are summed across replicas first (an extra all-reduce),
        clipped to ``mrcnn_clip_norm`` by their global norm (without the loss
        scale), and divided by the replica count again so that the optimizer's
        own sum restores the clipped total. `MaskRCNN.compile` then builds the
        optimizer without ``global_clipnorm``.
        """
        context = tf.distribute.get_replica_context()
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        loss_scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        unscaled = [tf.cast(g, tf.float32) / loss_scale for g in summed]
        clipped, _ = tf.clip_by_global_norm(unscaled, self.mrcnn_clip_norm)
        factor = loss_scale / replicas
        return [(tf.cast(g * factor, v.dtype), v) for g, (_, v) in zip(clipped, pairs)]

    def test_step(self, data):
        inputs = self._ordered_inputs(data)
        outputs = self(inputs, training=False)
        losses = self.compute_mrcnn_losses(inputs, outputs)
        decay = self.weight_decay_loss()
        total = tf.add_n(list(losses.values())) + decay
        return self._update_trackers(losses, decay, total)


def training_model(config):
    """The training graph as a `MaskRCNNKerasModel` with its losses configured."""
    model = build_training_model(config, model_class=MaskRCNNKerasModel)
    # AdamW decays the weights itself (decoupled); the loss then has no L2 term.
    l2 = 0.0 if config.OPTIMIZER == "AdamW" else config.WEIGHT_DECAY
    keypoints = int(config.NUM_KEYPOINTS or 0) > 0
    model.configure_losses(training_input_names(config), config.LOSS_WEIGHTS, l2,
                           mask_loss=config.MASK_LOSS,
                           keypoint_loss_weight=config.KEYPOINT_LOSS_WEIGHT if keypoints
                           else None)
    return model


def make_optimizer(config, learning_rate, momentum, trainable_variables, clip=True):
    """The optimizer ``config.OPTIMIZER`` names, with global-norm clipping
    (``GRADIENT_CLIP_NORM``; ``clip=False`` leaves it to the train step, see
    `MaskRCNNKerasModel._clip_across_replicas`), wrapped for loss scaling under
    ``mixed_float16``.

    SGD uses ``momentum``; Adam and AdamW their default betas. AdamW applies
    ``WEIGHT_DECAY`` decoupled, to the kernels among ``trainable_variables``
    only (the training graph then has no L2 term, see `mrcnn.modeling.assembly`).

    ``learning_rate``: a number or a Keras ``LearningRateSchedule``, resolved
    with the Config's schedule presets by
    `mrcnn.engine.schedules.resolve_learning_rate` (a plain number without
    presets stays a number).
    """
    learning_rate = resolve_learning_rate(config, learning_rate)
    kind = config.OPTIMIZER
    clip_norm = config.GRADIENT_CLIP_NORM if clip else None
    if kind == "SGD":
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                         global_clipnorm=clip_norm)
    elif kind == "Adam":
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate, global_clipnorm=clip_norm)
    else:  # "AdamW": decoupled decay instead of the L2 term (WEIGHT_DECAY)
        optimizer = keras.optimizers.AdamW(learning_rate=learning_rate,
                                           weight_decay=config.WEIGHT_DECAY,
                                           global_clipnorm=clip_norm)
        # Like the L2 term: kernels only, not biases or batch-norm gamma/beta.
        kernels = {id(v) for v in weight_decay_variables(trainable_variables)}
        optimizer.exclude_from_weight_decay(var_list=[
            v for v in trainable_variables if id(v) not in kernels])
    return mrcnn_precision.wrap_optimizer(
        optimizer, mrcnn_precision.policy_name(config.MIXED_PRECISION))


def tensorboard_callbacks(log_dir):
    """``[keras.callbacks.TensorBoard(log_dir)]``, or ``[]`` with a warning when the
    ``tensorboard`` package (needed by ``tf.summary``) is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("tensorboard is not installed: training runs without TensorBoard "
                      f"logs in {log_dir!r} (pip install tensorboard)", stacklevel=3)
        return []
    return [keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0,
                                        write_graph=False)]
