// RoIAlign kernels: CPU implementation and kernel registrations (CPU, and GPU
// when compiled with GOOGLE_CUDA; the CUDA code is in roi_align_kernels.cu.cc).
//
// CPU forward: sharded over RoIs with the device's thread pool. For each RoI
// the bilinear taps (two indices and two weights per sample row and per sample
// column, bin averaging 1/count folded in) are computed once; each sample then
// adds four weighted rows of the contiguous channel dimension into a per-bin
// accumulator (average) or is compared with the bin's running maximum (max).
// CPU backward: sharded over (image, band of rows) units; each unit owns its
// rows of the feature gradient, so RoIs overlapping in the same image never
// write the same element from two threads (no atomics, no per-thread copies of
// the gradient), and writes are whole contiguous pixel rows (channels
// innermost). The bilinear scatter is done separably: x first into a small
// per-bin-row buffer, then y into the feature-gradient rows.
// The max aggregation's backward is in roi_align_max_grad.cc; the helpers both
// files use in roi_align_cpu.h.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#define MRCNN_WITH_TF_FUNCTORS
#include "roi_align_cpu.h"

namespace mrcnn {

namespace functor {

template <typename T>
struct RoIAlignForward<CPUDevice, T> {
  Status operator()(OpKernelContext* ctx, typename TTypes<T, 4>::ConstTensor features,
                    typename TTypes<float, 2>::ConstTensor boxes,
                    typename TTypes<int32_t, 1>::ConstTensor box_indices,
                    const RoIAlignParams& params, typename TTypes<T, 4>::Tensor output) {
    using Acc = typename AccType<T>::type;
    const int height = static_cast<int>(features.dimension(1));
    const int width = static_cast<int>(features.dimension(2));
    const int64_t channels = features.dimension(3);
    const int64_t num_boxes = boxes.dimension(0);
    const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
    const T* feat = features.data();
    T* out = output.data();
    const bool max_pool = params.aggregation == kAggregateMax;
    auto work = [&](int64_t begin, int64_t end) {
      RoITaps<Acc> taps;
      std::vector<Acc> acc(channels), sample(max_pool ? channels : 0);
      for (int64_t k = begin; k < end; ++k) {
        ComputeTaps<Acc>(&boxes(k, 0), box_indices(k), height, width, params, &taps);
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
    int num_threads = 1;
    auto* workers = Workers(ctx, &num_threads);
    const int64_t samples = bins * std::max(1, params.sampling_ratio > 0
                                                   ? params.sampling_ratio * params.sampling_ratio
                                                   : 4);
    tensorflow::Shard(num_threads, workers, num_boxes, samples * channels * 10 + 1000, work);
    return Status();
  }
};

template <typename T>
struct RoIAlignBackward<CPUDevice, T> {
  Status operator()(OpKernelContext* ctx, typename TTypes<T, 4>::ConstTensor grads,
                    typename TTypes<float, 2>::ConstTensor boxes,
                    typename TTypes<int32_t, 1>::ConstTensor box_indices,
                    const RoIAlignParams& params, typename TTypes<T, 4>::Tensor grad_features) {
    using Acc = typename AccType<T>::type;
    const int64_t batch = grad_features.dimension(0);
    const int height = static_cast<int>(grad_features.dimension(1));
    const int width = static_cast<int>(grad_features.dimension(2));
    const int64_t channels = grad_features.dimension(3);
    const int64_t num_boxes = boxes.dimension(0);
    const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
    const int64_t row_size = static_cast<int64_t>(width) * channels;
    T* gf = grad_features.data();
    const T* g = grads.data();
    int num_threads = 1;
    auto* workers = Workers(ctx, &num_threads);

    // Taps of every RoI, computed once (in parallel over RoIs), and the RoIs
    // of each image.
    std::vector<RoITaps<Acc>> all_taps(num_boxes);
    tensorflow::Shard(num_threads, workers, num_boxes, bins * 200, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        ComputeTaps<Acc>(&boxes(k, 0), box_indices(k), height, width, params, &all_taps[k]);
      }
    });
    std::vector<std::vector<int64_t>> rois_of_image(batch);
    for (int64_t k = 0; k < num_boxes; ++k) rois_of_image[box_indices(k)].push_back(k);

    // Work unit = (image, band of rows). A unit zeroes its band and adds every
    // contribution that lands in it, so no two threads write the same element
    // (no atomics, no per-thread gradient copies) and each unit writes whole
    // contiguous pixel rows. Per RoI and bin row the gradients are first
    // spread over the used columns (x direction, small buffer), then added
    // to the feature-gradient rows of the y samples inside the band.
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
                AxpyRow<Acc, T>(line.data() + taps.slot_lo[j] * channels, src, tx.w_lo,
                                channels);
                AxpyRow<Acc, T>(line.data() + taps.slot_hi[j] * channels, src, tx.w_hi,
                                channels);
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
    const int64_t samples = bins * std::max(1, params.sampling_ratio > 0
                                                   ? params.sampling_ratio * params.sampling_ratio
                                                   : 4);
    const int64_t cost = (num_boxes * samples * channels * 8) / std::max<int64_t>(
        1, batch * bands) + row_size * height / bands + 1000;
    tensorflow::Shard(num_threads, workers, batch * bands, cost, work);
    return Status();
  }
};

#if GOOGLE_CUDA
template <typename T> struct GpuDtypeKind;
template <> struct GpuDtypeKind<float> { static constexpr int value = 0; };
template <> struct GpuDtypeKind<Eigen::half> { static constexpr int value = 1; };
template <> struct GpuDtypeKind<Eigen::bfloat16> { static constexpr int value = 2; };

template <typename T>
struct RoIAlignForward<GPUDevice, T> {
  Status operator()(OpKernelContext* ctx, typename TTypes<T, 4>::ConstTensor features,
                    typename TTypes<float, 2>::ConstTensor boxes,
                    typename TTypes<int32_t, 1>::ConstTensor box_indices,
                    const RoIAlignParams& params, typename TTypes<T, 4>::Tensor output) {
    void* stream = reinterpret_cast<void*>(ctx->eigen_device<GPUDevice>().stream());
    const int err = gpu::LaunchRoIAlignForward(
        stream, GpuDtypeKind<T>::value, features.data(), features.dimension(0),
        features.dimension(1), features.dimension(2), features.dimension(3), boxes.data(),
        box_indices.data(), boxes.dimension(0), params, output.data());
    if (err != 0) return tensorflow::errors::Internal("RoIAlign CUDA launch failed: ", err);
    return Status();
  }
};

template <>
struct RoIAlignBackward<GPUDevice, float> {
  Status operator()(OpKernelContext* ctx, TTypes<float, 4>::ConstTensor grads,
                    TTypes<float, 2>::ConstTensor boxes,
                    TTypes<int32_t, 1>::ConstTensor box_indices, const RoIAlignParams& params,
                    TTypes<float, 4>::Tensor grad_features) {
    void* stream = reinterpret_cast<void*>(ctx->eigen_device<GPUDevice>().stream());
    const int err = gpu::LaunchRoIAlignBackward(
        stream, grads.data(), boxes.data(), box_indices.data(), boxes.dimension(0),
        grad_features.dimension(0), grad_features.dimension(1), grad_features.dimension(2),
        grad_features.dimension(3), params, grad_features.data());
    if (err != 0) return tensorflow::errors::Internal("RoIAlign grad CUDA launch failed: ", err);
    return Status();
  }
};

#endif  // GOOGLE_CUDA

}  // namespace functor

template <typename Device, typename T>
class RoIAlignOp : public OpKernel {
 public:
  explicit RoIAlignOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadParams(ctx, &params_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& boxes = ctx->input(1);
    const Tensor& box_indices = ctx->input(2);
    OP_REQUIRES(ctx, features.dims() == 4,
                tensorflow::errors::InvalidArgument("features must be [N, H, W, C], got ",
                                                    features.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckBoxInputs(boxes, box_indices, features.dim_size(0),
                                       std::is_same<Device, CPUDevice>::value));
    const int64_t k = boxes.dim_size(0);
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({k, params_.pooled_h, params_.pooled_w,
                                            features.dim_size(3)}),
                            &output));
    if (output->NumElements() == 0) return;
    OP_REQUIRES(ctx, features.dim_size(1) > 0 && features.dim_size(2) > 0,
                tensorflow::errors::InvalidArgument("features has an empty spatial size: ",
                                                    features.shape().DebugString()));
    OP_REQUIRES_OK(ctx, functor::RoIAlignForward<Device, T>()(
                            ctx, features.tensor<T, 4>(), boxes.tensor<float, 2>(),
                            box_indices.vec<int32_t>(), params_, output->tensor<T, 4>()));
  }

