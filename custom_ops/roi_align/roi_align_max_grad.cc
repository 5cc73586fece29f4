// Backward of RoIAlign with max aggregation (op MrcnnRoiAlignMaxGrad): CPU
// implementation and kernel registrations (CPU, and GPU when compiled with
// GOOGLE_CUDA; the CUDA kernel is in roi_align_kernels.cu.cc).
//
// CPU: the winning sample of every (RoI, bin, channel) is recomputed from the
// features (sharded over RoIs, as the forward pass finds it), then the
// gradients are added to the winners' four bilinear neighbours, sharded over
// (image, block of channels) units: each unit owns its channels of its
// image's feature gradient (no atomics), every element receives its
// contributions in RoI order (deterministic), and a few wide channel blocks,
// not one unit per channel, keep the reads of the winners and gradients
// contiguous.
#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#define MRCNN_WITH_TF_FUNCTORS
#include "roi_align_cpu.h"

namespace mrcnn {

namespace functor {

template <typename T>
struct RoIAlignMaxBackward<CPUDevice, T> {
  Status operator()(OpKernelContext* ctx, typename TTypes<T, 4>::ConstTensor grads,
                    typename TTypes<T, 4>::ConstTensor features,
                    typename TTypes<float, 2>::ConstTensor boxes,
                    typename TTypes<int32_t, 1>::ConstTensor box_indices,
                    const RoIAlignParams& params, typename TTypes<T, 4>::Tensor grad_features) {
    using Acc = typename AccType<T>::type;
    const int height = static_cast<int>(features.dimension(1));
    const int width = static_cast<int>(features.dimension(2));
    const int64_t channels = features.dimension(3);
    const int64_t num_boxes = boxes.dimension(0);
    const int64_t bins = static_cast<int64_t>(params.pooled_h) * params.pooled_w;
    const int64_t image_size = static_cast<int64_t>(height) * width * channels;
    const T* feat = features.data();
    const T* g = grads.data();
    T* gf = grad_features.data();
    int num_threads = 1;
    auto* workers = Workers(ctx, &num_threads);
    const int64_t samples = bins * std::max(1, params.sampling_ratio > 0
                                                   ? params.sampling_ratio * params.sampling_ratio
                                                   : 4);

    // The winning sample of every (RoI, bin, channel) as its row and column
    // taps; -1: a bin without samples.
    std::vector<RoITaps<Acc>> all_taps(num_boxes);
    const size_t outputs = static_cast<size_t>(num_boxes * bins * channels);
    std::vector<int32_t> win_y(outputs, -1), win_x(outputs, -1);
    tensorflow::Shard(num_threads, workers, num_boxes, samples * channels * 10 + 1000,
                      [&](int64_t begin, int64_t end) {
      std::vector<Acc> sample(channels), best(channels);
      std::vector<Acc> ly(channels), lx(channels);
      for (int64_t k = begin; k < end; ++k) {
        RoITaps<Acc>& taps = all_taps[k];
        ComputeTaps<Acc>(&boxes(k, 0), box_indices(k), height, width, params, &taps);
        const T* image = feat + static_cast<int64_t>(taps.batch) * image_size;
        for (int p = 0; p < params.pooled_h; ++p) {
          for (int q = 0; q < params.pooled_w; ++q) {
            const int64_t offset = ((k * bins) + p * params.pooled_w + q) * channels;
            if (MaxOfBin<Acc, T>(taps, image, width, channels, p, q, sample.data(),
                                 best.data(), ly.data(), lx.data())) {
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
    const int64_t batch = grad_features.dimension(0);
    std::vector<std::vector<int64_t>> rois_of_image(batch);
    for (int64_t k = 0; k < num_boxes; ++k) rois_of_image[box_indices(k)].push_back(k);
    const int64_t blocks = std::max<int64_t>(
        1, std::min<int64_t>(channels, (2 * std::max(num_threads, 1) + batch - 1) /
                                           std::max<int64_t>(batch, 1)));
    std::memset(gf, 0, sizeof(T) * static_cast<size_t>(grad_features.size()));
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
    tensorflow::Shard(num_threads, workers, batch * blocks,
                      (num_boxes * bins * channels * 8) / std::max<int64_t>(1, batch * blocks) +
                          1000,
                      [&](int64_t begin, int64_t end) {
                        for (int64_t unit = begin; unit < end; ++unit) {
                          const int64_t block = unit % blocks;
                          scatter_unit(unit / blocks, block * channels / blocks,
                                       (block + 1) * channels / blocks);
                        }
                      });
    return Status();
  }
};

#if GOOGLE_CUDA
template <>
struct RoIAlignMaxBackward<GPUDevice, float> {
  Status operator()(OpKernelContext* ctx, TTypes<float, 4>::ConstTensor grads,
                    TTypes<float, 4>::ConstTensor features, TTypes<float, 2>::ConstTensor boxes,
                    TTypes<int32_t, 1>::ConstTensor box_indices, const RoIAlignParams& params,
                    TTypes<float, 4>::Tensor grad_features) {
    void* stream = reinterpret_cast<void*>(ctx->eigen_device<GPUDevice>().stream());
    const int err = gpu::LaunchRoIAlignMaxBackward(
        stream, grads.data(), features.data(), boxes.data(), box_indices.data(),
        boxes.dimension(0), grad_features.dimension(0), grad_features.dimension(1),
        grad_features.dimension(2), grad_features.dimension(3), params, grad_features.data());
    if (err != 0) {
      return tensorflow::errors::Internal("RoIAlign max grad CUDA launch failed: ", err);
    }
    return Status();
  }
};
#endif  // GOOGLE_CUDA

}  // namespace functor

template <typename Device, typename T>
class RoIAlignMaxGradOp : public OpKernel {
 public:
  explicit RoIAlignMaxGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadParams(ctx, &params_));
    params_.aggregation = kAggregateMax;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor& features = ctx->input(1);
    const Tensor& boxes = ctx->input(2);
    const Tensor& box_indices = ctx->input(3);
    OP_REQUIRES(ctx, features.dims() == 4,
                tensorflow::errors::InvalidArgument("features must be [N, H, W, C], got ",
                                                    features.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckBoxInputs(boxes, box_indices, features.dim_size(0),
                                       std::is_same<Device, CPUDevice>::value));
    const int64_t k = boxes.dim_size(0);
    OP_REQUIRES(ctx,
                grads.dims() == 4 && grads.dim_size(0) == k &&
                    grads.dim_size(1) == params_.pooled_h &&
                    grads.dim_size(2) == params_.pooled_w &&
                    grads.dim_size(3) == features.dim_size(3),
                tensorflow::errors::InvalidArgument("grads must be [K, pooled_h, pooled_w, C], got ",
                                                    grads.shape().DebugString()));
    Tensor* grad_features = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, features.shape(), &grad_features));
    if (grad_features->NumElements() == 0) return;
    OP_REQUIRES_OK(ctx, functor::RoIAlignMaxBackward<Device, T>()(
                            ctx, grads.tensor<T, 4>(), features.tensor<T, 4>(),
                            boxes.tensor<float, 2>(), box_indices.vec<int32_t>(), params_,
                            grad_features->tensor<T, 4>()));
  }

 private:
  RoIAlignParams params_{};
};

#define REGISTER_CPU_MAX_GRAD(T)                                                    \
  REGISTER_KERNEL_BUILDER(                                                          \
      Name("MrcnnRoiAlignMaxGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),       \
      RoIAlignMaxGradOp<CPUDevice, T>);
REGISTER_CPU_MAX_GRAD(float);
REGISTER_CPU_MAX_GRAD(double);
#undef REGISTER_CPU_MAX_GRAD

#if GOOGLE_CUDA
REGISTER_KERNEL_BUILDER(
    Name("MrcnnRoiAlignMaxGrad").Device(tensorflow::DEVICE_GPU).TypeConstraint<float>("T"),
    RoIAlignMaxGradOp<GPUDevice, float>);
#endif  // GOOGLE_CUDA

}  // namespace mrcnn
