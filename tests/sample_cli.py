"""Running a sample's command line in a subprocess with tiny model settings."""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

# Config overrides that make any sample's model tiny (64 px images assumed).
TINY_SETTINGS = [
    "--set", "RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128)", "--set", "TRAIN_ROIS_PER_IMAGE=16",
    "--set", "RPN_TRAIN_ANCHORS_PER_IMAGE=32", "--set", "POST_NMS_ROIS_TRAINING=64",
    "--set", "POST_NMS_ROIS_INFERENCE=32", "--set", "PRE_NMS_LIMIT=256",
    "--set", "TOP_DOWN_PYRAMID_SIZE=32", "--set", "FPN_CLASSIF_FC_LAYERS_SIZE=32",
    "--set", "MAX_GT_INSTANCES=4", "--set", "DETECTION_MAX_INSTANCES=8",
    "--set", "MINI_MASK_SHAPE=(14, 14)"]


def run_cli(script, *args):
    """Run ``python script args...`` from the repository root; assert exit code 0."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
