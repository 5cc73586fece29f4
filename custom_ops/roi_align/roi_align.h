// RoIAlign: functor declarations shared by the CPU and CUDA kernels, and the
// per-RoI geometry (sample positions, bilinear taps) both devices compute the
// same way.
//
// Conventions (see mrcnn/ops/roi_align_tf.py for the full statement):
//   features [N, H, W, C] (NHWC); boxes [K, 4] float32 (y1, x1, y2, x2) in
//   input-image pixels, continuous coordinates, scaled by spatial_scale and
//   shifted by -0.5 when aligned; box_indices [K] int32; output
//   [K, pooled_h, pooled_w, C]. Each bin aggregates grid_h x grid_w bilinear
//   samples, by their average (aggregation "avg") or their maximum ("max");
//   a sample outside [-1, H] x [-1, W] has the value zero.
//
// Max: samples are scanned row by row (sample row iy outer, sample column ix
// inner); the first sample holding the maximum wins (a later sample must be
// strictly greater to replace it), per channel. Its value is the output, and
// the gradient goes to its four bilinear neighbours only. A bin without
// samples (adaptive grid of an inverted box) gives 0 and no gradient.
#ifndef MRCNN_CUSTOM_OPS_ROI_ALIGN_H_
#define MRCNN_CUSTOM_OPS_ROI_ALIGN_H_

#include <cstdint>

#if defined(__CUDACC__)
#define MRCNN_HOST_DEVICE __host__ __device__
#else
#define MRCNN_HOST_DEVICE
#endif

namespace mrcnn {

// How a bin aggregates its samples (the op's "aggregation" attr).
constexpr int kAggregateAvg = 0;
constexpr int kAggregateMax = 1;

// Attributes of one RoIAlign call.
struct RoIAlignParams {
  int pooled_h;
  int pooled_w;
  float spatial_scale;
  int sampling_ratio;  // > 0: fixed samples per bin per axis; <= 0: adaptive.
  bool aligned;
  int aggregation;     // kAggregateAvg or kAggregateMax
};

// Where the samples of one RoI lie on the feature map. Sample (p, i) along y
// is at y0 + p * bin_h + (i + 0.5) * bin_h / grid_h (same for x).
template <typename Acc>
struct RoIGeometry {
  Acc y0, x0, bin_h, bin_w;
  int grid_h, grid_w;  // may be <= 0 (no samples: inverted box, adaptive).
  Acc count;           // max(grid_h * grid_w, 1)
};

template <typename Acc>
MRCNN_HOST_DEVICE inline Acc CeilToward(Acc v) {
  // ceil() without <cmath> on device: v is a small finite number here.
  int64_t t = static_cast<int64_t>(v);
  return (static_cast<Acc>(t) < v) ? static_cast<Acc>(t + 1) : static_cast<Acc>(t);
}

template <typename Acc>
MRCNN_HOST_DEVICE inline RoIGeometry<Acc> MakeGeometry(const float* box,
                                                        const RoIAlignParams& p) {
  const Acc scale = static_cast<Acc>(p.spatial_scale);
  const Acc offset = p.aligned ? Acc(0.5) : Acc(0);
  const Acc y1 = static_cast<Acc>(box[0]) * scale - offset;
  const Acc x1 = static_cast<Acc>(box[1]) * scale - offset;
  const Acc y2 = static_cast<Acc>(box[2]) * scale - offset;
  const Acc x2 = static_cast<Acc>(box[3]) * scale - offset;
  Acc roi_h = y2 - y1;
  Acc roi_w = x2 - x1;
  if (!p.aligned) {
    roi_h = roi_h < Acc(1) ? Acc(1) : roi_h;
    roi_w = roi_w < Acc(1) ? Acc(1) : roi_w;
  }
  RoIGeometry<Acc> g;
  g.y0 = y1;
  g.x0 = x1;
  g.bin_h = roi_h / static_cast<Acc>(p.pooled_h);
  g.bin_w = roi_w / static_cast<Acc>(p.pooled_w);
  if (p.sampling_ratio > 0) {
    g.grid_h = g.grid_w = p.sampling_ratio;
  } else {
    g.grid_h = static_cast<int>(CeilToward(roi_h / static_cast<Acc>(p.pooled_h)));
    g.grid_w = static_cast<int>(CeilToward(roi_w / static_cast<Acc>(p.pooled_w)));
  }
  const int n = (g.grid_h > 0 && g.grid_w > 0) ? g.grid_h * g.grid_w : 0;
  g.count = static_cast<Acc>(n > 1 ? n : 1);
  return g;
}

// Position of sample i of bin b along one axis.
template <typename Acc>
MRCNN_HOST_DEVICE inline Acc SamplePosition(Acc start, Acc bin, int grid, int b, int i) {
  return start + static_cast<Acc>(b) * bin +
         (static_cast<Acc>(i) + Acc(0.5)) * (bin / static_cast<Acc>(grid));
}

// Linear interpolation taps along one axis of length `size`: value =
// w_lo * f[lo] + w_hi * f[hi]. Both weights are 0 for v < -1 or v > size.
template <typename Acc>
struct Tap {
  int lo, hi;
  Acc w_lo, w_hi;
};

template <typename Acc>
MRCNN_HOST_DEVICE inline Tap<Acc> LinearTap(Acc v, int size) {
  Tap<Acc> t;
  if (v < Acc(-1) || v > static_cast<Acc>(size)) {
    t.lo = t.hi = 0;
    t.w_lo = t.w_hi = Acc(0);
    return t;
  }
  if (v < Acc(0)) v = Acc(0);
  int lo = static_cast<int>(v);
  int hi;
  if (lo >= size - 1) {
    lo = hi = size - 1;
    v = static_cast<Acc>(lo);
  } else {
    hi = lo + 1;
  }
  const Acc frac = v - static_cast<Acc>(lo);
  t.lo = lo;
  t.hi = hi;
  t.w_lo = Acc(1) - frac;
  t.w_hi = frac;
  return t;
}

}  // namespace mrcnn

