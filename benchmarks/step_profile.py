"""Per-stage time of a training step from a tf.profiler trace, and oneDNN kernel counts.

Used by ``benchmarks/training.py --profile`` and ``--onednn-verbose``; no
TensorFlow import at module level (the parsers work on plain data).

Stages. Every TensorFlow op of the step runs under the name scope of the
Keras layer that created it (``.../mask_rcnn_1/fpn_p2_1/convolution``); its
gradient under ``gradient_tape/`` + that scope; the optimizer's update under
the optimizer's name; the losses and the weight decay under the train step's
``losses`` and ``weight_decay`` scopes (`mrcnn.engine.trainer`). `stage_of`
maps an op name to ``(stage, direction)`` with direction ``"fwd"`` or
``"bwd"``; `layer_stages` gives each layer of a model its stage (by the
weights contract's layer names, `STAGE_PATTERNS`). Backward ops of layers
whose weights are all frozen get the stage `FROZEN_BWD`.

Times are op self-times summed over the executor threads (the trace's op
events minus the op events nested in them on the same thread): with inter-op
parallelism the sum can exceed the step's wall time, and the share column is
of that sum.
"""

import collections
import glob
import os
import re

__all__ = ["STAGES", "STAGE_PATTERNS", "FROZEN_BWD", "layer_stages", "stage_of",
           "op_self_times", "read_xspace_ops", "stage_table", "format_stage_table",
           "top_op_types", "parse_onednn_line", "count_onednn_kernels",
           "format_onednn_counts", "ONEDNN_BEGIN", "ONEDNN_END"]

# Rows of the table, in order.
STAGES = ("backbone", "FPN", "RPN head", "proposals", "detection targets", "RoIAlign fwd",
          "RoIAlign bwd", "box head", "mask head", "keypoint head", "losses", "weight decay",
          "backward of frozen layers", "optimizer", "other graph layers", "step plumbing")
FROZEN_BWD = "backward of frozen layers"
# Layer name (the weights contract's, without Keras' "_N" suffix) -> stage; first match wins.
# A model layer matching none is the backbone's (ResNet, ResNeXt or a custom backbone).
STAGE_PATTERNS = (
    (r"fpn_.*", "FPN"),
    (r"rpn_.*", "RPN head"),
    (r"ROI", "proposals"),
    (r"proposal_targets", "detection targets"),
    (r"roi_align_.*", "RoIAlign"),
    (r"mrcnn_class.*|mrcnn_bbox.*|pool_squeeze", "box head"),
    (r"mrcnn_mask.*|mask_rois.*", "mask head"),
    (r"mrcnn_kp_.*|mrcnn_keypoint.*|keypoint_roi.*", "keypoint head"),
    (r"anchors|input_.*|output_rois", "other graph layers"),
)
_SUFFIX = re.compile(r"_\d+$")


def layer_stages(model):
    """``{layer name: stage}`` for every layer of a Keras model (nested models
    walked: their layers take the nested model's stage, e.g. ``rpn_model``),
    and the set of names of layers that have weights and none trainable."""
    stages, frozen = {}, set()

    def stage_for(name):
        for pattern, stage in STAGE_PATTERNS:
            if re.fullmatch(pattern, name):
                return stage
        return "backbone"

    def walk(layers, inherited=None):
        for layer in layers:
            stage = inherited or stage_for(layer.name)
            stages[layer.name] = stage
            if layer.weights and not any(w.trainable for w in layer.weights):
                frozen.add(layer.name)
            if hasattr(layer, "layers") and layer is not model:
                walk(layer.layers, stage)

    walk(model.layers)
    return stages, frozen


def _layer_of(component, stages):
    if component in stages:
        return component
    stripped = _SUFFIX.sub("", component)
    return stripped if stripped in stages else None


