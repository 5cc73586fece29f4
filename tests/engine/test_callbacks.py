"""Reproducibility settings (mrcnn.engine.callbacks); the training callbacks
themselves are exercised through MaskRCNN.train in test_robustness_training.py."""

import pytest
import tensorflow as tf

from mrcnn.engine import callbacks


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), ("1", True),
                                             ("True", True)])
def test_onednn_setting_is_read_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", value)
    assert callbacks.onednn_enabled() is expected


def test_deterministic_warns_while_onednn_is_on(monkeypatch):
    calls = []
    # enable_op_determinism is process-wide and cannot be undone: record it instead.
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism",
                        lambda: calls.append(True))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with pytest.warns(UserWarning, match="TF_ENABLE_ONEDNN_OPTS=0"):
        assert callbacks.configure_reproducibility(3, True) == 3
    assert calls == [True]
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert callbacks.configure_reproducibility(None, True) == 0
    assert callbacks.configure_reproducibility(None, False) is None
