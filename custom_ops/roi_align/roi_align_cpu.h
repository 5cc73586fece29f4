// CPU RoIAlign kernels and their helpers: the taps of a RoI, the bilinear
// value of a sample, the maximum of a bin, and the three kernels (forward,
// average backward, max backward) on raw pointers, without TensorFlow types,
// so that a standalone program can run the very kernels the op runs
// (custom_ops/roi_align/harness/). The TensorFlow glue (roi_align_kernels.cc:
// forward, average backward, registrations; roi_align_max_grad.cc: the max
// backward) calls them with tensorflow::Shard; with MRCNN_WITH_TF_FUNCTORS
// defined this header also brings the thread pool, attribute and input
// checks. TensorFlow users: include after defining EIGEN_USE_THREADS (and
// EIGEN_USE_GPU with GOOGLE_CUDA) and MRCNN_WITH_TF_FUNCTORS.
#ifndef MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_
#define MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_

#include "roi_align.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#if defined(MRCNN_WITH_TF_FUNCTORS)
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"
#endif  // MRCNN_WITH_TF_FUNCTORS

namespace mrcnn {

#if defined(MRCNN_WITH_TF_FUNCTORS)
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
#endif  // MRCNN_WITH_TF_FUNCTORS

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

// --- The CPU kernels -----------------------------------------------------------
// On raw row-major arrays: features / grad_features [batch, height, width,
// channels], boxes [num_boxes, 4], box_indices [num_boxes] (each in
// [0, batch): the caller checks), grads / output [num_boxes, pooled_h,
// pooled_w, channels]. `shard(units, cost_per_unit, work)` runs
// work(begin, end) over ranges covering [0, units) (tensorflow::Shard's
// contract; a serial caller runs work(0, units)); num_threads is how many
// threads it uses (it sizes the backward's work units, not the results).

// Samples per bin (an estimate for the adaptive grid), for the shard costs.
inline int64_t SamplesPerBinEstimate(const RoIAlignParams& params) {
  return std::max(1, params.sampling_ratio > 0 ? params.sampling_ratio * params.sampling_ratio
                                               : 4);
}

// Forward: sharded over RoIs. For each RoI the taps are computed once; each
// sample then adds four weighted rows of the contiguous channel dimension
// into a per-bin accumulator (average) or is compared with the bin's running
// maximum (max).
template <typename T, typename Shard>
void RoIAlignForwardCpu(const T* feat, int height, int width, int64_t channels,
                        const float* boxes, const int32_t* box_indices, int64_t num_boxes,
                        const RoIAlignParams& params, const Shard& shard, T* out) {
  using Acc = typename AccType<T>::type;
  const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
  const bool max_pool = params.aggregation == kAggregateMax;
  auto work = [&](int64_t begin, int64_t end) {
    RoITaps<Acc> taps;
    std::vector<Acc> acc(channels), sample(max_pool ? channels : 0);
    for (int64_t k = begin; k < end; ++k) {
      ComputeTaps<Acc>(boxes + 4 * k, box_indices[k], height, width, params, &taps);
      const T* image = feat + static_cast<int64_t>(taps.batch) * height * width * channels;
      for (int p = 0; p < params.pooled_h; ++p) {
        for (int q = 0; q < params.pooled_w; ++q) {
          if (max_pool) {
            T* dst = out + ((k * bins) + p * params.pooled_w + q) * channels;
            if (MaxOfBin<Acc, T>(taps, image, width, channels, p, q, sample.data(),
                                 acc.data(), nullptr, nullptr)) {
              for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<T>(acc[c]);
            } else {
              std::fill(dst, dst + channels, static_cast<T>(0));
            }
            continue;
          }
          std::fill(acc.begin(), acc.end(), Acc(0));
          for (int iy = 0; iy < taps.grid_h; ++iy) {
            const Tap<Acc>& ty = taps.rows[p * taps.grid_h + iy];
            if (ty.w_lo == Acc(0) && ty.w_hi == Acc(0)) continue;
            const T* row_lo = image + static_cast<int64_t>(ty.lo) * width * channels;
            const T* row_hi = image + static_cast<int64_t>(ty.hi) * width * channels;
            for (int ix = 0; ix < taps.grid_w; ++ix) {
              const Tap<Acc>& tx = taps.cols[q * taps.grid_w + ix];
              if (tx.w_lo == Acc(0) && tx.w_hi == Acc(0)) continue;
              const int64_t x_lo = tx.lo * channels, x_hi = tx.hi * channels;
              AddWeightedRows<Acc, T>(acc.data(), row_lo + x_lo, row_lo + x_hi, row_hi + x_lo,
                                      row_hi + x_hi, ty.w_lo * tx.w_lo, ty.w_lo * tx.w_hi,
                                      ty.w_hi * tx.w_lo, ty.w_hi * tx.w_hi, channels);
            }
          }
          T* dst = out + ((k * bins) + p * params.pooled_w + q) * channels;
          for (int64_t c = 0; c < channels; ++c) dst[c] = static_cast<T>(acc[c]);
        }
      }
    }
  };
  shard(num_boxes, bins * SamplesPerBinEstimate(params) * channels * 10 + 1000, work);
}

// Average backward: sharded over (image, band of rows) units; each unit owns
// its rows of the feature gradient, so RoIs overlapping in the same image
// never write the same element from two threads (no atomics, no per-thread
// copies of the gradient), and writes are whole contiguous pixel rows
// (channels innermost). The bilinear scatter is done separably: x first into
// a small per-bin-row buffer, then y into the feature-gradient rows.
template <typename T, typename Shard>
void RoIAlignBackwardCpu(const T* g, int64_t batch, int height, int width, int64_t channels,
                         const float* boxes, const int32_t* box_indices, int64_t num_boxes,
                         const RoIAlignParams& params, int num_threads, const Shard& shard,
                         T* gf) {
  using Acc = typename AccType<T>::type;
  const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
  const int64_t row_size = static_cast<int64_t>(width) * channels;

  // Taps of every RoI, computed once (in parallel over RoIs), and the RoIs
  // of each image.
  std::vector<RoITaps<Acc>> all_taps(num_boxes);
  shard(num_boxes, bins * 200, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      ComputeTaps<Acc>(boxes + 4 * k, box_indices[k], height, width, params, &all_taps[k]);
    }
  });
  std::vector<std::vector<int64_t>> rois_of_image(batch);
  for (int64_t k = 0; k < num_boxes; ++k) rois_of_image[box_indices[k]].push_back(k);

  // Work unit = (image, band of rows). A unit zeroes its band and adds every
  // contribution that lands in it. Per RoI and bin row the gradients are
  // first spread over the used columns (x direction, small buffer), then
  // added to the feature-gradient rows of the y samples inside the band.
  const int64_t bands = std::max<int64_t>(
      1, std::min<int64_t>(height, (8 * std::max(num_threads, 1) + batch - 1) /
                                       std::max<int64_t>(batch, 1)));
  auto work = [&](int64_t begin, int64_t end) {
    std::vector<Acc> line;  // [used columns, channels] for one bin row
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t image_index = unit / bands, band = unit % bands;
      const int r0 = static_cast<int>(band * height / bands);
      const int r1 = static_cast<int>((band + 1) * height / bands);
      T* image = gf + image_index * height * row_size;
      std::memset(image + r0 * row_size, 0, sizeof(T) * (r1 - r0) * row_size);
      auto in_band = [r0, r1](int r) { return r >= r0 && r < r1; };
      for (const int64_t k : rois_of_image[image_index]) {
        const RoITaps<Acc>& taps = all_taps[k];
        const int64_t used = static_cast<int64_t>(taps.used_cols.size());
        if (used == 0) continue;
        for (int p = 0; p < params.pooled_h; ++p) {
          bool touches_band = false;
          for (int iy = 0; iy < taps.grid_h; ++iy) {
            const Tap<Acc>& ty = taps.rows[p * taps.grid_h + iy];
            if (ty.w_lo == Acc(0) && ty.w_hi == Acc(0)) continue;
            touches_band |= in_band(ty.lo) || in_band(ty.hi);
          }
          if (!touches_band) continue;
          line.assign(used * channels, Acc(0));
          for (int q = 0; q < params.pooled_w; ++q) {
            const T* src = g + ((k * bins) + p * params.pooled_w + q) * channels;
            for (int ix = 0; ix < taps.grid_w; ++ix) {
              const int j = q * taps.grid_w + ix;
              const Tap<Acc>& tx = taps.cols[j];
              if (tx.w_lo == Acc(0) && tx.w_hi == Acc(0)) continue;
              AxpyRow<Acc, T>(line.data() + taps.slot_lo[j] * channels, src, tx.w_lo, channels);
              AxpyRow<Acc, T>(line.data() + taps.slot_hi[j] * channels, src, tx.w_hi, channels);
            }
          }
          for (int iy = 0; iy < taps.grid_h; ++iy) {
            const Tap<Acc>& ty = taps.rows[p * taps.grid_h + iy];
            if (ty.w_lo == Acc(0) && ty.w_hi == Acc(0)) continue;
            const int rows[2] = {ty.lo, ty.hi};
            const Acc weights[2] = {ty.w_lo, ty.w_hi};
            for (int side = 0; side < 2; ++side) {
              if (!in_band(rows[side]) || weights[side] == Acc(0)) continue;
              T* dst = image + rows[side] * row_size;
              for (int64_t u = 0; u < used; ++u) {
                AddScaledRow<Acc, T>(dst + static_cast<int64_t>(taps.used_cols[u]) * channels,
                                     line.data() + u * channels, weights[side], channels);
              }
            }
          }
        }
      }
    }
  };
  const int64_t cost = (num_boxes * bins * SamplesPerBinEstimate(params) * channels * 8) /
                           std::max<int64_t>(1, batch * bands) +
                       row_size * height / bands + 1000;
  shard(batch * bands, cost, work);
}

