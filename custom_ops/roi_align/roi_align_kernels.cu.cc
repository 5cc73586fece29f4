// RoIAlign CUDA kernels: one thread per output element (forward) and one
// thread per incoming-gradient element with atomicAdd into the feature
// gradient (backward; for max aggregation the thread first recomputes its
// bin's winning sample from the features, the first maximum in scan order).
// Includes only CUDA headers (no TensorFlow / Eigen) so nvcc is fast; the
// TensorFlow glue is in roi_align_kernels.cc and roi_align_max_grad.cc.
#if GOOGLE_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "roi_align.h"

namespace mrcnn {
namespace gpu {
namespace {

constexpr int kThreads = 256;

__device__ inline float ToFloat(float v) { return v; }
__device__ inline float ToFloat(__half v) { return __half2float(v); }
__device__ inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ inline T FromFloat(float v);
template <> __device__ inline float FromFloat<float>(float v) { return v; }
template <> __device__ inline __half FromFloat<__half>(float v) { return __float2half(v); }
template <> __device__ inline __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// Bilinear value of one sample of one channel (`image` points at channel ch of
// the image; 0 for a sample outside the map). Forward and max backward use this
// one function, so both find the same winning sample.
template <typename T>
__device__ inline float SampleAt(const T* __restrict__ image, int w, int c, const Tap<float>& ty,
                                 const Tap<float>& tx) {
  const int64_t r_lo = static_cast<int64_t>(ty.lo) * w, r_hi = static_cast<int64_t>(ty.hi) * w;
  return ty.w_lo * (tx.w_lo * ToFloat(image[(r_lo + tx.lo) * c]) +
                    tx.w_hi * ToFloat(image[(r_lo + tx.hi) * c])) +
         ty.w_hi * (tx.w_lo * ToFloat(image[(r_hi + tx.lo) * c]) +
                    tx.w_hi * ToFloat(image[(r_hi + tx.hi) * c]));
}

// The first maximum over the samples of bin (p, q), scanning sample rows outer
// and sample columns inner; *winner_y / *winner_x: its taps. Returns false
// for a bin without samples.
template <typename T>
__device__ inline bool MaxOfBin(const T* __restrict__ image, int h, int w, int c,
                                const RoIGeometry<float>& g, int p, int q, float* best,
                                Tap<float>* winner_y, Tap<float>* winner_x) {
  if (g.grid_h <= 0 || g.grid_w <= 0) return false;
  bool found = false;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const Tap<float> ty = LinearTap<float>(SamplePosition<float>(g.y0, g.bin_h, g.grid_h, p, iy), h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const Tap<float> tx =
          LinearTap<float>(SamplePosition<float>(g.x0, g.bin_w, g.grid_w, q, ix), w);
      const float value = SampleAt<T>(image, w, c, ty, tx);
      if (!found || value > *best) {
        found = true;
        *best = value;
        *winner_y = ty;
        *winner_x = tx;
      }
    }
  }
  return true;
}

// Output element index -> (k, p, q, c), channel fastest (coalesced reads).
template <typename T>
__global__ void ForwardKernel(const T* __restrict__ features, int n, int h, int w, int c,
                              const float* __restrict__ boxes,
                              const int32_t* __restrict__ box_indices, int k,
                              RoIAlignParams params, T* __restrict__ output) {
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int ch = static_cast<int>(idx % c);
    const int q = static_cast<int>((idx / c) % params.pooled_w);
    const int p = static_cast<int>((idx / c / params.pooled_w) % params.pooled_h);
    const int roi = static_cast<int>(idx / c / params.pooled_w / params.pooled_h);
    const int batch = box_indices[roi];
    if (batch < 0 || batch >= n) {  // not validated on the GPU path: yield zeros
      output[idx] = FromFloat<T>(0.f);
      continue;
    }
    const RoIGeometry<float> g = MakeGeometry<float>(boxes + 4 * roi, params);
    const T* image = features + static_cast<int64_t>(batch) * h * w * c + ch;
    if (params.aggregation == kAggregateMax) {
      float best = 0.f;
      Tap<float> ty, tx;
      if (!MaxOfBin<T>(image, h, w, c, g, p, q, &best, &ty, &tx)) best = 0.f;
      output[idx] = FromFloat<T>(best);
      continue;
    }
    float sum = 0.f;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const Tap<float> ty = LinearTap<float>(SamplePosition<float>(g.y0, g.bin_h, g.grid_h, p, iy), h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const Tap<float> tx =
            LinearTap<float>(SamplePosition<float>(g.x0, g.bin_w, g.grid_w, q, ix), w);
        sum += SampleAt<T>(image, w, c, ty, tx);
      }
    }
    output[idx] = FromFloat<T>(sum / g.count);
  }
}

