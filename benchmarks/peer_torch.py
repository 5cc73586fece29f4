"""The torchvision side of `benchmarks/peer.py`: a server that answers one timed call per
request (run by the peer's Python, which has torch and torchvision; mrcnn and TensorFlow
are not needed here).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``). Requests (``cmd``):

* ``info`` (``threads``): sets torch's intra-op and inter-op threads, replies with the
  versions and the thread counts torch reports.
* ``setup`` (``group``, ``settings``, ``input_path``): builds the model of a group
  (``"inference"`` or ``"training"``, see `build_model`) and reads the input from the
  ``.npz`` file written by the parent (``image`` uint8 ``[H, W, 3]``; for training also
  ``masks`` bool ``[H, W, N]``, ``boxes`` int ``[N, 4]`` pixel (y1, x1, y2, x2) with
  y2/x2 exclusive, ``class_ids`` int ``[N]``).
* ``call`` (``workload``): one timed call; replies ``seconds`` (measured here, so the
  pipe's latency is left out) and ``detections`` (inference) or ``loss`` (training).
  Workloads: ``inference_float32``, ``inference_bfloat16`` (``torch.autocast("cpu",
  dtype=torch.bfloat16)``), ``training_float32``.
* ``drop``: frees the models; ``quit``: replies and exits.

Anything else the libraries print goes to stderr, so stdout carries only the replies.
"""

import json
import os
import sys
import time
import traceback

WORKLOADS = ("inference_float32", "inference_bfloat16", "training_float32")


def serve(handler, lines, out):
    """Answer the JSON requests in ``lines`` (an iterable of text lines) on ``out``.

    ``handler`` has one method per command (``info``, ``setup``, ``call``, ``drop``),
    each taking the request's other fields as keyword arguments and returning a dict.
    An exception becomes ``{"ok": false, "error": ...}`` and the loop goes on;
    ``quit`` (or the end of ``lines``) ends it."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            request = json.loads(line)
            command = request.pop("cmd")
            if command == "quit":
                reply = {"ok": True}
            elif command.startswith("_") or not hasattr(handler, command):
                raise ValueError(f"unknown command {command!r}")
            else:
                reply = {"ok": True, **getattr(handler, command)(**request)}
        except Exception as exc:  # reported to the parent, which raises
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
            command = None
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if command == "quit":
            return


def torch_targets(masks, boxes, class_ids):
    """Our ground truth -> torchvision's target dict: boxes float32 ``[N, 4]`` as
    (x1, y1, x2, y2) (our pixel boxes' exclusive y2/x2 are the continuous right /
    bottom edges), labels int64 ``[N]``, masks uint8 ``[N, H, W]``."""
    import numpy as np
    import torch

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return {"boxes": torch.from_numpy(np.ascontiguousarray(boxes[:, [1, 0, 3, 2]])),
            "labels": torch.from_numpy(np.asarray(class_ids, dtype=np.int64)),
            "masks": torch.from_numpy(np.ascontiguousarray(
                np.transpose(np.asarray(masks, dtype=np.uint8), (2, 0, 1))))}


def image_tensor(image):
    """uint8 ``[H, W, 3]`` -> float32 ``[3, H, W]`` in [0, 1] (torchvision's input)."""
    import torch

    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)


def freeze_batch_norm(module):
    """Replace every ``BatchNorm2d`` under ``module`` by a ``FrozenBatchNorm2d`` with its
    statistics and affine parameters (what torchvision builds with pretrained weights,
    and what our ``TRAIN_BN = False`` does). Returns the number replaced."""
    import torch
    from torchvision.ops.misc import FrozenBatchNorm2d

    count = 0
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
            count += 1
        else:
            count += freeze_batch_norm(child)
    return count


