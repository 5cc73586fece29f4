"""The fixture the op tests share: each test runs on both RoIAlign implementations."""

import os

import pytest

import mrcnn.ops as ops

SKIP_BUILD = bool(os.environ.get("MRCNN_OPS_SKIP_BUILD"))


@pytest.fixture(params=["compiled", "tf"])
def impl(request, monkeypatch):
    """Run the test with MRCNN_ROI_ALIGN_IMPL set to each implementation."""
    if request.param == "compiled" and SKIP_BUILD:
        pytest.skip("MRCNN_OPS_SKIP_BUILD is set")
    monkeypatch.setenv(ops.IMPL_ENV, request.param)
    ops.reset_implementation()
    assert ops.implementation() == request.param
    yield request.param
    ops.reset_implementation()