__global__ void BackwardKernel(const float* __restrict__ grads, const float* __restrict__ boxes,
                               const int32_t* __restrict__ box_indices, int k, int n, int h,
                               int w, int c, RoIAlignParams params,
                               float* __restrict__ grad_features) {
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int ch = static_cast<int>(idx % c);
    const int q = static_cast<int>((idx / c) % params.pooled_w);
    const int p = static_cast<int>((idx / c / params.pooled_w) % params.pooled_h);
    const int roi = static_cast<int>(idx / c / params.pooled_w / params.pooled_h);
    const int batch = box_indices[roi];
    if (batch < 0 || batch >= n) continue;
    const RoIGeometry<float> g = MakeGeometry<float>(boxes + 4 * roi, params);
    float* image = grad_features + static_cast<int64_t>(batch) * h * w * c + ch;
    const float top = grads[idx] / g.count;
    for (int iy = 0; iy < g.grid_h; ++iy) {
      const Tap<float> ty = LinearTap<float>(SamplePosition<float>(g.y0, g.bin_h, g.grid_h, p, iy), h);
      for (int ix = 0; ix < g.grid_w; ++ix) {
        const Tap<float> tx =
            LinearTap<float>(SamplePosition<float>(g.x0, g.bin_w, g.grid_w, q, ix), w);
        if ((ty.w_lo == 0.f && ty.w_hi == 0.f) || (tx.w_lo == 0.f && tx.w_hi == 0.f)) continue;
        const int64_t r_lo = static_cast<int64_t>(ty.lo) * w, r_hi = static_cast<int64_t>(ty.hi) * w;
        atomicAdd(image + (r_lo + tx.lo) * c, top * ty.w_lo * tx.w_lo);
        atomicAdd(image + (r_lo + tx.hi) * c, top * ty.w_lo * tx.w_hi);
        atomicAdd(image + (r_hi + tx.lo) * c, top * ty.w_hi * tx.w_lo);
        atomicAdd(image + (r_hi + tx.hi) * c, top * ty.w_hi * tx.w_hi);
      }
    }
  }
}

__global__ void MaxBackwardKernel(const float* __restrict__ grads,
                                  const float* __restrict__ features,
                                  const float* __restrict__ boxes,
                                  const int32_t* __restrict__ box_indices, int k, int n, int h,
                                  int w, int c, RoIAlignParams params,
                                  float* __restrict__ grad_features) {
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int ch = static_cast<int>(idx % c);
    const int q = static_cast<int>((idx / c) % params.pooled_w);
    const int p = static_cast<int>((idx / c / params.pooled_w) % params.pooled_h);
    const int roi = static_cast<int>(idx / c / params.pooled_w / params.pooled_h);
    const int batch = box_indices[roi];
    if (batch < 0 || batch >= n) continue;
    const RoIGeometry<float> g = MakeGeometry<float>(boxes + 4 * roi, params);
    const int64_t offset = static_cast<int64_t>(batch) * h * w * c + ch;
    float best = 0.f;
    Tap<float> ty, tx;
    if (!MaxOfBin<float>(features + offset, h, w, c, g, p, q, &best, &ty, &tx)) continue;
    if ((ty.w_lo == 0.f && ty.w_hi == 0.f) || (tx.w_lo == 0.f && tx.w_hi == 0.f)) continue;
    float* image = grad_features + offset;
    const float top = grads[idx];
    const int64_t r_lo = static_cast<int64_t>(ty.lo) * w, r_hi = static_cast<int64_t>(ty.hi) * w;
    atomicAdd(image + (r_lo + tx.lo) * c, top * ty.w_lo * tx.w_lo);
    atomicAdd(image + (r_lo + tx.hi) * c, top * ty.w_lo * tx.w_hi);
    atomicAdd(image + (r_hi + tx.lo) * c, top * ty.w_hi * tx.w_lo);
    atomicAdd(image + (r_hi + tx.hi) * c, top * ty.w_hi * tx.w_hi);
  }
}

int Blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 * 32 ? blocks : 65535 * 32);
}

}  // namespace

int LaunchRoIAlignForward(void* stream, int dtype_kind, const void* features, int n, int h,
                          int w, int c, const float* boxes, const int32_t* box_indices, int k,
                          const RoIAlignParams& params, void* output) {
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  if (total == 0) return 0;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype_kind) {
    case 0:
      ForwardKernel<float><<<Blocks(total), kThreads, 0, s>>>(
          static_cast<const float*>(features), n, h, w, c, boxes, box_indices, k, params,
          static_cast<float*>(output));
      break;
    case 1:
      ForwardKernel<__half><<<Blocks(total), kThreads, 0, s>>>(
          static_cast<const __half*>(features), n, h, w, c, boxes, box_indices, k, params,
          static_cast<__half*>(output));
      break;
    case 2:
      ForwardKernel<__nv_bfloat16><<<Blocks(total), kThreads, 0, s>>>(
          static_cast<const __nv_bfloat16*>(features), n, h, w, c, boxes, box_indices, k,
          params, static_cast<__nv_bfloat16*>(output));
      break;
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
  return static_cast<int>(cudaGetLastError());
}

int LaunchRoIAlignBackward(void* stream, const float* grads, const float* boxes,
                           const int32_t* box_indices, int k, int n, int h, int w, int c,
                           const RoIAlignParams& params, float* grad_features) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const size_t bytes = sizeof(float) * static_cast<size_t>(n) * h * w * c;
  cudaError_t err = cudaMemsetAsync(grad_features, 0, bytes, s);
  if (err != cudaSuccess) return static_cast<int>(err);
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  if (total == 0) return 0;
  BackwardKernel<<<Blocks(total), kThreads, 0, s>>>(grads, boxes, box_indices, k, n, h, w, c,
                                                   params, grad_features);
  return static_cast<int>(cudaGetLastError());
}

int LaunchRoIAlignMaxBackward(void* stream, const float* grads, const float* features,
                              const float* boxes, const int32_t* box_indices, int k, int n,
                              int h, int w, int c, const RoIAlignParams& params,
                              float* grad_features) {
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const size_t bytes = sizeof(float) * static_cast<size_t>(n) * h * w * c;
  cudaError_t err = cudaMemsetAsync(grad_features, 0, bytes, s);
  if (err != cudaSuccess) return static_cast<int>(err);
  const int64_t total = static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  if (total == 0) return 0;
  MaxBackwardKernel<<<Blocks(total), kThreads, 0, s>>>(grads, features, boxes, box_indices, k,
                                                      n, h, w, c, params, grad_features);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace gpu
}  // namespace mrcnn
#endif  // GOOGLE_CUDA
