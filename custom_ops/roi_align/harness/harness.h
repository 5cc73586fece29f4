// Standalone RoIAlign harness: the case file format and the driver shared by
// the CPU build (harness_cpu.cc, g++, the kernels of ../roi_align_cpu.h) and
// the CUDA build (harness_cuda.cu.cc, nvcc, the kernels of
// ../roi_align_kernels.cu.cc). No TensorFlow anywhere.
//
// A case is a directory:
//   case.txt         one "key value..." per line ('#' starts a comment):
//                      format 1
//                      features N H W C      features.f32: float32 [N, H, W, C] (NHWC)
//                      boxes K               boxes.f32: float32 [K, 4] (y1, x1, y2, x2),
//                                            input-image pixels (continuous coordinates)
//                                            box_indices.i32: int32 [K], in [0, N)
//                                            grads.f32: float32 [K, PH, PW, C], the
//                                            incoming gradient of the backward pass
//                      pooled PH PW
//                      spatial_scale S       (written with 9 significant digits: exact float32)
//                      sampling_ratio R      (> 0 fixed; 0 adaptive)
//                      aligned 0|1
//                      aggregation avg|max
//   All arrays are raw little-endian, row-major, with no header.
//
// Usage: <harness> CASE_DIR OUT_DIR [--warmup W] [--repeats R] [--threads T]
// Runs the forward and the backward kernel once and writes, atomically
// (temporary file, then rename), OUT_DIR/output.f32 [K, PH, PW, C],
// OUT_DIR/grad_features.f32 [N, H, W, C] and OUT_DIR/result.json (backend,
// device, shapes; with --repeats R > 0 also the milliseconds of R timed calls
// of the forward, the backward and forward + backward after W untimed ones).
// --threads: CPU threads (the CPU build; results do not depend on it).
// Exit status 0; 2 with a message on stderr for bad input or a failed kernel.
#ifndef MRCNN_CUSTOM_OPS_ROI_ALIGN_HARNESS_H_
#define MRCNN_CUSTOM_OPS_ROI_ALIGN_HARNESS_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <locale>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../roi_align.h"

namespace mrcnn {
namespace harness {

constexpr int kFormat = 1;

struct Case {
  int n = 0, h = 0, w = 0, c = 0, k = 0;
  RoIAlignParams params{};
  std::vector<float> features, boxes, grads;
  std::vector<int32_t> box_indices;
  int64_t FeatureSize() const { return static_cast<int64_t>(n) * h * w * c; }
  int64_t OutputSize() const {
    return static_cast<int64_t>(k) * params.pooled_h * params.pooled_w * c;
  }
};

struct Timings {
  std::vector<double> forward_ms, backward_ms, forward_backward_ms;
};

struct Options {
  std::string case_dir, out_dir;
  int warmup = 0, repeats = 0, threads = 1;
};

[[noreturn]] inline void Fail(const std::string& message) { throw std::runtime_error(message); }

template <typename T>
std::vector<T> ReadArray(const std::string& path, int64_t count, const std::string& what) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Fail(path + ": cannot open (" + what + ")");
  const int64_t bytes = static_cast<int64_t>(in.tellg());
  const int64_t expected = count * static_cast<int64_t>(sizeof(T));
  if (bytes != expected) {
    Fail(path + ": " + std::to_string(bytes) + " bytes, expected " + std::to_string(expected) +
         " (" + what + ")");
  }
  std::vector<T> data(static_cast<size_t>(count));
  in.seekg(0);
  if (count > 0 && !in.read(reinterpret_cast<char*>(data.data()), expected)) {
    Fail(path + ": read failed (" + what + ")");
  }
  return data;
}

// Writes `bytes` to path.tmp, then renames it over path.
inline void WriteAtomically(const std::string& path, const void* data, size_t bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) Fail(tmp + ": cannot open for writing");
    if (bytes > 0) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    out.flush();
    if (!out) Fail(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) Fail(path + ": rename failed");
}

