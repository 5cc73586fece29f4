"""The one Keras internal mrcnn overrides: present, with the expected signature."""

import keras
import pytest

from mrcnn.engine import keras_compat
from mrcnn.engine.trainer import MaskRCNNKerasModel


def test_installed_keras_has_the_hook_the_override_needs():
    # Fails loudly on a Keras release that renames or changes the hook.
    keras_compat.check_keras_hook()
    assert MaskRCNNKerasModel._maybe_symbolic_build is \
        keras_compat.BuiltGraphFit._maybe_symbolic_build


def test_check_fails_when_the_hook_changes(monkeypatch):
    monkeypatch.setattr(keras.Model, keras_compat.HOOK_NAME,
                        lambda self, batch: None, raising=False)
    with pytest.raises(RuntimeError, match="changed"):
        keras_compat.check_keras_hook()
    monkeypatch.delattr(keras.Model, keras_compat.HOOK_NAME, raising=False)
    # Deleting the override on keras.Model leaves the base class's method:
    # only a hook missing from every base class reads as gone.
    if getattr(keras.Model, keras_compat.HOOK_NAME, None) is None:
        with pytest.raises(RuntimeError, match="gone"):
            keras_compat.check_keras_hook()
