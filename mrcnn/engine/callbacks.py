"""Keras callbacks and helpers that keep `MaskRCNN.train` safe to stop and resume.

* `EpochCheckpoint`: after every epoch, atomically saves
  ``mask_rcnn_<name>_<epoch:04d>.h5`` -- unless the weights are not finite (a
  NaN/inf loss was seen, or any weight is NaN/inf), so the newest checkpoint on
  disk always holds finite weights.
* `NonFiniteLossGuard`: checks the logged losses after every batch; the first
  NaN/inf sets ``model.stop_training`` and records which loss, epoch and step.
  `MaskRCNN.train` then raises ``FloatingPointError`` with that message.
* `SkippedImagesReport`: prints the number of images the data pipeline dropped
  (``SKIP_BAD_IMAGES``) at the end of each epoch and adds it to the epoch logs
  as ``skipped_images`` (so it is in the History and TensorBoard).
* Interrupted checkpoints: on ``KeyboardInterrupt`` `MaskRCNN.train` saves the
  current weights as ``mask_rcnn_<name>_<N:04d>_interrupted.h5``, ``N`` being
  the epoch that was running (incomplete). Loading such a file resumes at
  epoch ``N`` (it is re-run from the interrupted weights); `find_last` prefers
  regular checkpoints and returns an interrupted one only when its log
  directory has no regular checkpoint.
* `remove_stale_temp_files`: deletes the temporary file of a save that was
  killed (``*.h5.tmp-<pid>`` whose process is gone).
* `configure_reproducibility`: seeds Python, NumPy and TensorFlow and
  optionally turns on TensorFlow's op determinism.

Epoch numbers in file names are 1-based (Keras' 0-based epoch + 1).
"""

import logging
import math
import os
import warnings

import keras
import numpy as np

from mrcnn.constants import LOSS_NAMES

__all__ = ["EpochCheckpoint", "NonFiniteLossGuard", "SkippedImagesReport",
           "weights_are_finite", "interrupted_checkpoint_path", "INTERRUPTED_SUFFIX",
           "configure_reproducibility", "remove_stale_temp_files", "save_interrupted"]

logger = logging.getLogger(__name__)

INTERRUPTED_SUFFIX = "_interrupted"

# Order in which the guard reports non-finite values: the losses first
# (most specific), then the weight decay, then the total.
_CHECKED_LOGS = LOSS_NAMES + ("weight_decay_loss", "loss")


def weights_are_finite(keras_model):
    """True when every floating-point weight of ``keras_model`` is finite."""
    for variable in keras_model.weights:
        if "float" not in str(variable.dtype):
            continue
        # Reduced where the variable lives (no copy of the weights to the host).
        if not bool(keras.ops.convert_to_numpy(keras.ops.all(keras.ops.isfinite(variable)))):
            return False
    return True