// Max backward: the winning sample of every (RoI, bin, channel) is
// recomputed from the features (sharded over RoIs, as the forward pass finds
// it), then the gradients are added to the winners' four bilinear
// neighbours, sharded over (image, block of channels) units: each unit owns
// its channels of its image's feature gradient (no atomics), every element
// receives its contributions in RoI order (deterministic), and a few wide
// channel blocks, not one unit per channel, keep the reads of the winners and
// gradients contiguous.
template <typename T, typename Shard>
void RoIAlignMaxBackwardCpu(const T* g, const T* feat, int64_t batch, int height, int width,
                            int64_t channels, const float* boxes, const int32_t* box_indices,
                            int64_t num_boxes, const RoIAlignParams& params, int num_threads,
                            const Shard& shard, T* gf) {
  using Acc = typename AccType<T>::type;
  const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
  const int64_t image_size = static_cast<int64_t>(height) * width * channels;

  // The winning sample of every (RoI, bin, channel) as its row and column
  // taps; -1: a bin without samples.
  std::vector<RoITaps<Acc>> all_taps(num_boxes);
  const size_t outputs = static_cast<size_t>(num_boxes * bins * channels);
  std::vector<int32_t> win_y(outputs, -1), win_x(outputs, -1);
  shard(num_boxes, bins * SamplesPerBinEstimate(params) * channels * 10 + 1000,
        [&](int64_t begin, int64_t end) {
    std::vector<Acc> sample(channels), best(channels);
    std::vector<Acc> ly(channels), lx(channels);
    for (int64_t k = begin; k < end; ++k) {
      RoITaps<Acc>& taps = all_taps[k];
      ComputeTaps<Acc>(boxes + 4 * k, box_indices[k], height, width, params, &taps);
      const T* image = feat + static_cast<int64_t>(taps.batch) * image_size;
      for (int p = 0; p < params.pooled_h; ++p) {
        for (int q = 0; q < params.pooled_w; ++q) {
          const int64_t offset = ((k * bins) + p * params.pooled_w + q) * channels;
          if (MaxOfBin<Acc, T>(taps, image, width, channels, p, q, sample.data(), best.data(),
                               ly.data(), lx.data())) {
            for (int64_t c = 0; c < channels; ++c) {
              win_y[offset + c] = static_cast<int32_t>(ly[c]);
              win_x[offset + c] = static_cast<int32_t>(lx[c]);
            }
          }
        }
      }
    }
  });

  // Scatter to the winners' four neighbours; a unit owns (image, channel block).
  std::vector<std::vector<int64_t>> rois_of_image(batch);
  for (int64_t k = 0; k < num_boxes; ++k) rois_of_image[box_indices[k]].push_back(k);
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(channels, (2 * std::max(num_threads, 1) + batch - 1) /
                                         std::max<int64_t>(batch, 1)));
  std::memset(gf, 0, sizeof(T) * static_cast<size_t>(batch * image_size));
  // One unit: channels [c0, c1) of one image's gradient, RoIs in order.
  auto scatter_unit = [&](int64_t image_index, int64_t c0, int64_t c1) {
    T* image = gf + image_index * image_size;
    for (const int64_t k : rois_of_image[image_index]) {
      const RoITaps<Acc>& taps = all_taps[k];
      for (int p = 0; p < params.pooled_h; ++p) {
        for (int q = 0; q < params.pooled_w; ++q) {
          const int64_t offset = ((k * bins) + p * params.pooled_w + q) * channels;
          for (int64_t c = c0; c < c1; ++c) {
            if (win_y[offset + c] < 0) continue;
            const Tap<Acc>& ty = taps.rows[win_y[offset + c]];
            const Tap<Acc>& tx = taps.cols[win_x[offset + c]];
            if ((ty.w_lo == Acc(0) && ty.w_hi == Acc(0)) ||
                (tx.w_lo == Acc(0) && tx.w_hi == Acc(0))) {
              continue;
            }
            const Acc top = static_cast<Acc>(g[offset + c]);
            const int64_t r_lo = static_cast<int64_t>(ty.lo) * width;
            const int64_t r_hi = static_cast<int64_t>(ty.hi) * width;
            image[(r_lo + tx.lo) * channels + c] += static_cast<T>(top * ty.w_lo * tx.w_lo);
            image[(r_lo + tx.hi) * channels + c] += static_cast<T>(top * ty.w_lo * tx.w_hi);
            image[(r_hi + tx.lo) * channels + c] += static_cast<T>(top * ty.w_hi * tx.w_lo);
            image[(r_hi + tx.hi) * channels + c] += static_cast<T>(top * ty.w_hi * tx.w_hi);
          }
        }
      }
    }
  };
  shard(batch * blocks,
        (num_boxes * bins * channels * 8) / std::max<int64_t>(1, batch * blocks) + 1000,
        [&](int64_t begin, int64_t end) {
          for (int64_t unit = begin; unit < end; ++unit) {
            const int64_t block = unit % blocks;
            scatter_unit(unit / blocks, block * channels / blocks,
                         (block + 1) * channels / blocks);
          }
        });
}

#if defined(MRCNN_WITH_TF_FUNCTORS)
inline tensorflow::thread::ThreadPool* Workers(OpKernelContext* ctx, int* num_threads) {
  auto* worker_threads = ctx->device()->tensorflow_cpu_worker_threads();
  *num_threads = worker_threads->num_threads;
  return worker_threads->workers;
}

// The kernels' `shard` on the device's thread pool (tensorflow::Shard).
struct TfShard {
  int num_threads;
  tensorflow::thread::ThreadPool* workers;
  template <typename Work>
  void operator()(int64_t units, int64_t cost_per_unit, Work&& work) const {
    tensorflow::Shard(num_threads, workers, units, cost_per_unit, std::forward<Work>(work));
  }
};

inline TfShard ShardOn(OpKernelContext* ctx) {
  TfShard shard{1, nullptr};
  shard.workers = Workers(ctx, &shard.num_threads);
  return shard;
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

#endif  // MRCNN_WITH_TF_FUNCTORS

}  // namespace mrcnn

#endif  // MRCNN_CUSTOM_OPS_ROI_ALIGN_CPU_H_
