"""mrcnn: Mask R-CNN on Keras 3 / TensorFlow 2.

The familiar imports keep working::

    from mrcnn import model as modellib, utils, visualize
    from mrcnn.config import Config

Submodules are imported lazily so that ``import mrcnn.utils`` does not pay for
building TensorFlow graphs.
"""

__version__ = "3.0.0.dev0"
