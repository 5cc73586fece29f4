// CPU build of the RoIAlign harness: runs the CPU kernels of the TensorFlow op
// (RoIAlignForwardCpu, RoIAlignBackwardCpu, RoIAlignMaxBackwardCpu in
// ../roi_align_cpu.h) on a case directory (format: harness.h), with a small
// std::thread pool in place of TensorFlow's. Build (no TensorFlow needed):
//   g++ -std=c++17 -O3 -mavx -pthread harness_cpu.cc -o roi_align_harness_cpu
#include <algorithm>
#include <chrono>
#include <thread>

#include "../roi_align_cpu.h"
#include "harness.h"

namespace {

using mrcnn::harness::Case;
using mrcnn::harness::Options;
using mrcnn::harness::Timings;

// The kernels' `shard`: [0, units) in up to num_threads contiguous ranges, one
// thread each (the calling thread runs the first).
struct ThreadShard {
  int num_threads;
  template <typename Work>
  void operator()(int64_t units, int64_t /*cost_per_unit*/, Work&& work) const {
    const int64_t parts = std::min<int64_t>(std::max(num_threads, 1), units);
    if (parts <= 1) {
      if (units > 0) work(int64_t{0}, units);
      return;
    }
    std::vector<std::thread> threads;
    for (int64_t i = 1; i < parts; ++i) {
      threads.emplace_back([&work, i, parts, units] {
        work(i * units / parts, (i + 1) * units / parts);
      });
    }
    work(int64_t{0}, units / parts);
    for (std::thread& t : threads) t.join();
  }
};

class CpuBackend {
 public:
  CpuBackend(const Case& c, const Options& o) : c_(c), shard_{o.threads} {}
  std::string Name() const { return "cpu"; }
  std::string Device() const {
    return "CPU, " + std::to_string(shard_.num_threads) + " thread(s)";
  }

  void Forward(std::vector<float>* output) const {
    mrcnn::RoIAlignForwardCpu<float>(c_.features.data(), c_.h, c_.w, c_.c, c_.boxes.data(),
                                     c_.box_indices.data(), c_.k, c_.params, shard_,
                                     output->data());
  }

  void Backward(std::vector<float>* grad) const {
    if (c_.params.aggregation == mrcnn::kAggregateMax) {
      mrcnn::RoIAlignMaxBackwardCpu<float>(c_.grads.data(), c_.features.data(), c_.n, c_.h,
                                           c_.w, c_.c, c_.boxes.data(), c_.box_indices.data(),
                                           c_.k, c_.params, shard_.num_threads, shard_,
                                           grad->data());
    } else {
      mrcnn::RoIAlignBackwardCpu<float>(c_.grads.data(), c_.n, c_.h, c_.w, c_.c,
                                        c_.boxes.data(), c_.box_indices.data(), c_.k, c_.params,
                                        shard_.num_threads, shard_, grad->data());
    }
  }

  Timings Time(int warmup, int repeats) const {
    std::vector<float> output(static_cast<size_t>(c_.OutputSize()));
    std::vector<float> grad(static_cast<size_t>(c_.FeatureSize()));
    for (int i = 0; i < warmup; ++i) {
      Forward(&output);
      Backward(&grad);
    }
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    Timings t;
    for (int i = 0; i < repeats; ++i) {
      const auto t0 = Clock::now();
      Forward(&output);
      const auto t1 = Clock::now();
      Backward(&grad);
      const auto t2 = Clock::now();
      t.forward_ms.push_back(ms(t0, t1));
      t.backward_ms.push_back(ms(t1, t2));
      t.forward_backward_ms.push_back(ms(t0, t2));
    }
    return t;
  }

 private:
  const Case& c_;
  ThreadShard shard_;
};

}  // namespace

int main(int argc, char** argv) { return mrcnn::harness::Main<CpuBackend>(argc, argv); }
