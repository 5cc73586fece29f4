"""Tests of Config.XLA (mrcnn.engine.xla): XLA auto-clustering of the graph."""

import os
import subprocess
import sys
import textwrap

import pytest

from model_fixtures import TinyConfig
from mrcnn.engine import xla
from locations import TESTS_DIR

TESTS = TESTS_DIR

# Phase 1 builds and runs a float32 model without XLA, phase 2 the same
# weights with Config.XLA = True, then trains a model with XLA; markers on
# stderr separate TensorFlow's log lines of the two phases.
SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    import numpy as np
    from model_fixtures import RectanglesDataset, TinyConfig
    from mrcnn import model as modellib

    class Plain(TinyConfig):
        IMAGES_PER_GPU = 1
        SEED = 4
        DETECTION_MIN_CONFIDENCE = 0.0

    class WithXla(Plain):
        XLA = True

    image = RectanglesDataset([3]).load_image(0)
    plain = modellib.MaskRCNN("inference", Plain(), {logs!r})
    first = plain.detect([image])[0]
    print("PHASE 2", file=sys.stderr, flush=True)
    compiled = modellib.MaskRCNN("inference", WithXla(), {logs!r})
    compiled.keras_model.set_weights(plain.keras_model.get_weights())
    second = compiled.detect([image])[0]
    assert len(first["scores"]) == len(second["scores"]) > 0
    np.testing.assert_allclose(second["scores"], first["scores"], atol=1e-4)
    np.testing.assert_allclose(second["rois"], first["rois"], atol=1)
    print("DETECTIONS MATCH", len(first["scores"]), file=sys.stderr, flush=True)

    class TrainXla(TinyConfig):
        XLA = True
        SEED = 4
        STEPS_PER_EPOCH = 2
        VALIDATION_STEPS = 0

    trainer = modellib.MaskRCNN("training", TrainXla(), {logs!r})
    history = trainer.train(RectanglesDataset([1, 2, 3, 2]), None, learning_rate=0.001,
                            epochs=1, layers="all", verbose=0)
    assert all(np.isfinite(v[0]) for v in history.history.values()), history.history
    print("TRAINED", history.history["loss"][0], file=sys.stderr, flush=True)
""")


def test_configure_xla_off_is_a_no_op():
    assert xla.configure_xla(False) is False


def test_config_xla_must_be_a_bool():
    class BadXla(TinyConfig):
        XLA = "yes"

    with pytest.raises(ValueError, match=r"BadXla.XLA: expected True or False"):
        BadXla()


@pytest.mark.slow
def test_xla_clusters_compile_give_the_same_detections_and_train(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               # CPU clusters are allowed; whether anything is clustered is up
               # to the auto-jit level, which only Config.XLA sets.
               TF_XLA_FLAGS="--tf_xla_cpu_global_jit")
    code = SCRIPT.format(tests=TESTS, logs=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    before, _, after = log.partition("PHASE 2")
    assert "DETECTIONS MATCH" in after
    assert "TRAINED" in after
    assert "Compiled cluster using XLA" not in before
    assert "Compiled cluster using XLA" in after