def stage_of(op_name, stages, frozen=(), model_scope="mask_rcnn", optimizer_scope="SGD"):
    """``(stage, "fwd" | "bwd")`` of one op of the train step.

    Args:
        op_name: the op's full name (``StatefulPartitionedCall/gradient_tape/
            mask_rcnn_1/res2a_branch2a_1/convolution/Conv2DBackpropFilter``).
        stages, frozen: from `layer_stages`.
        model_scope: the model's name (Keras appends ``_N`` in the scope).
        optimizer_scope: the optimizer's name (``SGD``, ``adam``, ...).
    """
    parts = op_name.split("/")
    while parts and parts[0] in ("StatefulPartitionedCall", "PartitionedCall"):
        parts = parts[1:]
    direction = "fwd"
    if parts and parts[0] == "gradient_tape":
        direction, parts = "bwd", parts[1:]
    if not parts:
        return "step plumbing", direction
    head = _SUFFIX.sub("", parts[0])
    if head == _SUFFIX.sub("", model_scope):
        layer = None
        for component in parts[1:-1] or parts[1:]:
            layer = _layer_of(component, stages)
            if layer is not None:
                break
        if layer is None:
            return "other graph layers", direction
        stage = stages[layer]
        if stage == "RoIAlign":
            return f"RoIAlign {direction}", direction
        if direction == "bwd" and layer in frozen:
            return FROZEN_BWD, direction
        return stage, direction
    if head in ("losses", "weight_decay"):
        return ("losses" if head == "losses" else "weight decay"), direction
    if head.lower() == _SUFFIX.sub("", optimizer_scope).lower():
        return "optimizer", direction
    return "step plumbing", direction


def op_self_times(lines):
    """``{(op name, op type): total self-time in ps}`` from trace lines.

    ``lines``: iterable of lists of ``(name, offset_ps, duration_ps)`` events
    of one thread each; an op event's name is ``"full/op/name:OpType"``
    (other events, e.g. ``"ExecutorState::Process"`` or ``"EagerLocalExecute: Op"``,
    are not ops). Self-time: the duration minus that
    of the op events directly nested in it on the same line.
    """
    totals = collections.Counter()
    for events in lines:
        ops = sorted(((o, d, n) for n, o, d in events
                      if ":" in n and "::" not in n and ": " not in n),
                     key=lambda e: (e[0], -e[1]))
        stack = []   # [end, key, self]
        for offset, duration, name in ops:
            while stack and stack[-1][0] <= offset:
                end, key, own = stack.pop()
                totals[key] += own
            if stack:
                stack[-1][2] -= duration
            full, _, op_type = name.rpartition(":")
            stack.append([offset + duration, (full, op_type), duration])
        for _, key, own in stack:
            totals[key] += own
    return totals


