"""The one place where mrcnn relies on a Keras internal.

``Model.fit`` calls ``Trainer._maybe_symbolic_build(iterator=..., data_batch=...)``
before training. Under a ``tf.distribute`` strategy Keras' version first averages
one batch over the replicas to build the model symbolically, which fails for a
model with several (dict) inputs under MultiWorkerMirroredStrategy
(keras-team/keras#20329) and for bool inputs (the gt masks) under
MirroredStrategy. Keras offers no public switch for this. Our graphs are built
when they are created and have no compiled losses or metrics, so the
optimizer's variables are all that is left to create: `BuiltGraphFit` does only
that.

`check_keras_hook` says whether Keras still has the hook with the signature
this override expects; the test suite calls it, so a Keras release that renames
or changes the hook fails the suite loudly instead of silently bypassing the
override.
"""

import inspect

import keras

__all__ = ["BuiltGraphFit", "check_keras_hook", "HOOK_NAME", "HOOK_PARAMETERS"]

HOOK_NAME = "_maybe_symbolic_build"
HOOK_PARAMETERS = ("self", "iterator", "data_batch")


def check_keras_hook():
    """Raise ``RuntimeError`` unless ``keras.Model`` has the hook this module
    overrides, with the parameters ``HOOK_PARAMETERS``, and ``fit`` calls it."""
    hook = getattr(keras.Model, HOOK_NAME, None)
    if hook is None:
        raise RuntimeError(f"keras {keras.__version__}: keras.Model.{HOOK_NAME} is gone; "
                           "mrcnn.engine.keras_compat.BuiltGraphFit needs a new hook")
    params = tuple(inspect.signature(hook).parameters)
    if params != HOOK_PARAMETERS:
        raise RuntimeError(f"keras {keras.__version__}: keras.Model.{HOOK_NAME}{params} "
                           f"changed (expected {HOOK_PARAMETERS})")
    if HOOK_NAME not in inspect.getsource(keras.Model.fit):
        raise RuntimeError(f"keras {keras.__version__}: Model.fit no longer calls {HOOK_NAME}")


class BuiltGraphFit:
    """Mixin for a functional model built at creation: ``fit`` under a strategy
    only builds the optimizer (see the module docstring)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not self.built:
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        return None