def interrupted_checkpoint_path(path_template, epoch):
    """``.../mask_rcnn_<name>_<epoch:04d>_interrupted.h5`` for a checkpoint template
    ``.../mask_rcnn_<name>_{epoch:04d}.h5`` and a 1-based ``epoch``."""
    path = path_template.format(epoch=epoch)
    root, ext = os.path.splitext(path)
    return root + INTERRUPTED_SUFFIX + ext


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stop training at the first batch whose logged losses are NaN or inf.

    Attributes (after a stop):
        failure: dict ``{"losses": [names], "values": {name: value},
            "epoch": 1-based epoch, "step": 1-based step in that epoch}``, or
            None while all is well.
        message: a sentence describing ``failure`` (None while all is well).

    It also counts the batches run since the last epoch end
    (``batches_in_epoch``) and keeps the running epoch (1-based,
    ``current_epoch``), which `MaskRCNN.train` uses on KeyboardInterrupt.
    """

    def __init__(self):
        super().__init__()
        self.failure = None
        self.current_epoch = None
        self.batches_in_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch + 1
        self.batches_in_epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches_in_epoch += 1
        if self.failure is not None or not logs:
            return
        bad = {}
        for name in _CHECKED_LOGS:
            if name in logs:
                value = float(np.asarray(logs[name]))
                if not math.isfinite(value):
                    bad[name] = value
        if bad:
            self.failure = {"losses": list(bad), "values": bad,
                            "epoch": self.current_epoch, "step": batch + 1}
            self.model.stop_training = True
            print(f"\n{self.message}", flush=True)

    @property
    def message(self):
        if self.failure is None:
            return None
        f = self.failure
        first = f["losses"][0]
        others = f["losses"][1:]
        also = f" (also non-finite: {', '.join(others)})" if others else ""
        return (f"Training stopped: {first} became {f['values'][first]} at epoch "
                f"{f['epoch']}, step {f['step']}{also}. The weights of epoch "
                f"{f['epoch']} were not saved; the newest checkpoint holds the last "
                f"finite weights. Lower the learning rate or GRADIENT_CLIP_NORM, or "
                f"check the training data.")


class EpochCheckpoint(keras.callbacks.Callback):
    """Save the weights after every epoch to ``path_template.format(epoch=N)``.

    ``N`` is the 1-based number of the epoch just finished (Keras' 0-based
    ``epoch + 1``), so training epochs 0..2 writes ``..._0001.h5`` to
    ``..._0003.h5``. ``save_fn(keras_model, path)`` does the writing
    (`mrcnn.weights.io.save_weights`, atomic).

    Nothing is saved for an epoch when ``guard`` (a `NonFiniteLossGuard`) saw a
    non-finite loss or any weight is NaN/inf; the epoch is listed in
    ``refused`` instead. After a successful save, a leftover
    ``..._<N>_interrupted.h5`` of the same epoch is removed (superseded).
    """

    def __init__(self, path_template, save_fn, verbose=0, guard=None):
        super().__init__()
        self.path_template = path_template
        self.save_fn = save_fn
        self.verbose = verbose
        self.guard = guard
        self.saved = []
        self.refused = []

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if (self.guard is not None and self.guard.failure is not None) or \
                not weights_are_finite(self.model):
            self.refused.append(number)
            print(f"\nEpoch {number}: weights are not finite (NaN/inf); checkpoint NOT "
                  f"saved", flush=True)
            return
        path = self.path_template.format(epoch=number)
        self.save_fn(self.model, path)
        self.saved.append(path)
        stale = interrupted_checkpoint_path(self.path_template, number)
        if os.path.exists(stale):
            os.remove(stale)
        if self.verbose:
            print(f"\nEpoch {number}: saved weights to {path}")


def save_interrupted(keras_model, guard, checkpoint, path_template, save_fn):
    """On KeyboardInterrupt: save the weights of the unfinished epoch.

    Writes ``..._<N:04d>_interrupted.h5`` (N = ``guard.current_epoch``) with
    ``save_fn(keras_model, path)`` and returns its path; returns None (and
    says why) when no step ran since the last checkpoint or the weights are
    not finite.
    """
    epoch = guard.current_epoch
    if epoch is None or guard.batches_in_epoch == 0:
        print("\nTraining interrupted; no step since the last checkpoint "
              f"({checkpoint.saved[-1] if checkpoint.saved else 'none'}), nothing "
              "more to save.", flush=True)
        return None
    if guard.failure is not None or not weights_are_finite(keras_model):
        print("\nTraining interrupted; the weights are not finite, so they were not "
              "saved.", flush=True)
        return None
    path = interrupted_checkpoint_path(path_template, epoch)
    save_fn(keras_model, path)
    print(f"\nTraining interrupted in epoch {epoch}: saved the current weights to "
          f"{path} (load it to re-run epoch {epoch} from them; find_last() still "
          f"prefers the last completed epoch's checkpoint).", flush=True)
    return path


class SkippedImagesReport(keras.callbacks.Callback):
    """At each epoch end, report how many images the pipeline has skipped.

    ``counter`` is a `mrcnn.data.pipeline.SkippedImages` shared with the pipeline. The
    total so far is added to the epoch logs as ``skipped_images``; when it
    grew during the epoch, a line is printed and logged as a warning.
    """

    def __init__(self, counter, verbose=1):
        super().__init__()
        self.counter = counter
        self.verbose = verbose
        self._last_total = 0

    def on_epoch_end(self, epoch, logs=None):
        total = self.counter.total
        new = total - self._last_total
        self._last_total = total
        if logs is not None:
            logs["skipped_images"] = float(total)
        if new:
            text = (f"Epoch {epoch + 1}: skipped {new} bad image(s) "
                    f"({total} in total; ids {self.counter.most_common(5)} most often)")
            logger.warning(text)
            if self.verbose:
                print(f"\n{text}", flush=True)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but not ours, or cannot tell: keep its file
    return True


def remove_stale_temp_files(log_dir):
    """Delete ``mask_rcnn_*.h5.tmp-<pid>`` files left in ``log_dir`` by a save
    that was killed (its process ``<pid>`` no longer runs); returns their paths.

    Such files are never complete checkpoints (`mrcnn.weights.io.save_weights`
    renames a temporary file only once it is fully written) and `find_last`
    ignores them; this only tidies up.
    """
    removed = []
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return removed
    for name in names:
        head, sep, pid = name.rpartition(".h5.tmp-")
        if not sep or not head.startswith("mask_rcnn") or not pid.isdigit():
            continue
        if int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        path = os.path.join(log_dir, name)
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def configure_reproducibility(seed, deterministic):
    """Seed everything for a reproducible run; returns the seed used (or None).

    Args:
        seed: int or None.
        deterministic: also call
            ``tf.config.experimental.enable_op_determinism()`` (process-wide,
            cannot be undone, slower; ops without a deterministic kernel then
            raise). With ``seed`` None, seed 0 is used.

    Returns None (and changes nothing) when ``seed`` is None and
    ``deterministic`` is False.

    What `MaskRCNN.train` makes reproducible with a seed (same machine, same
    TensorFlow build, CPU; on GPU only with ``deterministic``):

    * ``keras.utils.set_random_seed(seed)``: Python's ``random``, NumPy's
      global generator and TensorFlow's global seed, from which the in-graph
      RoI sampling (DetectionTargetLayer's shuffles) takes its op seeds.
    * the data pipeline (`mrcnn.data.pipeline.build_training_dataset` with ``seed``):
      shuffle order; element ``k`` draws from ``default_rng([seed, k])`` (crop
      position, RPN anchor sampling, random RoIs); ``map(...,
      deterministic=True)`` keeps the element order fixed although
      ``numpy_function`` calls run in parallel.
    * with ``deterministic`` and an augmentation: the augmenting map runs on
      one thread, so augmenters drawing from Python's / NumPy's global RNG
      consume it in a fixed order.

    The initial weights are covered because `MaskRCNN.__init__` calls this
    before building the graph. Not covered: augmenters with their
    own random state (seed them yourself, e.g. albumentations'
    ``Compose(seed=...)``); a resumed run, whose pipeline restarts the seeded
    stream, is reproducible but not identical to an uninterrupted run; and
    TensorFlow's oneDNN CPU kernels, which are not reproducible from run to run
    (two runs of the same seeded training differ from the second step with them,
    and are identical without): for bit-identical CPU runs set
    ``TF_ENABLE_ONEDNN_OPTS=0`` in the environment before TensorFlow is imported
    (`onednn_enabled`; ``deterministic`` warns when it is still on).
    """
    if seed is None and not deterministic:
        return None
    seed = 0 if seed is None else int(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
        if onednn_enabled():
            warnings.warn(
                "DETERMINISTIC: TensorFlow's oneDNN CPU kernels are on, and they are not "
                "reproducible from run to run; set TF_ENABLE_ONEDNN_OPTS=0 in the environment "
                "before TensorFlow is imported for bit-identical CPU runs", UserWarning,
                stacklevel=3)
    return seed


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels: on by default on x86 Linux
    builds, off when ``TF_ENABLE_ONEDNN_OPTS`` is ``0`` / ``false`` (read by
    TensorFlow when it is imported)."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value is not None:
        return value.strip().lower() not in ("0", "false", "off", "")
    import platform
    return platform.system() == "Linux" and platform.machine().lower() in ("x86_64", "amd64")