 private:
  RoIAlignParams params_{};
};

template <typename Device, typename T>
class RoIAlignGradOp : public OpKernel {
 public:
  explicit RoIAlignGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadParams(ctx, &params_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor& boxes = ctx->input(1);
    const Tensor& box_indices = ctx->input(2);
    const Tensor& shape_t = ctx->input(3);
    OP_REQUIRES(ctx, shape_t.dims() == 1 && shape_t.NumElements() == 4,
                tensorflow::errors::InvalidArgument("features_shape must have 4 elements"));
    auto shape_vec = shape_t.vec<int32_t>();
    TensorShape features_shape;
    for (int i = 0; i < 4; ++i) {
      OP_REQUIRES(ctx, shape_vec(i) >= 0,
                  tensorflow::errors::InvalidArgument("negative features_shape"));
      features_shape.AddDim(shape_vec(i));
    }
    OP_REQUIRES_OK(ctx, CheckBoxInputs(boxes, box_indices, features_shape.dim_size(0),
                                       std::is_same<Device, CPUDevice>::value));
    const int64_t k = boxes.dim_size(0);
    OP_REQUIRES(ctx,
                grads.dims() == 4 && grads.dim_size(0) == k &&
                    grads.dim_size(1) == params_.pooled_h &&
                    grads.dim_size(2) == params_.pooled_w &&
                    grads.dim_size(3) == features_shape.dim_size(3),
                tensorflow::errors::InvalidArgument("grads must be [K, pooled_h, pooled_w, C], got ",
                                                    grads.shape().DebugString()));
    Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features_shape, &grad_features));
    if (grad_features->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, functor::RoIAlignBackward<Device, T>()(
                            ctx, grads.tensor<T, 4>(), boxes.tensor<float, 2>(),
                            box_indices.vec<int32_t>(), params_,
                            grad_features->tensor<T, 4>()));
  }

 private:
  RoIAlignParams params_{};
};