def build_model(group, settings):
    """torchvision's ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)`` with
    the parent's settings: ``num_classes``, ``size`` (min and max size), ``rpn_pre_nms_test``
    / ``rpn_post_nms_test`` / ``rpn_post_nms_train``, ``detections`` (box_detections_per_img), ``train_rois``
    (box_batch_size_per_image), ``score_thresh``, ``trainable_layers``, ``seed``;
    ``frozen_bn`` swaps the BatchNorm layers for frozen ones (`freeze_batch_norm`).
    ``group`` "inference" -> eval mode, "training" -> train mode."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(int(settings.get("seed", 0)))
    model = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=int(settings["num_classes"]),
        trainable_backbone_layers=int(settings["trainable_layers"]),
        min_size=int(settings["size"]), max_size=int(settings["size"]),
        rpn_pre_nms_top_n_test=int(settings["rpn_pre_nms_test"]),
        rpn_post_nms_top_n_test=int(settings["rpn_post_nms_test"]),
        box_detections_per_img=int(settings["detections"]),
        box_batch_size_per_image=int(settings["train_rois"]),
        box_score_thresh=float(settings["score_thresh"]),
        rpn_post_nms_top_n_train=int(settings.get("rpn_post_nms_train", 2000)))
    if settings.get("frozen_bn", True):
        freeze_batch_norm(model)
    if group == "inference":
        model.eval()
    elif group == "training":
        model.train()
    else:
        raise ValueError(f"group {group!r}: expected 'inference' or 'training'")
    return model


class TorchvisionPeer:
    """The server's commands (see the module docstring)."""

    def __init__(self):
        self.models = {}
        self.inputs = {}
        self.optimizer = None
        self.settings = {}

    def info(self, threads):
        import numpy
        import torch
        import torchvision

        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(int(threads))
        except RuntimeError:  # only settable before the first parallel work
            pass
        return {"torch": torch.__version__, "torchvision": torchvision.__version__,
                "numpy": numpy.__version__, "python": sys.version.split()[0],
                "intra_op_threads": torch.get_num_threads(),
                "inter_op_threads": torch.get_num_interop_threads(),
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability",
                                          lambda: "unknown")()}

    def setup(self, group, settings, input_path):
        import numpy as np
        import torch

        self.settings = dict(settings)
        model = build_model(group, settings)
        with np.load(input_path) as data:
            arrays = {k: data[k] for k in data.files}
        image = arrays["image"]
        self.inputs[group] = {"image": image}
        if group == "training":
            self.inputs[group]["target"] = torch_targets(arrays["masks"], arrays["boxes"],
                                                         arrays["class_ids"])
            params = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.SGD(
                params, lr=float(settings["learning_rate"]),
                momentum=float(settings["momentum"]),
                weight_decay=float(settings["weight_decay"]))
        self.models[group] = model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"parameters": sum(p.numel() for p in model.parameters()),
                "trainable_parameters": trainable}

    def call(self, workload):
        import torch

        if workload not in WORKLOADS:
            raise ValueError(f"workload {workload!r}: expected one of {WORKLOADS}")
        group, precision = workload.split("_")
        if group not in self.models:
            raise RuntimeError(f"workload {workload!r}: no 'setup' for group {group!r}")
        model, inputs = self.models[group], self.inputs[group]
        if group == "inference":
            start = time.perf_counter()
            with torch.inference_mode(), torch.autocast(
                    "cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                result = model([image_tensor(inputs["image"])])[0]
                count = int(result["scores"].shape[0])
                # full-size bool masks [N, H, W], as ours returns (thresholded at 0.5)
                masks = result["masks"][:, 0] > 0.5
            seconds = time.perf_counter() - start
            return {"seconds": seconds, "detections": count,
                    "mask_shape": list(masks.shape)}
        start = time.perf_counter()
        losses = model([image_tensor(inputs["image"])], [inputs["target"]])
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = float(self.settings.get("clip_norm", 0.0))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        self.optimizer.step()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "loss": float(loss.detach()),
                "losses": {k: float(v.detach()) for k, v in losses.items()}}

    def drop(self):
        import gc

        self.models.clear()
        self.inputs.clear()
        self.optimizer = None
        gc.collect()
        return {}


def main(handler=None):
    """Serve ``handler`` (default a `TorchvisionPeer`) on stdin / stdout."""
    # The replies get a private copy of stdout; file descriptor 1 and sys.stdout go
    # to stderr, so that nothing printed by torch or a warning can corrupt them.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(TorchvisionPeer() if handler is None else handler, sys.stdin, replies)


if __name__ == "__main__":
    main()
