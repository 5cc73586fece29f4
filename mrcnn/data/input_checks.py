"""Validate and convert the images a user passes to `MaskRCNN.detect()`.

Pure NumPy (no TensorFlow), so the checks are cheap and run before any graph
work. Every error names the offending image by its position in the caller's
list (``"image 2: ..."``), says what it got (type, shape, dtype) and what was
expected.

The value and channel conversions are those of `mrcnn.data.dataset.to_rgb_uint8`
(the same rules as for dataset images), reused rather than repeated here.
This module only adds what inference needs on top: the list/batch handling,
rank and shape messages with the image index, a NaN/inf check (to_rgb_uint8
silently maps NaN to 0, which at inference would hide a bug in the caller's
preprocessing), and the ``IMAGE_CHANNEL_COUNT != 3`` path.

Typical use, at the top of `MaskRCNN.detect()`::

    images = prepare_detect_images(images, self.config.IMAGE_CHANNEL_COUNT)
"""

import warnings

import numpy as np

from mrcnn.data.dataset import to_rgb_uint8

__all__ = ["prepare_detect_images", "check_image_for_model"]

# dtype kinds accepted as pixel values: bool, signed/unsigned int, float.
# Complex, object, string, datetime/timedelta ("M"/"m") and void are rejected.
_NUMERIC_KINDS = "biuf"
# Channel counts to_rgb_uint8 understands: gray, gray + alpha, RGB, RGBA.
_RGB_CONVERTIBLE_CHANNELS = (1, 2, 3, 4)