#if GOOGLE_CUDA
// CUDA launchers (roi_align_kernels.cu.cc). They take raw pointers and the
// CUDA stream as void* so that the .cu.cc needs neither TensorFlow nor Eigen
// headers (fast nvcc builds). Element types: kind 0 = float, 1 = IEEE half,
// 2 = bfloat16 (same 16-bit layouts as Eigen::half / Eigen::bfloat16).
// Return a cudaError_t value (0 = success).
namespace mrcnn {
namespace gpu {
int LaunchRoIAlignForward(void* stream, int dtype_kind, const void* features, int n, int h,
                          int w, int c, const float* boxes, const int32_t* box_indices,
                          int k, const RoIAlignParams& params, void* output);
// float32 only; zero-fills grad_features then accumulates with atomicAdd.
// Average aggregation (params.aggregation is ignored).
int LaunchRoIAlignBackward(void* stream, const float* grads, const float* boxes,
                           const int32_t* box_indices, int k, int n, int h, int w, int c,
                           const RoIAlignParams& params, float* grad_features);
// Max aggregation: recomputes each bin's winning sample from `features`
// (float32) and adds the gradient to its four neighbours (atomicAdd).
int LaunchRoIAlignMaxBackward(void* stream, const float* grads, const float* features,
                              const float* boxes, const int32_t* box_indices, int k, int n,
                              int h, int w, int c, const RoIAlignParams& params,
                              float* grad_features);
}  // namespace gpu
}  // namespace mrcnn
#endif  // GOOGLE_CUDA

// Device functors (defined only where TensorFlow headers are available).
#if defined(MRCNN_WITH_TF_FUNCTORS)
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor_types.h"

namespace mrcnn {
namespace functor {

// output[k, p, q, c] = RoIAlign(features)[k, p, q, c].
template <typename Device, typename T>
struct RoIAlignForward {
  // Returns an error message or an empty status.
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename tensorflow::TTypes<T, 4>::ConstTensor features,
                                typename tensorflow::TTypes<float, 2>::ConstTensor boxes,
                                typename tensorflow::TTypes<int32_t, 1>::ConstTensor box_indices,
                                const RoIAlignParams& params,
                                typename tensorflow::TTypes<T, 4>::Tensor output);
};

// grad_features = d(sum(grads * RoIAlign(features))) / d(features), average
// aggregation.
template <typename Device, typename T>
struct RoIAlignBackward {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename tensorflow::TTypes<T, 4>::ConstTensor grads,
                                typename tensorflow::TTypes<float, 2>::ConstTensor boxes,
                                typename tensorflow::TTypes<int32_t, 1>::ConstTensor box_indices,
                                const RoIAlignParams& params,
                                typename tensorflow::TTypes<T, 4>::Tensor grad_features);
};

// The same for max aggregation: the winning samples are recomputed from
// features, so the gradient needs them too.
template <typename Device, typename T>
struct RoIAlignMaxBackward {
  tensorflow::Status operator()(tensorflow::OpKernelContext* ctx,
                                typename tensorflow::TTypes<T, 4>::ConstTensor grads,
                                typename tensorflow::TTypes<T, 4>::ConstTensor features,
                                typename tensorflow::TTypes<float, 2>::ConstTensor boxes,
                                typename tensorflow::TTypes<int32_t, 1>::ConstTensor box_indices,
                                const RoIAlignParams& params,
                                typename tensorflow::TTypes<T, 4>::Tensor grad_features);
};

}  // namespace functor
}  // namespace mrcnn
#endif  // MRCNN_WITH_TF_FUNCTORS

#endif  // MRCNN_CUSTOM_OPS_ROI_ALIGN_H_
