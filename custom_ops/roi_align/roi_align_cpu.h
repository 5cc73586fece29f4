// CPU helpers shared by the RoIAlign kernels (roi_align_kernels.cc: forward,
// average backward, registrations; roi_align_max_grad.cc: the max backward):
// the taps of a RoI, the bilinear value of a sample, the maximum of a bin, the
// thread pool, attribute and input checks. Include after defining
// EIGEN_USE_THREADS (and EIGEN_USE_GPU with GOOGLE_CUDA) and
// MRCNN_WITH_TF_FUNCTORS.
#ifndef MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_
#define MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_

#include "roi_align.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mrcnn {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::TTypes;
using CPUDevice = Eigen::ThreadPoolDevice;
#if GOOGLE_CUDA
using GPUDevice = Eigen::GpuDevice;
#endif

// Accumulation type: float for float/half/bfloat16, double for double.
template <typename T> struct AccType { using type = float; };
template <> struct AccType<double> { using type = double; };

// All taps of one RoI: rows [pooled_h * grid_h], cols [pooled_w * grid_w].
// For the average, weights are scaled so that the four products of a row tap
// and a column tap already include the 1/count of the bin average (row
// weights carry it); for the max they are the plain bilinear weights.
template <typename Acc>
struct RoITaps {
  int batch;
  int grid_h, grid_w;  // >= 0
  std::vector<Tap<Acc>> rows, cols;
  // Distinct feature-map columns touched by a valid column tap (sorted), and
  // for each column tap the slots of its lo/hi column in that list.
  std::vector<int> used_cols;
  std::vector<int> slot_lo, slot_hi;
};

template <typename Acc>
void ComputeTaps(const float* box, int batch, int height, int width,
                 const RoIAlignParams& params, RoITaps<Acc>* taps) {
  const RoIGeometry<Acc> g = MakeGeometry<Acc>(box, params);
  taps->batch = batch;
  taps->grid_h = std::max(g.grid_h, 0);
  taps->grid_w = std::max(g.grid_w, 0);
  const Acc inv_count =
      params.aggregation == kAggregateMax ? Acc(1) : Acc(1) / g.count;
  taps->rows.resize(static_cast<size_t>(params.pooled_h) * taps->grid_h);
  taps->cols.resize(static_cast<size_t>(params.pooled_w) * taps->grid_w);
  for (int p = 0; p < params.pooled_h; ++p) {
    for (int i = 0; i < taps->grid_h; ++i) {
      Tap<Acc> t = LinearTap<Acc>(SamplePosition<Acc>(g.y0, g.bin_h, g.grid_h, p, i), height);
      t.w_lo *= inv_count;
      t.w_hi *= inv_count;
      taps->rows[p * taps->grid_h + i] = t;
    }
  }
  for (int q = 0; q < params.pooled_w; ++q) {
    for (int i = 0; i < taps->grid_w; ++i) {
      taps->cols[q * taps->grid_w + i] =
          LinearTap<Acc>(SamplePosition<Acc>(g.x0, g.bin_w, g.grid_w, q, i), width);
    }
  }
  taps->used_cols.clear();
  for (const Tap<Acc>& t : taps->cols) {
    if (t.w_lo == Acc(0) && t.w_hi == Acc(0)) continue;
    taps->used_cols.push_back(t.lo);
    taps->used_cols.push_back(t.hi);
  }
  std::sort(taps->used_cols.begin(), taps->used_cols.end());
  taps->used_cols.erase(std::unique(taps->used_cols.begin(), taps->used_cols.end()),
                        taps->used_cols.end());
  const size_t num_cols = taps->cols.size();
  taps->slot_lo.assign(num_cols, 0);
  taps->slot_hi.assign(num_cols, 0);
  for (size_t j = 0; j < num_cols; ++j) {
    const Tap<Acc>& t = taps->cols[j];
    if (t.w_lo == Acc(0) && t.w_hi == Acc(0)) continue;
    taps->slot_lo[j] = static_cast<int>(
        std::lower_bound(taps->used_cols.begin(), taps->used_cols.end(), t.lo) -
        taps->used_cols.begin());
    taps->slot_hi[j] = static_cast<int>(
        std::lower_bound(taps->used_cols.begin(), taps->used_cols.end(), t.hi) -
        taps->used_cols.begin());
  }
}