#define REGISTER_CPU_FORWARD(T)                                                     \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("MrcnnRoiAlign").Device(DEVICE_CPU).TypeConstraint<T>("T"),              \
      RoIAlignOp<CPUDevice, T>);
REGISTER_CPU_FORWARD(float);
REGISTER_CPU_FORWARD(double);
REGISTER_CPU_FORWARD(Eigen::half);
REGISTER_CPU_FORWARD(Eigen::bfloat16);
#undef REGISTER_CPU_FORWARD

#define REGISTER_CPU_GRAD(T)                                                        \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("MrcnnRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),          \
      RoIAlignGradOp<CPUDevice, T>);
REGISTER_CPU_GRAD(float);
REGISTER_CPU_GRAD(double);
#undef REGISTER_CPU_GRAD

#if GOOGLE_CUDA
#define REGISTER_GPU_FORWARD(T)                                                     \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("MrcnnRoiAlign").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),  \
      RoIAlignOp<GPUDevice, T>);
REGISTER_GPU_FORWARD(float);
REGISTER_GPU_FORWARD(Eigen::half);
REGISTER_GPU_FORWARD(Eigen::bfloat16);
#undef REGISTER_GPU_FORWARD

REGISTER_KERNEL_BUILDER(Name("MrcnnRoiAlignGrad")
                            .Device(tensorflow::DEVICE_GPU)
                            .TypeConstraint<float>("T")
                            .HostMemory("features_shape"),
                        RoIAlignGradOp<GPUDevice, float>);
#endif  // GOOGLE_CUDA

}  // namespace mrcnn
