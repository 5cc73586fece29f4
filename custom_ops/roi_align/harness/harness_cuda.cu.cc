// CUDA build of the RoIAlign harness: runs the CUDA kernels of the TensorFlow
// op through their TensorFlow-free launchers (mrcnn::gpu::LaunchRoIAlign*,
// ../roi_align_kernels.cu.cc, compiled with it from the same source) on a case
// directory (format: harness.h); float32. Times with CUDA events. Build:
//   nvcc -std=c++17 -O3 -DGOOGLE_CUDA=1 -x cu --expt-relaxed-constexpr -arch=sm_90 \
//     -I.. ../roi_align_kernels.cu.cc harness_cuda.cu.cc -o roi_align_harness_cuda
#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../roi_align.h"
#include "harness.h"

namespace {

using mrcnn::harness::Case;
using mrcnn::harness::Fail;
using mrcnn::harness::Options;
using mrcnn::harness::Timings;

void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) Fail(std::string(what) + ": " + cudaGetErrorString(err));
}

void CheckLaunch(int err, const char* what) { Check(static_cast<cudaError_t>(err), what); }

template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : size_(host.size()) {
    Check(cudaMalloc(&data_, sizeof(T) * (size_ ? size_ : 1)), "cudaMalloc");
    if (size_) {
      Check(cudaMemcpy(data_, host.data(), sizeof(T) * size_, cudaMemcpyHostToDevice),
            "cudaMemcpy to device");
    }
  }
  explicit DeviceArray(size_t size) : size_(size) {
    Check(cudaMalloc(&data_, sizeof(T) * (size_ ? size_ : 1)), "cudaMalloc");
  }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() const { return data_; }
  void CopyTo(std::vector<T>* host) const {
    if (size_) {
      Check(cudaMemcpy(host->data(), data_, sizeof(T) * size_, cudaMemcpyDeviceToHost),
            "cudaMemcpy to host");
    }
  }

 private:
  T* data_ = nullptr;
  size_t size_;
};

int SelectDevice() {
  int count = 0;
  Check(cudaGetDeviceCount(&count), "cudaGetDeviceCount (is there a GPU and a driver?)");
  if (count == 0) Fail("no CUDA device");
  Check(cudaSetDevice(0), "cudaSetDevice");
  return 0;
}

class CudaBackend {
 public:
  CudaBackend(const Case& c, const Options&)
      : c_(c),
        device_(SelectDevice()),
        features_(c.features),
        boxes_(c.boxes),
        box_indices_(c.box_indices),
        grads_(c.grads),
        output_(static_cast<size_t>(c.OutputSize())),
        grad_features_(static_cast<size_t>(c.FeatureSize())) {
    Check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }
  ~CudaBackend() { cudaStreamDestroy(stream_); }

  std::string Name() const { return "cuda"; }
  std::string Device() const {
    cudaDeviceProp prop{};
    Check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    return std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + ")";
  }

  void Forward(std::vector<float>* output) {
    LaunchForward();
    Check(cudaStreamSynchronize(stream_), "forward kernel");
    output_.CopyTo(output);
  }

  void Backward(std::vector<float>* grad) {
    LaunchBackward();
    Check(cudaStreamSynchronize(stream_), "backward kernel");
    grad_features_.CopyTo(grad);
  }

  // Per repeat: events around the forward, the backward, and both.
  Timings Time(int warmup, int repeats) {
    for (int i = 0; i < warmup; ++i) {
      LaunchForward();
      LaunchBackward();
    }
    Check(cudaStreamSynchronize(stream_), "warm-up");
    cudaEvent_t start, middle, stop;
    Check(cudaEventCreate(&start), "cudaEventCreate");
    Check(cudaEventCreate(&middle), "cudaEventCreate");
    Check(cudaEventCreate(&stop), "cudaEventCreate");
    Timings t;
    for (int i = 0; i < repeats; ++i) {
      Check(cudaEventRecord(start, stream_), "cudaEventRecord");
      LaunchForward();
      Check(cudaEventRecord(middle, stream_), "cudaEventRecord");
      LaunchBackward();
      Check(cudaEventRecord(stop, stream_), "cudaEventRecord");
      Check(cudaEventSynchronize(stop), "timed kernels");
      float fwd = 0.f, bwd = 0.f, both = 0.f;
      Check(cudaEventElapsedTime(&fwd, start, middle), "cudaEventElapsedTime");
      Check(cudaEventElapsedTime(&bwd, middle, stop), "cudaEventElapsedTime");
      Check(cudaEventElapsedTime(&both, start, stop), "cudaEventElapsedTime");
      t.forward_ms.push_back(fwd);
      t.backward_ms.push_back(bwd);
      t.forward_backward_ms.push_back(both);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(middle);
    cudaEventDestroy(stop);
    return t;
  }

 private:
  void LaunchForward() {
    CheckLaunch(mrcnn::gpu::LaunchRoIAlignForward(stream_, /*dtype_kind=*/0, features_.get(),
                                                  c_.n, c_.h, c_.w, c_.c, boxes_.get(),
                                                  box_indices_.get(), c_.k, c_.params,
                                                  output_.get()),
                "forward launch");
  }

  // Includes the zero-fill of the gradient (cudaMemsetAsync in the launcher).
  void LaunchBackward() {
    if (c_.params.aggregation == mrcnn::kAggregateMax) {
      CheckLaunch(mrcnn::gpu::LaunchRoIAlignMaxBackward(
                      stream_, grads_.get(), features_.get(), boxes_.get(), box_indices_.get(),
                      c_.k, c_.n, c_.h, c_.w, c_.c, c_.params, grad_features_.get()),
                  "max backward launch");
    } else {
      CheckLaunch(mrcnn::gpu::LaunchRoIAlignBackward(stream_, grads_.get(), boxes_.get(),
                                                     box_indices_.get(), c_.k, c_.n, c_.h,
                                                     c_.w, c_.c, c_.params,
                                                     grad_features_.get()),
                  "backward launch");
    }
  }

  const Case& c_;
  int device_;
  cudaStream_t stream_ = nullptr;
  DeviceArray<float> features_, boxes_;
  DeviceArray<int32_t> box_indices_;
  DeviceArray<float> grads_, output_, grad_features_;
};

}  // namespace

int main(int argc, char** argv) { return mrcnn::harness::Main<CudaBackend>(argc, argv); }
