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

Keypoints (``apply_augmentation(..., keypoints=, flip_permutation=)``, float32
``[N, K, 3]`` ``(x, y, v)`` continuous pixels, `mrcnn.structures.keypoints`):
albumentations transforms move them with the image (wrapped in a ``Compose``
with ``KeypointParams("xy")``, in albumentations' frame where pixel centres are
integers, so ``x - 0.5`` in and ``+ 0.5`` out); an odd number of applied
``HorizontalFlip`` swaps left / right keypoints with ``flip_permutation``
(`mrcnn.structures.keypoints.flip_permutation` of ``KEYPOINT_FLIP_MAP``; the
rule of detectron2: only horizontal flips swap); keypoints that end outside
the image become unlabelled. imgaug augmenters and callables do not tell
where points go: with labelled keypoints they may change pixel values only;
one that moves the masks raises ValueError (use albumentations, or the
pipeline's own flip).

Randomness: these third-party augmenters draw from their own global random
state, so a pipeline ``seed`` does not make their choices reproducible (seed
imgaug / albumentations / your callable yourself if you need that).
"""

import numpy as np

__all__ = ["apply_augmentation", "augmentation_kind", "GEOMETRIC_AUGMENTERS",
           "HORIZONTAL_FLIPS"]

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


# albumentations transforms that mirror left-right (swap left / right keypoints).
HORIZONTAL_FLIPS = frozenset({"HorizontalFlip"})


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


def _augment_albumentations_keypoints(transform, image, masks, keypoints, permutation):
    """albumentations with keypoints: ``(image, masks, keypoints)`` (module docstring)."""
    import albumentations

    n, k = keypoints.shape[:2]
    wrapper = albumentations.Compose(
        [transform], keypoint_params=albumentations.KeypointParams(
            format="xy", remove_invisible=False), save_applied_params=True)
    mask_list = [np.ascontiguousarray(masks[:, :, i], dtype=np.uint8) for i in range(n)]
    xy = keypoints.reshape(-1, 3)[:, :2].astype(np.float64) - 0.5
    result = wrapper(image=image, masks=mask_list, keypoints=xy)
    out_image = np.asarray(result["image"])
    out_masks = result["masks"]
    if isinstance(out_masks, np.ndarray):  # [N, H, W]
        out_masks = np.moveaxis(out_masks, 0, -1)
    else:
        out_masks = np.stack([np.asarray(m) for m in out_masks], axis=-1)
    out = keypoints.astype(np.float32).copy()
    out[..., :2] = np.asarray(result["keypoints"], np.float32)[:, :2].reshape(n, k, 2) + 0.5
    h, w = out_image.shape[:2]
    outside = ((out[..., 0] < 0) | (out[..., 0] >= w) | (out[..., 1] < 0) | (out[..., 1] >= h)
               | ~np.isfinite(out[..., :2]).all(axis=-1))
    out[outside | (keypoints[..., 2] <= 0)] = 0.0
    flips = sum(name in HORIZONTAL_FLIPS for name, _ in result.get("applied_transforms", ()))
    if flips % 2 and permutation is not None:
        out = out[:, np.asarray(permutation, dtype=np.int64)]
    return out_image, out_masks, out


def _augment_callable(function, image, masks):
    result = function(image, masks)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"augmentation: callable {getattr(function, '__name__', function)!r} "
                        f"must return (image, masks), got {type(result).__name__}")
    return result


_ADAPTERS = {"imgaug": _augment_imgaug, "albumentations": _augment_albumentations,
             "callable": _augment_callable}


def apply_augmentation(augmentation, image, masks, keypoints=None, flip_permutation=None):
    """Apply ``augmentation`` to one image and its instance masks (and keypoints).

    Args:
        augmentation: an imgaug augmenter, an albumentations transform or a
            callable ``f(image, masks) -> (image, masks)`` (see module docstring).
        image: uint8 ``[H, W, C]``.
        masks: bool ``[H, W, N]`` (``N`` may be 0).
        keypoints: optional float32 ``[N, K, 3]`` ``(x, y, v)`` pixels of the
            instances (see module docstring).
        flip_permutation: int ``[K]`` applied to the keypoints of a
            horizontally flipped image (None: no swap).

    Returns:
        ``(image, masks)``: the augmented image, same shape and dtype as the
        input, and bool ``[H, W, N]`` masks (integer masks: non-zero is True;
        float masks: > 0.5 is True); with ``keypoints``, ``(image, masks,
        keypoints)``.

    Raises:
        TypeError: unsupported augmentation, or a wrong return type/dtype.
        ValueError: the augmentation changed the image or mask shape, or
            moved the masks of labelled keypoints it cannot move.
    """
    kind = augmentation_kind(augmentation)
    image = np.asarray(image)
    masks = np.asarray(masks).astype(bool)
    labelled = keypoints is not None and bool((np.asarray(keypoints)[..., 2] > 0).any())
    out_keypoints = None if keypoints is None else np.asarray(keypoints, np.float32).copy()
    if labelled and kind == "albumentations":
        out_image, out_masks, out_keypoints = _augment_albumentations_keypoints(
            augmentation, image, masks, out_keypoints, flip_permutation)
    else:
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
    out_masks = out_masks > 0.5 if np.issubdtype(out_masks.dtype, np.floating) \
        else out_masks.astype(bool)
    if keypoints is None:
        return out_image, out_masks
    if labelled and kind != "albumentations" and not np.array_equal(out_masks, masks):
        raise ValueError(f"augmentation ({kind} {name}) moved the masks, but it cannot move "
                         f"the keypoints with them; with keypoints use an albumentations "
                         f"transform (or the pipeline's flip) for geometric changes")
    return out_image, out_masks, out_keypoints
