// Backward of RoIAlign with max aggregation (op MrcnnRoiAlignMaxGrad): the
// TensorFlow glue of the CPU kernel and the kernel registrations (CPU, and GPU
// when compiled with GOOGLE_CUDA; the CUDA kernel is in
// roi_align_kernels.cu.cc).
//
// The CPU kernel itself (RoIAlignMaxBackwardCpu in roi_align_cpu.h: winners
// recomputed from the features, then a deterministic scatter sharded over
// (image, block of channels) units) works on raw arrays, so that the
// standalone harness (harness/) runs the same code.
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
    const TfShard shard = ShardOn(ctx);
    RoIAlignMaxBackwardCpu<T>(grads.data(), features.data(), features.dimension(0),
                              static_cast<int>(features.dimension(1)),
                              static_cast<int>(features.dimension(2)), features.dimension(3),
                              boxes.data(), box_indices.data(), boxes.dimension(0), params,
                              shard.num_threads, shard, grad_features.data());
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