template <typename Acc, typename T>
inline void AddWeightedRows(Acc* __restrict acc, const T* __restrict a, const T* __restrict b,
                            const T* __restrict c, const T* __restrict d, Acc wa, Acc wb,
                            Acc wc, Acc wd, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    acc[i] += wa * static_cast<Acc>(a[i]) + wb * static_cast<Acc>(b[i]) +
              wc * static_cast<Acc>(c[i]) + wd * static_cast<Acc>(d[i]);
  }
}

// acc[i] += w * src[i]
template <typename Acc, typename T>
inline void AxpyRow(Acc* __restrict acc, const T* __restrict src, Acc w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += w * static_cast<Acc>(src[i]);
}

// dst[i] += w * src[i] (dst is the feature gradient, src a small buffer)
template <typename Acc, typename T>
inline void AddScaledRow(T* __restrict dst, const Acc* __restrict src, Acc w, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += static_cast<T>(w * src[i]);
}

// Bilinear value of one sample for every channel (0 for a sample outside the
// map): the same four products, summed in the same order, as the average path
// and the pure-TF implementation.
template <typename Acc, typename T>
inline void SampleValue(const T* image, int width, int64_t channels, const Tap<Acc>& ty,
                        const Tap<Acc>& tx, Acc* __restrict out) {
  if ((ty.w_lo == Acc(0) && ty.w_hi == Acc(0)) || (tx.w_lo == Acc(0) && tx.w_hi == Acc(0))) {
    std::fill(out, out + channels, Acc(0));
    return;
  }
  const T* row_lo = image + static_cast<int64_t>(ty.lo) * width * channels;
  const T* row_hi = image + static_cast<int64_t>(ty.hi) * width * channels;
  const T* __restrict a = row_lo + tx.lo * channels;
  const T* __restrict b = row_lo + tx.hi * channels;
  const T* __restrict c = row_hi + tx.lo * channels;
  const T* __restrict d = row_hi + tx.hi * channels;
  const Acc wa = ty.w_lo * tx.w_lo, wb = ty.w_lo * tx.w_hi;
  const Acc wc = ty.w_hi * tx.w_lo, wd = ty.w_hi * tx.w_hi;
  for (int64_t i = 0; i < channels; ++i) {
    out[i] = wa * static_cast<Acc>(a[i]) + wb * static_cast<Acc>(b[i]) +
             wc * static_cast<Acc>(c[i]) + wd * static_cast<Acc>(d[i]);
  }
}