def read_xspace_ops(logdir):
    """`op_self_times` of the host plane of the newest ``*.xplane.pb`` under ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")),
                   key=os.path.getmtime)
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir!r}/plugins/profile: the "
                                "profiler wrote no trace")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    lines = []
    for plane in space.planes:
        if not plane.name.startswith("/host:"):
            continue
        names = {k: m.name for k, m in plane.event_metadata.items()}
        for line in plane.lines:
            lines.append([(names.get(e.metadata_id, ""), e.offset_ps, e.duration_ps)
                          for e in line.events])
    return op_self_times(lines)


# Ops that wrap other ops (their events span the nested function's ops).
_WRAPPERS = ("StatefulPartitionedCall", "PartitionedCall", "While", "If", "StatelessWhile",
             "StatelessIf")


def _is_wrapper(op_type):
    # Function calls show as their function's name ("__inference_multi_step_on_iterator_12").
    return op_type in _WRAPPERS or op_type.startswith("__")


def stage_table(op_times, steps, stages, frozen, model_scope, optimizer_scope):
    """``[(stage, fwd ms, bwd ms, total ms)]`` per step, in `STAGES` order
    (stages without ops left out), and the per-step total ms."""
    fwd, bwd = collections.Counter(), collections.Counter()
    for (name, op_type), ps in op_times.items():
        if _is_wrapper(op_type):
            continue
        stage, direction = stage_of(name, stages, frozen, model_scope, optimizer_scope)
        (bwd if direction == "bwd" else fwd)[stage] += ps / 1e9 / steps
    rows = [(s, fwd[s], bwd[s], fwd[s] + bwd[s]) for s in STAGES if fwd[s] + bwd[s] > 0]
    return rows, sum(r[3] for r in rows)


def format_stage_table(rows, total, title):
    out = [title, "| stage | fwd ms | bwd ms | ms / step | share |", "|---|---:|---:|---:|---:|"]
    for stage, f, b, t in rows:
        out.append(f"| {stage} | {f:.1f} | {b:.1f} | {t:.1f} | {100 * t / total:.1f} % |")
    out.append(f"| **sum of op self-times** | | | **{total:.1f}** | 100 % |")
    return "\n".join(out)


def top_op_types(op_times, steps, count=12):
    """``[(op type, ms per step)]``, the ``count`` costliest op types."""
    ms = collections.Counter()
    for (name, op_type), ps in op_times.items():
        if _is_wrapper(op_type):
            continue
        ms[op_type] += ps / 1e9 / steps
    return ms.most_common(count)


# ---- oneDNN verbose ----

ONEDNN_BEGIN = "MRCNN_ONEDNN_STEP_BEGIN"
ONEDNN_END = "MRCNN_ONEDNN_STEP_END"


def parse_onednn_line(line):
    """One ``ONEDNN_VERBOSE`` line -> ``(kind, implementation, propagation, dtypes, ms)``
    for a primitive execution (``exec``), None for anything else.

    ``dtypes``: the memory arguments' data types, e.g. ``"src:bf16 wei:bf16
    dst:bf16"`` (oneDNN 3.x lines: ``onednn_verbose,[v1,primitive,]exec,cpu,
    convolution,brgconv:avx512_core_bf16,forward_training,src:bf16::blocked:
    acdb::f0 wei:...,attr-...,alg:...,mb1_ic3oc64...,1.23``).
    """
    if not line.startswith(("onednn_verbose", "dnnl_verbose")):
        return None
    fields = line.strip().split(",")
    if "exec" not in fields:
        return None
    i = fields.index("exec")
    if len(fields) < i + 7:
        return None
    kind, impl, prop, mds = fields[i + 2], fields[i + 3], fields[i + 4], fields[i + 5]
    try:
        ms = float(fields[-1])
    except ValueError:
        return None
    dtypes = []
    for md in mds.split():
        arg, _, rest = md.partition(":")
        dtype = rest.split(":", 1)[0]
        if arg and dtype:
            dtypes.append(f"{arg}:{dtype}")
    return kind, impl, prop, " ".join(dtypes), ms


def count_onednn_kernels(lines):
    """``{(kind, propagation, dtypes, implementation): [calls, ms]}`` over the
    ``exec`` lines between `ONEDNN_BEGIN` and `ONEDNN_END` markers (all lines
    when there is no marker)."""
    lines = list(lines)
    marked = any(ONEDNN_BEGIN in line for line in lines)
    inside = not marked
    counts = collections.defaultdict(lambda: [0, 0.0])
    for line in lines:
        if ONEDNN_BEGIN in line:
            inside = True
            continue
        if ONEDNN_END in line:
            inside = False
            continue
        parsed = parse_onednn_line(line) if inside else None
        if parsed is None:
            continue
        kind, impl, prop, dtypes, ms = parsed
        entry = counts[(kind, prop, dtypes, impl)]
        entry[0] += 1
        entry[1] += ms
    return dict(counts)


def format_onednn_counts(counts, steps=1):
    """A Markdown table of `count_onednn_kernels`, costliest first, per step."""
    out = ["| primitive | propagation | data types | implementation | calls | ms |",
           "|---|---|---|---|---:|---:|"]
    for (kind, prop, dtypes, impl), (calls, ms) in sorted(counts.items(),
                                                        key=lambda kv: -kv[1][1]):
        out.append(f"| {kind} | {prop} | {dtypes} | {impl} | {calls / steps:.0f} | "
                   f"{ms / steps:.1f} |")
    by_kind = collections.Counter()
    for (kind, *_), (calls, ms) in counts.items():
        by_kind[kind] += ms / steps
    out.append("")
    out.append("per primitive kind (ms per step): " + ", ".join(
        f"{k} {v:.0f}" for k, v in by_kind.most_common()))
    return "\n".join(out)