def _describe(value):
    """Short description of a value for error messages: type, shape and dtype."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _as_numeric_array(image, index, channel_count):
    """``np.asarray(image)`` if it gives a bool/int/float array, else ValueError."""
    expected = f"[H, W, {channel_count}]"
    if isinstance(image, np.ndarray):
        array = image
    else:
        try:
            array = np.asarray(image)
        except Exception as exc:  # ragged lists and odd objects raise many types
            raise ValueError(
                f"image {index}: expected a NumPy array {expected}, got "
                f"{type(image).__name__} that cannot be converted to an array ({exc})"
            ) from exc
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise ValueError(
                f"image {index}: expected a NumPy array {expected} of numbers, got "
                f"{type(image).__name__} (np.asarray gives dtype {array.dtype})")
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(
            f"image {index}: unsupported dtype {array.dtype} (shape {array.shape}); "
            f"expected uint8 (or another integer, bool or float dtype) pixel values")
    return array


def check_image_for_model(image, index, min_side=1, channel_count=3):
    """Validate one image for inference and return it as a NumPy array.

    No value conversion happens here (see `prepare_detect_images`); the only
    reshapes are dropping a leading single-frame axis (``[1, H, W, C]`` ->
    ``[H, W, C]``) and, for ``channel_count == 1``, ``[H, W]`` -> ``[H, W, 1]``.

    Args:
        image: ``[H, W]``, ``[H, W, C]`` or single-frame ``[1, H, W, C]`` array,
            or an array-like (nested lists, PIL image) that ``np.asarray``
            turns into a bool/int/float array.
        index: position of the image in the caller's list (messages only).
        min_side: smallest allowed height and width, in pixels.
        channel_count: ``config.IMAGE_CHANNEL_COUNT``. With 3, the channel
            counts 1, 2 (gray + alpha), 3 and 4 (RGBA) are accepted (they are
            converted later); otherwise exactly ``channel_count`` channels.

    Returns:
        The image as an ndarray, ``[H, W]`` or ``[H, W, C]`` (``[H, W, C]``
        only when ``channel_count != 3``).

    Raises:
        ValueError: not numeric (complex, object, strings...); rank other
            than 2 or 3 (or a 4-D stack of several frames); an unsupported
            channel count; height or width below ``min_side``; float
            NaN/inf values. The message starts with ``"image <index>:"``.
    """
    array = _as_numeric_array(image, index, channel_count)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]  # single-frame file (e.g. some TIFF/GIF readers)
    if channel_count == 1 and array.ndim == 2:
        array = array[..., None]

    if channel_count == 3:
        expected = "[H, W] (gray) or [H, W, 1|2|3|4] (gray, gray+alpha, RGB, RGBA)"
        rank_ok = array.ndim == 2 or (
            array.ndim == 3 and array.shape[-1] in _RGB_CONVERTIBLE_CHANNELS)
    else:
        expected = f"[H, W, {channel_count}] (config.IMAGE_CHANNEL_COUNT={channel_count})"
        rank_ok = array.ndim == 3 and array.shape[-1] == channel_count
    if not rank_ok:
        hint = ""
        if array.ndim == 4:
            hint = (f"; it looks like a stack of {array.shape[0]} images: pass them as "
                    f"separate list entries, e.g. list(batch)")
        elif array.ndim == 3 and channel_count == 3 and array.shape[0] in (1, 3, 4):
            hint = "; channels-first [C, H, W]? use np.moveaxis(image, 0, -1)"
        raise ValueError(f"image {index}: expected {expected}, got shape {array.shape}{hint}")

    height, width = array.shape[:2]
    if height < min_side or width < min_side:
        what = "is empty" if min(height, width) == 0 else "is too small"
        raise ValueError(f"image {index}: {what}: shape {array.shape}, height and width "
                         f"must be at least {min_side} pixel(s)")

    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad_values = int(array.size - np.count_nonzero(finite))
            bad_pixels = bad_values if array.ndim == 2 else int(
                np.count_nonzero(~finite.all(axis=-1)))
            raise ValueError(
                f"image {index}: {bad_pixels} pixel(s) of {height * width} contain NaN or "
                f"inf ({bad_values} value(s)); clean the image (e.g. np.nan_to_num) first")
    return array


def _warn_if_integer_image_looks_8bit(array, index):
    """Warn when a wider-than-8-bit integer image only holds values 0..255.

    Such an image (e.g. ``np.array(nested_list)`` gives int64) is scaled by
    its dtype's range by `to_rgb_uint8`, which makes it (nearly) black.
    """
    if array.dtype.kind not in "iu" or array.dtype == np.uint8 or array.size == 0:
        return
    top = int(array.max())
    if 0 < top <= 255:
        warnings.warn(
            f"image {index}: dtype {array.dtype} with values up to {top} is scaled by the "
            f"dtype's range ({np.iinfo(array.dtype).max}), so it becomes nearly black; if "
            f"the values are 0..255, pass image.astype(np.uint8)", UserWarning, stacklevel=4)


def prepare_detect_images(images, channel_count=3):
    """Validate the images given to `MaskRCNN.detect()` and convert them to uint8 RGB.

    Args:
        images: a list or tuple of images, or a 4-D ndarray ``[N, H, W, C]``
            (taken as N images). A single image passed directly (an ndarray
            of rank 2 or 3) is a TypeError: wrap it as ``[image]``. Sizes may
            differ between images. Each image is an ndarray or an array-like
            (nested lists, PIL image) for which ``np.asarray`` gives a
            bool/int/float array.
        channel_count: ``config.IMAGE_CHANNEL_COUNT``.

    Returns:
        list of N arrays. With ``channel_count == 3``: uint8 ``[H, W, 3]``
        with each input's own H and W. A uint8 RGB input that is already
        C-contiguous is returned as is (not copied).
        With another ``channel_count``: each image unchanged (same dtype and
        values, no RGB conversion), only checked to be ``[H, W, channel_count]``
        (``[H, W]`` is accepted for ``channel_count == 1`` and gets a channel
        axis).

    Conversion rules for ``channel_count == 3`` (those of
    `mrcnn.data.dataset.to_rgb_uint8`):
      * channels: ``[H, W]`` and ``[H, W, 1]`` gray -> repeated to 3
        channels; ``[H, W, 2]`` gray + alpha -> gray repeated (alpha
        dropped); ``[H, W, 3]`` unchanged; ``[H, W, 4]`` RGBA -> alpha
        dropped. Any other channel count is a ValueError.
      * a single-frame ``[1, H, W, C]`` image (as some file readers give) is
        taken as ``[H, W, C]``; a 4-D element with more frames is a
        ValueError (to_rgb_uint8 would keep frame 0 only, but detect()
        returns one result per list entry, so dropping frames would lose
        images silently).
      * values: uint8 unchanged; bool -> 0 / 255; other integer dtypes
        (uint16, int32, ...) scaled by the dtype's range,
        ``round(v * 255 / iinfo(dtype).max)``, negatives clipped to 0 (a
        UserWarning is issued if such an image only holds values 1..255,
        which usually means 8-bit data in a wide dtype: it would come out
        nearly black); float: if all values are in [0, 1] they are scaled
        by 255, otherwise taken as 0..255 and clipped, then rounded.

    Raises:
        TypeError: ``images`` is not a list, tuple or 4-D ndarray (a single
            image passed directly included).
        ValueError: no images; an element that is not a numeric array;
            complex/object/string dtypes; rank other than 2 or 3; an
            unsupported channel count; height or width 0; float NaN or inf
            anywhere (the message gives how many pixels). Element errors
            start with ``"image <index>:"``.
    """
    if not isinstance(channel_count, (int, np.integer)) or isinstance(channel_count, bool) \
            or channel_count < 1:
        raise ValueError(f"channel_count (config.IMAGE_CHANNEL_COUNT) must be a positive "
                         f"integer, got {channel_count!r}")
    channel_count = int(channel_count)

    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            raise TypeError(
                f"detect: expected a list of images, got a single image array of shape "
                f"{images.shape}; wrap it in a list: detect([image])")
        if images.ndim != 4:
            raise TypeError(
                f"detect: expected a list of images [H, W, {channel_count}] or a 4-D batch "
                f"[N, H, W, {channel_count}], got an array of shape {images.shape}")
        images = list(images)
    elif not isinstance(images, (list, tuple)):
        raise TypeError(f"detect: expected a list of images [H, W, {channel_count}], got "
                        f"{type(images).__name__}; wrap a single image as [image]")
    if len(images) == 0:
        raise ValueError("detect: got no images (an empty list); pass at least one image")

    prepared = []
    for index, image in enumerate(images):
        array = check_image_for_model(image, index, min_side=1, channel_count=channel_count)
        if channel_count != 3:
            prepared.append(array)
            continue
        _warn_if_integer_image_looks_8bit(array, index)
        try:
            prepared.append(to_rgb_uint8(array))
        except ValueError as exc:  # should not happen after the checks above
            raise ValueError(f"image {index}: {exc}") from exc
    return prepared