inline void WriteFloats(const std::string& path, const std::vector<float>& values) {
  WriteAtomically(path, values.data(), values.size() * sizeof(float));
}

inline Case ReadCase(const std::string& dir) {
  const uint16_t probe = 1;
  if (*reinterpret_cast<const uint8_t*>(&probe) != 1) {
    Fail("the harness needs a little-endian host");
  }
  const std::string header = dir + "/case.txt";
  std::ifstream in(header);
  if (!in) Fail(header + ": cannot open");
  std::map<std::string, std::vector<std::string>> fields;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string key, word;
    if (!(words >> key)) continue;
    std::vector<std::string> values;
    while (words >> word) values.push_back(word);
    if (fields.count(key)) Fail(header + ":" + std::to_string(line_no) + ": '" + key + "' twice");
    fields[key] = values;
  }
  auto get = [&](const std::string& key, size_t count) -> const std::vector<std::string>& {
    auto it = fields.find(key);
    if (it == fields.end()) Fail(header + ": missing '" + key + "'");
    if (it->second.size() != count) {
      Fail(header + ": '" + key + "' needs " + std::to_string(count) + " value(s), got " +
           std::to_string(it->second.size()));
    }
    return it->second;
  };
  auto to_int = [&](const std::string& key, const std::string& text, int lowest) {
    char* end = nullptr;
    const long v = std::strtol(text.c_str(), &end, 10);
    if (end == text.c_str() || *end != '\0' || v < lowest || v > (1L << 30)) {
      Fail(header + ": '" + key + "' expects an integer >= " + std::to_string(lowest) +
           ", got '" + text + "'");
    }
    return static_cast<int>(v);
  };
  if (to_int("format", get("format", 1)[0], 0) != kFormat) {
    Fail(header + ": format " + get("format", 1)[0] + ", this harness reads format " +
         std::to_string(kFormat));
  }
  Case c;
  const auto& f = get("features", 4);
  c.n = to_int("features", f[0], 1);
  c.h = to_int("features", f[1], 1);
  c.w = to_int("features", f[2], 1);
  c.c = to_int("features", f[3], 1);
  c.k = to_int("boxes", get("boxes", 1)[0], 0);
  const auto& pooled = get("pooled", 2);
  c.params.pooled_h = to_int("pooled", pooled[0], 1);
  c.params.pooled_w = to_int("pooled", pooled[1], 1);
  const std::string scale = get("spatial_scale", 1)[0];
  char* end = nullptr;
  c.params.spatial_scale = std::strtof(scale.c_str(), &end);
  if (end == scale.c_str() || *end != '\0' || !(c.params.spatial_scale > 0.f)) {
    Fail(header + ": 'spatial_scale' expects a positive number, got '" + scale + "'");
  }
  c.params.sampling_ratio = to_int("sampling_ratio", get("sampling_ratio", 1)[0], 0);
  const std::string aligned = get("aligned", 1)[0];
  if (aligned != "0" && aligned != "1") {
    Fail(header + ": 'aligned' expects 0 or 1, got '" + aligned + "'");
  }
  c.params.aligned = aligned == "1";
  const std::string aggregation = get("aggregation", 1)[0];
  if (aggregation == "avg") {
    c.params.aggregation = kAggregateAvg;
  } else if (aggregation == "max") {
    c.params.aggregation = kAggregateMax;
  } else {
    Fail(header + ": 'aggregation' expects avg or max, got '" + aggregation + "'");
  }
  c.features = ReadArray<float>(dir + "/features.f32", c.FeatureSize(), "features [N, H, W, C]");
  c.boxes = ReadArray<float>(dir + "/boxes.f32", 4LL * c.k, "boxes [K, 4]");
  c.box_indices = ReadArray<int32_t>(dir + "/box_indices.i32", c.k, "box_indices [K]");
  c.grads = ReadArray<float>(dir + "/grads.f32", c.OutputSize(), "grads [K, PH, PW, C]");
  for (int i = 0; i < c.k; ++i) {
    if (c.box_indices[i] < 0 || c.box_indices[i] >= c.n) {
      Fail(dir + "/box_indices.i32: box_indices[" + std::to_string(i) + "] = " +
           std::to_string(c.box_indices[i]) + " is outside the batch [0, " +
           std::to_string(c.n) + ")");
    }
  }
  return c;
}

