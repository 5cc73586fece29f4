// RoIAlign kernels: the TensorFlow glue of the CPU kernels and the kernel
// registrations (CPU, and GPU when compiled with GOOGLE_CUDA; the CUDA code is
// in roi_align_kernels.cu.cc).
//
// The CPU kernels themselves (forward, average backward; sharding, taps,
// separable scatter) are in roi_align_cpu.h, on raw arrays, so that the
// standalone harness (harness/) runs the same code; here they get the
// tensors' pointers and the device's thread pool. The max aggregation's
// backward op is in roi_align_max_grad.cc.
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
    RoIAlignForwardCpu<T>(features.data(), static_cast<int>(features.dimension(1)),
                          static_cast<int>(features.dimension(2)), features.dimension(3),
                          boxes.data(), box_indices.data(), boxes.dimension(0), params,
                          ShardOn(ctx), output.data());
    return Status();
  }
};

template <typename T>
struct RoIAlignBackward<CPUDevice, T> {
  Status operator()(OpKernelContext* ctx, typename TTypes<T, 4>::ConstTensor grads,
                    typename TTypes<float, 2>::ConstTensor boxes,
                    typename TTypes<int32_t, 1>::ConstTensor box_indices,
                    const RoIAlignParams& params, typename TTypes<T, 4>::Tensor grad_features) {
    const TfShard shard = ShardOn(ctx);
    RoIAlignBackwardCpu<T>(grads.data(), grad_features.dimension(0),
                           static_cast<int>(grad_features.dimension(1)),
                           static_cast<int>(grad_features.dimension(2)),
                           grad_features.dimension(3), boxes.data(), box_indices.data(),
                           boxes.dimension(0), params, shard.num_threads, shard,
                           grad_features.data());
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
