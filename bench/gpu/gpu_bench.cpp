// gpu_bench: the GPU kernels at GPT-2 124M's shapes, timed with CUDA events, each against
// the machine's own measured limits: device-to-device copy bandwidth for the memory-bound
// kernels, the bf16 GEMM peak (the largest of a few big cuBLASLt GEMMs) for the GEMMs and
// attention. Links only the kernels, so it runs where there is nothing but the CUDA
// toolkit (scripts/gpu-check.sh carries it there).
//
//   gpu_bench [--json FILE] [--batch B] [--seq T] [--reps R]
//
// Each kernel runs once to warm up, then R times; the median time is reported.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "base/error.h"
#include "kernels/cpu/cast_bf16.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#ifdef TESSERA_HAVE_CUDNN
#include "kernels/cuda/cudnn_attention.h"
#endif

namespace {

using namespace tessera::kernels;
using cuda::DeviceArray;

struct Options {
  int B = 8, T = 1024, reps = 20;
  std::string json;
};

struct Row {
  std::string name;
  double ms = 0;
  double flops = 0;  // useful floating-point operations per call (0: memory-bound)
  double bytes = 0;  // bytes a perfect kernel moves per call (0: compute-bound)
};

// Calls timed back to back between one pair of events, so that the host's share of a
// call (cuBLASLt's descriptors, the launch) overlaps the GPU's work as in training.
constexpr int kCallsPerSample = 10;

// Median milliseconds per call of fn: reps samples of kCallsPerSample calls, after one
// warm-up call.
double time_ms(const std::function<void()>& fn, int reps) {
  fn();
  cuda::check_cuda(cudaDeviceSynchronize(), "warm-up");
  cudaEvent_t start, stop;
  cuda::check_cuda(cudaEventCreate(&start), "cudaEventCreate");
  cuda::check_cuda(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<float> ms((size_t)reps);
  for (int r = 0; r < reps; r++) {
    cudaEventRecord(start);
    for (int c = 0; c < kCallsPerSample; c++) fn();
    cudaEventRecord(stop);
    cuda::check_cuda(cudaEventSynchronize(stop), "timing");
    cudaEventElapsedTime(&ms[(size_t)r], start, stop);
    ms[(size_t)r] /= kCallsPerSample;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(ms.begin(), ms.begin() + reps / 2, ms.end());
  return ms[(size_t)reps / 2];
}

// A pseudo-random number in [0, 1) for index i (a multiplicative hash): inputs whose bits
// vary as real data's do; a short repeating pattern, or zeros, lets the GPU run GEMMs
// faster than on data (788 against 894 TFLOP/s measured on an H200 for random vs zeros).
float pseudo_random(int64_t i) {
  uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return (float)(h >> 40) / (float)(1u << 24);
}

template <typename T>
DeviceArray<T> filled(int64_t n, float value = 0.01f) {
  std::vector<T> host((size_t)n);
  for (int64_t i = 0; i < n; i++) host[(size_t)i] = (T)(value * pseudo_random(i));
  return DeviceArray<T>::from_host(host, "a benchmark input");
}

DeviceArray<uint16_t> bf16_filled(int64_t n) {
  std::vector<uint16_t> host((size_t)n);
  for (int64_t i = 0; i < n; i++) host[(size_t)i] = fp32_to_bf16(0.01f * pseudo_random(i)).bits;
  return DeviceArray<uint16_t>::from_host(host, "a benchmark input");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw tessera::Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--json") o.json = value();
    else if (a == "--batch") o.B = std::stoi(value());
    else if (a == "--seq") o.T = std::stoi(value());
    else if (a == "--reps") o.reps = std::stoi(value());
    else throw tessera::Error("unknown option " + a + " (--json FILE, --batch B, --seq T, --reps R)");
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  cudaDeviceProp prop;
  if (const cudaError_t err = cudaGetDeviceProperties(&prop, 0); err != cudaSuccess) {
    std::printf("gpu_bench: SKIP: no usable GPU (%s)\n", cudaGetErrorString(err));
    return 77;  // as the other GPU binaries: scripts/gpu-check.sh counts it as skipped
  }
  const int B = o.B, T = o.T, C = 768, NH = 12, V = 50257, Vp = 50304;
  const int64_t N = (int64_t)B * T;
  std::vector<Row> rows;

  // The machine's limits, measured: copy bandwidth (read + write) and the bf16 GEMM peak.
  double copy_gbs = 0, peak_tflops = 0;
  {
    const int64_t n = 1LL << 28;  // 1 GiB of floats each way
    DeviceArray<float> a(n, "copy source"), b(n, "copy destination");
    const double ms = time_ms([&] {
      cudaMemcpyAsync(b.data(), a.data(), a.bytes(), cudaMemcpyDeviceToDevice);
    }, o.reps);
    copy_gbs = 2.0 * (double)a.bytes() / (ms * 1e-3) / 1e9;
    rows.push_back({"copy 1 GiB (device to device)", ms, 0, 2.0 * (double)a.bytes()});
  }
  for (int n : {4096, 8192}) {
    auto x = bf16_filled((int64_t)n * n), w = bf16_filled((int64_t)n * n);
    DeviceArray<float> out((int64_t)n * n, "GEMM output");
    const double ms = time_ms([&] {
      cuda::matmul_forward_16bit(Dtype::bf16, out.data(), nullptr, x.data(), w.data(), nullptr,
                                 n, n, n, nullptr);
    }, o.reps);
    const double flops = 2.0 * n * (double)n * n;
    peak_tflops = std::max(peak_tflops, flops / (ms * 1e-3) / 1e12);
    rows.push_back({"bf16 GEMM " + std::to_string(n) + "^3 (fp32 out)", ms, flops, 0});
  }

  // GPT-2 124M's layers at (B, T).
  auto x = filled<float>(N * C), dx = filled<float>(N * C), y = filled<float>(N * C);
  auto w = filled<float>(C, 1.0f), bias = filled<float>(C), dw = filled<float>(C),
       db = filled<float>(C);
  DeviceArray<float> mean(N), rstd(N), ln_scratch(cuda::layernorm_backward_scratch((int)N, C));
  rows.push_back({"layernorm forward", time_ms([&] {
    cuda::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), bias.data(),
                            (int)N, C, nullptr);
  }, o.reps), 0, 2.0 * N * C * 4});
  rows.push_back({"layernorm backward", time_ms([&] {
    cuda::layernorm_backward(dx.data(), dw.data(), db.data(), ln_scratch.data(), y.data(),
                             x.data(), w.data(), mean.data(), rstd.data(), (int)N, C, nullptr);
  }, o.reps), 0, 4.0 * N * C * 4});  // read dout, inp, dinp; write dinp

  for (auto [name, in, out] : {std::tuple{"qkv", C, 3 * C}, std::tuple{"attn proj", C, C},
                               std::tuple{"fc", C, 4 * C}, std::tuple{"fc proj", 4 * C, C}}) {
    auto x16 = bf16_filled(N * in), w16 = bf16_filled((int64_t)out * in);
    auto b32 = filled<float>(out);
    DeviceArray<float> o32(N * out, "matmul output");
    rows.push_back({std::string("matmul forward bf16 ") + name, time_ms([&] {
      cuda::matmul_forward_16bit(Dtype::bf16, o32.data(), nullptr, x16.data(), w16.data(),
                                 b32.data(), (int)N, in, out, nullptr);
    }, o.reps), 2.0 * N * in * out, 0});
  }

  {
    auto qkv = filled<float>(N * 3 * C), dqkv = filled<float>(N * 3 * C);
    DeviceArray<float> out(N * C), dout(N * C);
    const double attn_flops = 4.0 * B * NH * (double)T * T * (C / NH) / 2;  // causal half
    if (cuda::flash_attention_supported(C, NH)) {
      DeviceArray<float> lse((int64_t)B * NH * T),
          scratch(cuda::flash_attention_scratch(B, T, C, NH));
      rows.push_back({"flash attention forward", time_ms([&] {
        cuda::flash_attention_forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, nullptr);
      }, o.reps), attn_flops, 0});
      rows.push_back({"flash attention backward", time_ms([&] {
        cuda::flash_attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(),
                                       out.data(), lse.data(), B, T, C, NH, nullptr);
      }, o.reps), 2.5 * attn_flops, 0});
    }
#ifdef TESSERA_HAVE_CUDNN
    // cuDNN's fused attention, the same contract (bf16 copies in and out included).
    cuda::CudnnAttention cudnn;
    const std::string why = cudnn.prepare(B, T, C, NH);
    if (why.empty()) {
      DeviceArray<float> lse((int64_t)B * NH * T);
      rows.push_back({"cuDNN attention forward", time_ms([&] {
        cudnn.forward(out.data(), lse.data(), qkv.data(), B, T, C, NH, nullptr);
      }, o.reps), attn_flops, 0});
      rows.push_back({"cuDNN attention backward", time_ms([&] {
        cudnn.backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C, NH,
                       nullptr);
      }, o.reps), 2.5 * attn_flops, 0});
    } else {
      std::printf("cuDNN attention: not measured: %s\n", why.c_str());
    }
