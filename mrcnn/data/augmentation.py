"""Adapters that apply a user's augmentation to an image and its instance masks.

`apply_augmentation(augmentation, image, masks)` accepts three kinds of
augmentation, recognised in this order:

1. **imgaug augmenters** (duck-typed: any object with a ``to_deterministic()``
   method returning something with ``augment_image``). One deterministic copy
   is drawn per image and applied to the image and to the mask stack, so both
   see the same transform. When the ``imgaug`` package is importable, the masks
   are augmented with ``imgaug.HooksImages`` whose activator switches off every
   augmenter not listed in `GEOMETRIC_AUGMENTERS` (colour, blur, noise... must
   not touch masks). Without ``imgaug`` (the package does not import under
   NumPy 2) a duck-typed augmenter is applied to the masks as-is, without hooks:
   it is the caller's job to give it only geometric steps.
2. **albumentations** transforms or ``Compose`` objects (any object whose class
   lives in the ``albumentations`` package): called as
   ``t(image=image, masks=[m_0, ..., m_{N-1}])`` with uint8 0/1 masks; the
   result's ``"image"`` and ``"masks"`` (a list or an ``[N, H, W]`` array) are
   used.
3. **any other callable** ``f(image, masks) -> (image, masks)`` with ``image``
   uint8 ``[H, W, C]`` and ``masks`` bool ``[H, W, N]``.

Whatever the kind, the augmented image must keep its shape and dtype (the
pipeline resizes before augmenting, and batches need one shape) and the masks
must come back as ``[H, W, N]``; they are returned as bool. Violations raise
``TypeError`` / ``ValueError`` saying what came back.

Randomness: these third-party augmenters draw from their own global random
state, so a pipeline ``seed`` does not make their choices reproducible (seed
imgaug / albumentations / your callable yourself if you need that).
"""

import numpy as np

__all__ = ["apply_augmentation", "augmentation_kind", "GEOMETRIC_AUGMENTERS"]

# imgaug augmenter class names that move pixels around and therefore must be
# applied to masks too; container augmenters must be listed so that their
# children are visited. Everything else (colour, contrast, blur, noise...) is
# switched off for masks.
GEOMETRIC_AUGMENTERS = frozenset({
    "Sequential", "SomeOf", "OneOf", "Sometimes", "Identity", "Noop",
    "Fliplr", "Flipud", "Rot90", "Affine", "ScaleX", "ScaleY", "TranslateX",
    "TranslateY", "Rotate", "ShearX", "ShearY", "PiecewiseAffine",
    "PerspectiveTransform", "ElasticTransformation", "CropAndPad", "Crop", "Pad",
    "CropToFixedSize", "PadToFixedSize", "CenterCropToFixedSize",
    "CenterPadToFixedSize",
})


def augmentation_kind(augmentation):
    """Which adapter handles ``augmentation``: "imgaug", "albumentations" or "callable".

    Raises:
        TypeError: ``augmentation`` is none of the supported kinds.
    """
    if callable(getattr(augmentation, "to_deterministic", None)):
        return "imgaug"
    module = type(augmentation).__module__ or ""
    if module == "albumentations" or module.startswith("albumentations."):
        return "albumentations"
    if callable(augmentation):
        return "callable"
    raise TypeError(
        f"augmentation: expected an imgaug augmenter (with to_deterministic()), an "
        f"albumentations transform, or a callable f(image, masks) -> (image, masks); "
        f"got {type(augmentation).__name__}")


def _imgaug_mask_hooks():
    """``imgaug.HooksImages`` keeping only geometric augmenters, or None without imgaug."""
    try:
        import imgaug  # noqa: F401  (optional dependency)
    except Exception:  # not installed, or fails to import under NumPy 2
        return None

    def activator(images, augmenter, parents, default):
        return type(augmenter).__name__ in GEOMETRIC_AUGMENTERS

    return imgaug.HooksImages(activator=activator)