inline Options ParseArgs(int argc, char** argv) {
  Options o;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--warmup" || arg == "--repeats" || arg == "--threads") {
      if (i + 1 >= argc) Fail(arg + " needs a value");
      const std::string text = argv[++i];
      char* end = nullptr;
      const long v = std::strtol(text.c_str(), &end, 10);
      if (end == text.c_str() || *end != '\0' || v < 0 || v > 100000) {
        Fail(arg + " expects an integer in [0, 100000], got '" + text + "'");
      }
      (arg == "--warmup" ? o.warmup : arg == "--repeats" ? o.repeats : o.threads) =
          static_cast<int>(v);
    } else if (arg.rfind("--", 0) == 0) {
      Fail("unknown option " + arg);
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    Fail("usage: " + std::string(argv[0]) +
         " CASE_DIR OUT_DIR [--warmup W] [--repeats R] [--threads T]");
  }
  o.case_dir = positional[0];
  o.out_dir = positional[1];
  if (o.threads < 1) o.threads = 1;
  return o;
}

inline std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out + "\"";
}

inline std::string JsonList(const std::vector<double>& values) {
  std::ostringstream s;
  s.imbue(std::locale::classic());
  s.precision(9);
  s << "[";
  for (size_t i = 0; i < values.size(); ++i) s << (i ? ", " : "") << values[i];
  s << "]";
  return s.str();
}

inline std::string ResultJson(const std::string& backend, const std::string& device,
                              const Case& c, const Options& o, const Timings& t) {
  std::ostringstream s;
  s << "{\n  \"format\": " << kFormat << ",\n  \"backend\": " << JsonString(backend)
    << ",\n  \"device\": " << JsonString(device) << ",\n  \"output_shape\": [" << c.k << ", "
    << c.params.pooled_h << ", " << c.params.pooled_w << ", " << c.c
    << "],\n  \"grad_features_shape\": [" << c.n << ", " << c.h << ", " << c.w << ", " << c.c
    << "],\n  \"threads\": " << o.threads << ",\n  \"warmup\": " << o.warmup
    << ",\n  \"repeats\": " << o.repeats << ",\n  \"forward_ms\": " << JsonList(t.forward_ms)
    << ",\n  \"backward_ms\": " << JsonList(t.backward_ms)
    << ",\n  \"forward_backward_ms\": " << JsonList(t.forward_backward_ms) << "\n}\n";
  return s.str();
}

// Backend: Backend(const Case&, const Options&); Name(); Device();
// Forward(std::vector<float>* output); Backward(std::vector<float>* grad);
// Time(warmup, repeats) -> Timings. Errors are thrown as std::runtime_error.
template <typename Backend>
int Main(int argc, char** argv) {
  try {
    const Options options = ParseArgs(argc, argv);
    const Case c = ReadCase(options.case_dir);
    Backend backend(c, options);
    std::vector<float> output(static_cast<size_t>(c.OutputSize()));
    std::vector<float> grad(static_cast<size_t>(c.FeatureSize()));
    backend.Forward(&output);
    backend.Backward(&grad);
    Timings timings;
    if (options.repeats > 0) timings = backend.Time(options.warmup, options.repeats);
    WriteFloats(options.out_dir + "/output.f32", output);
    WriteFloats(options.out_dir + "/grad_features.f32", grad);
    const std::string json = ResultJson(backend.Name(), backend.Device(), c, options, timings);
    WriteAtomically(options.out_dir + "/result.json", json.data(), json.size());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "roi_align_harness: error: " << e.what() << std::endl;
    return 2;
  }
}

}  // namespace harness
}  // namespace mrcnn

#endif  // MRCNN_CUSTOM_OPS_ROI_ALIGN_HARNESS_H_
