// RoIAlign op registrations and shape functions.
//
// MrcnnRoiAlign(features [N,H,W,C] T, boxes [K,4] float32 (y1,x1,y2,x2) image
//   pixels, box_indices [K] int32) -> output [K, pooled_height, pooled_width, C] T
//   attr aggregation: "avg" (default; graphs written before the attr existed
//   load as "avg") or "max".
// MrcnnRoiAlignGrad(grads [K,ph,pw,C] T, boxes, box_indices, features_shape [4]
//   int32) -> grad_features [N,H,W,C] T  (average aggregation)
// MrcnnRoiAlignMaxGrad(grads [K,ph,pw,C] T, features [N,H,W,C] T, boxes,
//   box_indices) -> grad_features [N,H,W,C] T  (max aggregation)
// No gradient is defined for boxes (the Python gradient returns None for them).
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace mrcnn {

using tensorflow::Status;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

namespace {

// Checks boxes [K, 4] and box_indices [K]; returns K in *num_boxes.
Status CheckBoxes(InferenceContext* c, int boxes_input, DimensionHandle* num_boxes) {
  ShapeHandle boxes, box_indices;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(boxes_input), 2, &boxes));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(boxes_input + 1), 1, &box_indices));
  DimensionHandle four;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(boxes, 1), 4, &four));
  return c->Merge(c->Dim(boxes, 0), c->Dim(box_indices, 0), num_boxes);
}

Status ForwardShape(InferenceContext* c) {
  ShapeHandle features;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &features));
  DimensionHandle num_boxes;
  TF_RETURN_IF_ERROR(CheckBoxes(c, 1, &num_boxes));
  int pooled_h = 0, pooled_w = 0;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &pooled_h));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pooled_w));
  c->set_output(0, c->MakeShape({num_boxes, c->MakeDim(pooled_h), c->MakeDim(pooled_w),
                                 c->Dim(features, 3)}));
  return Status();
}

Status GradShape(InferenceContext* c) {
  ShapeHandle grads;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &grads));
  DimensionHandle num_boxes;
  TF_RETURN_IF_ERROR(CheckBoxes(c, 1, &num_boxes));
  ShapeHandle shape_vec;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &shape_vec));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(3, &out));
  TF_RETURN_IF_ERROR(c->WithRank(out, 4, &out));
  c->set_output(0, out);
  return Status();
}

Status MaxGradShape(InferenceContext* c) {
  ShapeHandle grads, features;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &grads));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &features));
  DimensionHandle num_boxes;
  TF_RETURN_IF_ERROR(CheckBoxes(c, 2, &num_boxes));
  c->set_output(0, features);
  return Status();
}

}  // namespace

REGISTER_OP("MrcnnRoiAlign")
    .Input("features: T")
    .Input("boxes: float")
    .Input("box_indices: int32")
    .Output("output: T")
    .Attr("T: {half, bfloat16, float, double}")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int = 2")
    .Attr("aligned: bool = true")
    .Attr("aggregation: {'avg', 'max'} = 'avg'")
    .SetShapeFn(ForwardShape)
    .Doc(R"doc(
RoIAlign on NHWC features: each output bin averages (aggregation "avg") or
takes the maximum of (aggregation "max") bilinear samples taken at regularly
spaced points inside it (no quantisation). boxes are (y1, x1, y2, x2) in
input-image pixels, multiplied by spatial_scale; aligned shifts them by -0.5.
)doc");

REGISTER_OP("MrcnnRoiAlignGrad")
    .Input("grads: T")
    .Input("boxes: float")
    .Input("box_indices: int32")
    .Input("features_shape: int32")
    .Output("grad_features: T")
    .Attr("T: {float, double}")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int = 2")
    .Attr("aligned: bool = true")
    .SetShapeFn(GradShape)
    .Doc(R"doc(
Gradient of MrcnnRoiAlign (aggregation "avg") with respect to features (shape
features_shape).
)doc");

REGISTER_OP("MrcnnRoiAlignMaxGrad")
    .Input("grads: T")
    .Input("features: T")
    .Input("boxes: float")
    .Input("box_indices: int32")
    .Output("grad_features: T")
    .Attr("T: {float, double}")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float = 1.0")
    .Attr("sampling_ratio: int = 2")
    .Attr("aligned: bool = true")
    .SetShapeFn(MaxGradShape)
    .Doc(R"doc(
Gradient of MrcnnRoiAlign with aggregation "max" with respect to features: each
incoming gradient goes to the four bilinear neighbours of its bin's winning
sample (the first maximum in scan order), recomputed from features.
)doc");

}  // namespace mrcnn