def _augment_imgaug(augmenter, image, masks):
    deterministic = augmenter.to_deterministic()
    out_image = deterministic.augment_image(image)
    if masks.shape[-1] == 0:
        return out_image, masks
    hooks = _imgaug_mask_hooks()
    mask_u8 = masks.astype(np.uint8)
    if hooks is None:
        out_masks = deterministic.augment_image(mask_u8)
    else:
        out_masks = deterministic.augment_image(mask_u8, hooks=hooks)
    return out_image, out_masks


def _augment_albumentations(transform, image, masks):
    n = masks.shape[-1]
    mask_list = [np.ascontiguousarray(masks[:, :, i], dtype=np.uint8) for i in range(n)]
    result = transform(image=image, masks=mask_list)
    if not isinstance(result, dict) or "image" not in result or "masks" not in result:
        raise TypeError(f"augmentation: albumentations transform {type(transform).__name__} "
                        f"returned {type(result).__name__} without 'image' and 'masks' keys")
    out_masks = result["masks"]
    if n == 0:
        out_image = np.asarray(result["image"])
        return out_image, np.zeros(out_image.shape[:2] + (0,), dtype=bool)
    if isinstance(out_masks, np.ndarray):  # [N, H, W]
        out_masks = np.moveaxis(out_masks, 0, -1)
    else:
        out_masks = np.stack([np.asarray(m) for m in out_masks], axis=-1)
    return result["image"], out_masks


def _augment_callable(function, image, masks):
    result = function(image, masks)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"augmentation: callable {getattr(function, '__name__', function)!r} "
                        f"must return (image, masks), got {type(result).__name__}")
    return result


_ADAPTERS = {"imgaug": _augment_imgaug, "albumentations": _augment_albumentations,
             "callable": _augment_callable}


def apply_augmentation(augmentation, image, masks):
    """Apply ``augmentation`` to one image and its instance masks.

    Args:
        augmentation: an imgaug augmenter, an albumentations transform or a
            callable ``f(image, masks) -> (image, masks)`` (see module docstring).
        image: uint8 ``[H, W, C]``.
        masks: bool ``[H, W, N]`` (``N`` may be 0).

    Returns:
        ``(image, masks)``: the augmented image, same shape and dtype as the
        input, and bool ``[H, W, N]`` masks (integer masks: non-zero is True;
        float masks: > 0.5 is True).

    Raises:
        TypeError: unsupported augmentation, or a wrong return type/dtype.
        ValueError: the augmentation changed the image or mask shape.
    """
    kind = augmentation_kind(augmentation)
    image = np.asarray(image)
    masks = np.asarray(masks).astype(bool)
    out_image, out_masks = _ADAPTERS[kind](augmentation, image, masks)
    out_image = np.asarray(out_image)
    out_masks = np.asarray(out_masks)
    name = type(augmentation).__name__
    if out_image.shape != image.shape:
        raise ValueError(f"augmentation ({kind} {name}) changed the image shape from "
                         f"{image.shape} to {out_image.shape}; augmentations run after "
                         f"resizing and must keep the shape (resize/crop through the "
                         f"config's IMAGE_RESIZE_MODE instead)")
    if out_image.dtype != image.dtype:
        raise TypeError(f"augmentation ({kind} {name}) changed the image dtype from "
                        f"{image.dtype} to {out_image.dtype}")
    if out_masks.shape != masks.shape:
        raise ValueError(f"augmentation ({kind} {name}) returned masks of shape "
                         f"{out_masks.shape}, expected {masks.shape} ([H, W, N])")
    if not (out_masks.dtype == bool or np.issubdtype(out_masks.dtype, np.number)):
        raise TypeError(f"augmentation ({kind} {name}) returned masks of dtype "
                        f"{out_masks.dtype}; expected bool or numbers")
    if np.issubdtype(out_masks.dtype, np.floating):
        return out_image, out_masks > 0.5
    return out_image, out_masks.astype(bool)
