"""`log`: one line about an array (name, shape, min, max, dtype), for notebooks and
debugging; also importable as ``mrcnn.model.log`` as in the old API."""

import numpy as np


def log(text, array=None):
    """Print ``text``; with an array also its shape, min, max and dtype."""
    if array is not None:
        array = np.asarray(array)
        text = text.ljust(25)
        if array.size:
            text += (f"shape: {str(array.shape):20}  min: {array.min():10.5f}  "
                     f"max: {array.max():10.5f}  {array.dtype}")
        else:
            text += f"shape: {str(array.shape):20}  min: {'':10}  max: {'':10}  {array.dtype}"
    print(text)