// Max aggregation of bin (p, q) of one RoI (taps computed for max): best[c] is
// the first maximum over the bin's samples in scan order (sample row outer,
// sample column inner; a later sample must be strictly greater), and, when
// `win_y` / `win_x` are given, win_y[c] / win_x[c] its row tap and column tap
// (indices into taps.rows / taps.cols, held as Acc: exact below 2^24, and the
// compare-and-select loop then works on one type and vectorises). `sample` is
// scratch space of `channels` values. Returns false for a bin without samples
// (outputs untouched).
template <typename Acc, typename T>
bool MaxOfBin(const RoITaps<Acc>& taps, const T* image, int width, int64_t channels, int p,
              int q, Acc* __restrict sample, Acc* __restrict best, Acc* __restrict win_y,
              Acc* __restrict win_x) {
  if (taps.grid_h == 0 || taps.grid_w == 0) return false;
  for (int iy = 0; iy < taps.grid_h; ++iy) {
    const int row = p * taps.grid_h + iy;
    const Tap<Acc>& ty = taps.rows[row];
    for (int ix = 0; ix < taps.grid_w; ++ix) {
      const int col = q * taps.grid_w + ix;
      const Tap<Acc>& tx = taps.cols[col];
      if (iy == 0 && ix == 0) {
        SampleValue<Acc, T>(image, width, channels, ty, tx, best);
        if (win_y != nullptr) {
          std::fill(win_y, win_y + channels, static_cast<Acc>(row));
          std::fill(win_x, win_x + channels, static_cast<Acc>(col));
        }
        continue;
      }
      SampleValue<Acc, T>(image, width, channels, ty, tx, sample);
      if (win_y == nullptr) {
        for (int64_t c = 0; c < channels; ++c) best[c] = sample[c] > best[c] ? sample[c] : best[c];
        continue;
      }
      // Branch-free (the winners of random data would mispredict half the time).
      const Acc row_f = static_cast<Acc>(row), col_f = static_cast<Acc>(col);
      for (int64_t c = 0; c < channels; ++c) {
        const bool better = sample[c] > best[c];
        best[c] = better ? sample[c] : best[c];
        win_y[c] = better ? row_f : win_y[c];
        win_x[c] = better ? col_f : win_x[c];
      }
    }
  }
  return true;
}

inline tensorflow::thread::ThreadPool* Workers(OpKernelContext* ctx, int* num_threads) {
  auto* worker_threads = ctx->device()->tensorflow_cpu_worker_threads();
  *num_threads = worker_threads->num_threads;
  return worker_threads->workers;
}

inline Status ReadParams(OpKernelConstruction* ctx, RoIAlignParams* p) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("pooled_height", &p->pooled_h));
  TF_RETURN_IF_ERROR(ctx->GetAttr("pooled_width", &p->pooled_w));
  TF_RETURN_IF_ERROR(ctx->GetAttr("spatial_scale", &p->spatial_scale));
  TF_RETURN_IF_ERROR(ctx->GetAttr("sampling_ratio", &p->sampling_ratio));
  TF_RETURN_IF_ERROR(ctx->GetAttr("aligned", &p->aligned));
  p->aggregation = kAggregateAvg;
  if (ctx->HasAttr("aggregation")) {  // the forward op's; its default is "avg"
    std::string aggregation;
    TF_RETURN_IF_ERROR(ctx->GetAttr("aggregation", &aggregation));
    if (aggregation == "max") {
      p->aggregation = kAggregateMax;
    } else if (aggregation != "avg") {
      return tensorflow::errors::InvalidArgument("aggregation must be 'avg' or 'max', got '",
                                                 aggregation, "'");
    }
  }
  return Status();
}

// Shapes of boxes [K, 4] / box_indices [K]; on CPU also the index range.
inline Status CheckBoxInputs(const Tensor& boxes, const Tensor& box_indices, int64_t batch,
                      bool indices_on_host) {
  if (boxes.dims() != 2 || boxes.dim_size(1) != 4) {
    return tensorflow::errors::InvalidArgument("boxes must be [K, 4] (y1, x1, y2, x2), got ",
                                               boxes.shape().DebugString());
  }
  if (box_indices.dims() != 1 || box_indices.dim_size(0) != boxes.dim_size(0)) {
    return tensorflow::errors::InvalidArgument("box_indices must be [K] with K = ",
                                               boxes.dim_size(0), ", got ",
                                               box_indices.shape().DebugString());
  }
  if (indices_on_host) {
    auto idx = box_indices.vec<int32_t>();
    for (int64_t k = 0; k < idx.size(); ++k) {
      if (idx(k) < 0 || idx(k) >= batch) {
        return tensorflow::errors::InvalidArgument("box_indices[", k, "] = ", idx(k),
                                                   " is outside the batch [0, ", batch, ")");
      }
    }
  }
  return Status();
}

}  // namespace mrcnn

#endif  // MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_