#endif
    DeviceArray<float> att((int64_t)B * NH * T * T, "attention probabilities"),
        scratch(cuda::attention_scratch(B, T, C, NH), "attention scratch");
    rows.push_back({"attention forward (GEMMs + softmax)", time_ms([&] {
      cuda::attention_forward(out.data(), att.data(), scratch.data(), qkv.data(), B, T, C, NH,
                              nullptr);
    }, o.reps), attn_flops, 0});
    rows.push_back({"attention backward (GEMMs + softmax)", time_ms([&] {
      cuda::attention_backward(dqkv.data(), scratch.data(), dout.data(), qkv.data(), att.data(),
                               B, T, C, NH, nullptr);
    }, o.reps), 2.5 * attn_flops, 0});
  }

  {
    auto logits = filled<float>(N * Vp, 1.0f);
    DeviceArray<float> losses(N), dlogits(N * Vp, "dlogits");
    std::vector<int32_t> targets_host((size_t)N);
    for (int64_t i = 0; i < N; i++) targets_host[(size_t)i] = (int32_t)((i * 31) % V);
    auto targets = DeviceArray<int32_t>::from_host(targets_host);
    rows.push_back({"classifier (softmax + cross-entropy fwd/bwd)", time_ms([&] {
      cuda::crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                          targets.data(), 1.0f / (float)N, (int)N, V, Vp, nullptr);
    }, o.reps), 0, 2.0 * N * Vp * 4});
  }

  {
    const int64_t n = 124'475'904;  // GPT-2 124M's parameters (padded vocabulary)
    DeviceArray<float> p(n, "params"), g(n, "grads"), m(n, "m"), v(n, "v");
    DeviceArray<uint16_t> copy(n, "bf16 copy");
    rows.push_back({"AdamW, 124M params + bf16 copy", time_ms([&] {
      cuda::adamw_update(p.data(), g.data(), m.data(), v.data(), n, 1e-4f, 0.9f, 0.95f, 1e-8f,
                         0.1f, 10, 1.0f, copy.data(), Dtype::bf16, 0, 0, nullptr);
    }, o.reps), 0, (double)n * (4 * 4 + 3 * 4 + 2)});  // read p g m v, write p m v, copy
  }

  std::printf("%s, %d SMs, B=%d T=%d; copy %.0f GB/s, bf16 GEMM peak %.0f TFLOP/s (measured)\n",
              prop.name, prop.multiProcessorCount, B, T, copy_gbs, peak_tflops);
  std::printf("%-48s %10s %12s %8s\n", "kernel", "ms", "rate", "of limit");
  for (const Row& r : rows) {
    const double s = r.ms * 1e-3;
    if (r.flops > 0)
      std::printf("%-48s %10.3f %7.1f TF/s %7.1f%%\n", r.name.c_str(), r.ms, r.flops / s / 1e12,
                  100 * r.flops / s / 1e12 / peak_tflops);
    else
      std::printf("%-48s %10.3f %7.0f GB/s %7.1f%%\n", r.name.c_str(), r.ms, r.bytes / s / 1e9,
                  100 * r.bytes / s / 1e9 / copy_gbs);
  }
  if (!o.json.empty()) {
    FILE* f = std::fopen(o.json.c_str(), "w");
    if (!f) throw tessera::Error("cannot write " + o.json);
    std::fprintf(f, "{\"device\": \"%s\", \"batch\": %d, \"seq\": %d, \"copy_gbs\": %.1f, "
                    "\"bf16_peak_tflops\": %.1f, \"kernels\": [", prop.name, B, T, copy_gbs,
                 peak_tflops);
    for (size_t i = 0; i < rows.size(); i++)
      std::fprintf(f, "%s{\"name\": \"%s\", \"ms\": %.4f, \"flops\": %.4g, \"bytes\": %.4g}",
                   i ? ", " : "", rows[i].name.c_str(), rows[i].ms, rows[i].flops, rows[i].bytes);
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gpu_bench: error: %s\n", e.what());
  return 2;
}
