// kernels::sgemm against Eigen 3.4 and the measured FMA peak, on GPT-2's GEMM shapes;
// with --bf16 1, also kernels::bf16gemm (A and B in bf16, fp32 C) against sgemm.
//
//   OMP_NUM_THREADS=2 build/bin/bench_gemm [--ntok 256] [--reps 5] [--threads 1,2]
//                                          [--min-time 0.1] [--only lm_head] [--bf16 1]
//
// The machine is shared and often busy, so absolute GFLOP/s are noise: every repetition
// measures the FMA peak (tessera::measure_fp32_peak_flops), our GEMM and Eigen back to
// back, interleaved, and the table reports medians over repetitions, % of the peak
// measured in the same run, and the per-repetition speed ratio ours / Eigen (median).
// The "CPU-time eff." columns divide FLOP per CPU-second of the process by the FMA loop's
// FLOP per CPU-second: time the cores were taken by other processes does not count, so
// they are much steadier on a busy machine (spinning OpenMP threads do count).
//
// Shapes, for N_tok tokens and a linear layer W[OC, C] (row-major, as in matmul.cpp):
//   fwd  out[N_tok, OC]  = in[N_tok, C] @ W^T         NT, beta 0
//   dIn  dIn[N_tok, C]  += dOut[N_tok, OC] @ W        NN, beta 1
//   dW   dW[OC, C]      += dOut^T[OC, N_tok] @ in     TN, beta 1
// for GPT-2 124M's (OC, C): qkv (2304, 768), attn proj (768, 768), fc (3072, 768),
// fc proj (768, 3072), lm head (50304, 768); then attention's per-head GEMMs (Q K^T and
// P V for 4 x 12 heads of 64 channels on strided qkv) run inside an OpenMP loop.
// The "step" row weighs the linear shapes as one training step does (12 layers of the
// four block layers + one lm head) and reports their summed time as one GFLOP/s figure.
#define EIGEN_NO_DEBUG
// GCC 12 reports false maybe-uninitialized warnings inside Eigen's AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <eigen3/Eigen/Core>  // Eigen's include path is private to tessera_kernels
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <ctime>
#include <vector>

#include "framework/util/peak.h"
#include "kernels/cpu/gemm_bf16.h"
#include "kernels/cpu/gemm.h"

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;
using Strided = Eigen::Map<RowMajor, 0, Eigen::OuterStride<>>;
using ConstStrided = Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>>;

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
// CPU seconds of the whole process (all threads): stolen time does not count.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

struct Timing {
  double wall, cpu;  // seconds per call
};

// One warm-up call, then calls until min_time has passed.
Timing time_call(const std::function<void()>& f, double min_time) {
  f();
  int calls = 0;
  const double t0 = now(), c0 = cpu_now();
  double t = t0;
  do {
    f();
    calls++;
    t = now();
  } while (t - t0 < min_time);
  return {(t - t0) / calls, (cpu_now() - c0) / calls};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::vector<float> random_floats(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

struct Bench {
  std::string name;
  double flops;          // per call
  double step_weight;    // calls per training step (0: not part of the step row)
  std::function<void()> ours, eigen;
  std::function<void()> bf16 = nullptr;  // the same GEMM by bf16gemm (linear layers only)
};

std::shared_ptr<std::vector<tessera::kernels::bf16>> to_bf16(const std::vector<float>& x) {
  auto h = std::make_shared<std::vector<tessera::kernels::bf16>>(x.size());
  tessera::kernels::fp32_to_bf16_array(h->data(), x.data(), (int64_t)x.size());
  return h;
}


// One linear layer's three GEMMs on freshly allocated operands (kept alive by the lambdas).
void add_linear(std::vector<Bench>& out, const std::string& layer, int ntok, int OC, int C,
                double per_step) {
  auto in = std::make_shared<std::vector<float>>(random_floats((size_t)ntok * C, 1));
  auto w = std::make_shared<std::vector<float>>(random_floats((size_t)OC * C, 2));
  auto dout = std::make_shared<std::vector<float>>(random_floats((size_t)ntok * OC, 3));
  auto y = std::make_shared<std::vector<float>>((size_t)ntok * OC);
  auto din = std::make_shared<std::vector<float>>((size_t)ntok * C);
  auto dw = std::make_shared<std::vector<float>>((size_t)OC * C);
  const double f = 2.0 * ntok * (double)OC * C;
  const std::string dims = "(" + std::to_string(OC) + "," + std::to_string(C) + ")";
  namespace k = tessera::kernels;
  auto in16 = to_bf16(*in), w16 = to_bf16(*w), dout16 = to_bf16(*dout);
  out.push_back({layer + " fwd NT " + dims, f, per_step,
                 [=] { k::sgemm(false, true, ntok, OC, C, 1.0f, in->data(), C, w->data(), C, 0.0f,
                                y->data(), OC); },
                 [=] { Map(y->data(), ntok, OC).noalias() =
                           ConstMap(in->data(), ntok, C) * ConstMap(w->data(), OC, C).transpose(); },
                 [=] { k::bf16gemm(false, true, ntok, OC, C, 1.0f, in16->data(), C, w16->data(), C,
                                   0.0f, y->data(), OC); }});
  out.push_back({layer + " dIn NN " + dims, f, per_step,
                 [=] { k::sgemm(false, false, ntok, C, OC, 1.0f, dout->data(), OC, w->data(), C,
                                1.0f, din->data(), C); },
                 [=] { Map(din->data(), ntok, C).noalias() +=
                           ConstMap(dout->data(), ntok, OC) * ConstMap(w->data(), OC, C); },
                 [=] { k::bf16gemm(false, false, ntok, C, OC, 1.0f, dout16->data(), OC, w16->data(),
                                   C, 1.0f, din->data(), C); }});
  out.push_back({layer + " dW TN " + dims, f, per_step,
                 [=] { k::sgemm(true, false, OC, C, ntok, 1.0f, dout->data(), OC, in->data(), C,
                                1.0f, dw->data(), C); },
                 [=] { Map(dw->data(), OC, C).noalias() +=
                           ConstMap(dout->data(), ntok, OC).transpose() *
                           ConstMap(in->data(), ntok, C); },
                 [=] { k::bf16gemm(true, false, OC, C, ntok, 1.0f, dout16->data(), OC, in16->data(),
                                   C, 1.0f, dw->data(), C); }});
}

// Attention forward's two per-head GEMMs for B x NH heads, inside `omp parallel for`.
void add_attention(std::vector<Bench>& out, int T) {
  const int B = 4, NH = 12, HS = 64, C = NH * HS;
  auto qkv = std::make_shared<std::vector<float>>(random_floats((size_t)B * T * 3 * C, 4));
  auto att = std::make_shared<std::vector<float>>((size_t)B * NH * T * T);
  auto o = std::make_shared<std::vector<float>>((size_t)B * T * C);
  namespace k = tessera::kernels;
  const double f = (double)B * NH * (2.0 * T * T * HS * 2);
  const std::string name = "attn S=QK^T,O=PV T=" + std::to_string(T) + " (in omp for)";
  out.push_back({name, f, 0,
                 [=] {
#pragma omp parallel for collapse(2) schedule(static)
                   for (int b = 0; b < B; b++)
                     for (int h = 0; h < NH; h++) {
                       const float* q = qkv->data() + (size_t)b * T * 3 * C + h * HS;
                       float* p = att->data() + ((size_t)b * NH + h) * T * T;
                       k::sgemm(false, true, T, T, HS, 1.0f, q, 3 * C, q + C, 3 * C, 0.0f, p, T);
                       k::sgemm(false, false, T, HS, T, 1.0f, p, T, q + 2 * C, 3 * C, 0.0f,
                                o->data() + (size_t)b * T * C + h * HS, C);
                     }
                 },
                 [=] {
#pragma omp parallel for collapse(2) schedule(static)
                   for (int b = 0; b < B; b++)
                     for (int h = 0; h < NH; h++) {
                       const float* q = qkv->data() + (size_t)b * T * 3 * C + h * HS;
                       float* p = att->data() + ((size_t)b * NH + h) * T * T;
                       const Eigen::OuterStride<> s3(3 * C), s1(C);
                       Map pm(p, T, T);
                       pm.noalias() = ConstStrided(q, T, HS, s3) * ConstStrided(q + C, T, HS, s3).transpose();
                       Strided(o->data() + (size_t)b * T * C + h * HS, T, HS, s1).noalias() =
                           pm * ConstStrided(q + 2 * C, T, HS, s3);
                     }
                 }});
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    p = std::strchr(p, ',');
    if (!p) break;
    p++;
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int ntok = 256, reps = 5, bf16 = 0;
  double min_time = 0.1;
  std::vector<int> threads = {1, 2};
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--ntok") ntok = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--threads") threads = parse_list(argv[i + 1]);
    else if (a == "--min-time") min_time = std::atof(argv[i + 1]);
    else if (a == "--only") only = argv[i + 1];
    else if (a == "--bf16") bf16 = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }

  std::vector<Bench> benches;
  add_linear(benches, "qkv", ntok, 2304, 768, 12);
  add_linear(benches, "attproj", ntok, 768, 768, 12);
  add_linear(benches, "fc", ntok, 3072, 768, 12);
  add_linear(benches, "fcproj", ntok, 768, 3072, 12);
  add_linear(benches, "lm_head", ntok, 50304, 768, 1);
  add_attention(benches, 64);
  add_attention(benches, 256);
  if (!only.empty())
    std::erase_if(benches, [&](const Bench& b) { return b.name.find(only) == std::string::npos; });

  std::printf("engine %s, N_tok %d, %d interleaved repetitions, min %.2f s per timing\n",
              tessera::kernels::gemm_engine(), ntok, reps, min_time);
  if (bf16) std::printf("bf16gemm engine %s\n", tessera::kernels::bf16gemm_engine());
  for (int nt : threads) {
    omp_set_num_threads(nt);
    std::vector<std::vector<double>> ours(benches.size()), eigen(benches.size()),
        ratio(benches.size()), cpu_ratio(benches.size()), ours_cpu(benches.size()),
        eigen_cpu(benches.size()), half(benches.size()), half_ratio(benches.size());
    std::vector<double> peaks, cpu_peaks;
    for (int r = 0; r < reps; r++) {
      for (size_t b = 0; b < benches.size(); b++) {
        const double t0 = now(), c0 = cpu_now();
        const double peak = tessera::measure_fp32_peak_flops(0.05);
        peaks.push_back(peak);
        cpu_peaks.push_back(peak * (now() - t0) / (cpu_now() - c0));  // FLOP per CPU second
        // Alternate which engine goes first, so neither always gets the warmer caches.
        Timing to, te;
        if (r % 2 == 0) {
          to = time_call(benches[b].ours, min_time);
          te = time_call(benches[b].eigen, min_time);
        } else {
          te = time_call(benches[b].eigen, min_time);
          to = time_call(benches[b].ours, min_time);
        }
        ours[b].push_back(to.wall);
        eigen[b].push_back(te.wall);
        ours_cpu[b].push_back(benches[b].flops / to.cpu / cpu_peaks.back());
        eigen_cpu[b].push_back(benches[b].flops / te.cpu / cpu_peaks.back());
        ratio[b].push_back(te.wall / to.wall);
        if (bf16 && benches[b].bf16) {  // right after sgemm's timing, for a like-for-like ratio
          const double th = time_call(benches[b].bf16, min_time).wall;
          half[b].push_back(th);
          half_ratio[b].push_back(to.wall / th);
        }
        cpu_ratio[b].push_back(te.cpu / to.cpu);
      }
    }
    const double peak = median(peaks);
    std::printf("\n%d thread(s): FMA peak %.0f GFLOP/s wall (median of %zu; min %.0f, max %.0f), "
                "%.0f GFLOP per CPU-second\n",
                nt, peak / 1e9, peaks.size(), *std::min_element(peaks.begin(), peaks.end()) / 1e9,
                *std::max_element(peaks.begin(), peaks.end()) / 1e9, median(cpu_peaks) / 1e9);
    std::printf("| shape | ours GFLOP/s | ours %% peak | Eigen GFLOP/s | Eigen %% peak | ours/Eigen "
                "| CPU-time eff. ours | CPU-time eff. Eigen |\n");
    std::printf("|---|---|---|---|---|---|---|---|\n");
    double step_flops = 0, step_ours = 0, step_eigen = 0;
    for (size_t b = 0; b < benches.size(); b++) {
      const double o = median(ours[b]), e = median(eigen[b]);
      const double go = benches[b].flops / o, ge = benches[b].flops / e;
      std::printf("| %s | %.0f | %.0f%% | %.0f | %.0f%% | %.2fx | %.0f%% | %.0f%% |\n",
                  benches[b].name.c_str(), go / 1e9, 100 * go / peak, ge / 1e9, 100 * ge / peak,
                  median(ratio[b]), 100 * median(ours_cpu[b]), 100 * median(eigen_cpu[b]));
      step_flops += benches[b].step_weight * benches[b].flops;
      step_ours += benches[b].step_weight * o;
      step_eigen += benches[b].step_weight * e;
    }
    if (step_flops > 0)
      std::printf("| step (linear layers, weighted) | %.0f | %.0f%% | %.0f | %.0f%% | %.2fx | | |\n",
                  step_flops / step_ours / 1e9, 100 * step_flops / step_ours / peak,
                  step_flops / step_eigen / 1e9, 100 * step_flops / step_eigen / peak,
                  step_eigen / step_ours);
    if (bf16) {
      std::printf("\n%d thread(s): bf16gemm (bf16 A, B; fp32 C) against sgemm, medians; bf16/sgemm "
                  "is the median of per-repetition speed ratios\n", nt);
      std::printf("| shape | sgemm GFLOP/s | bf16gemm GFLOP/s | bf16/sgemm |\n|---|---|---|---|\n");
      double flops = 0, t32 = 0, t16 = 0;
      for (size_t b = 0; b < benches.size(); b++) {
        if (half[b].empty()) continue;
        const double o = median(ours[b]), h = median(half[b]);
        std::printf("| %s | %.0f | %.0f | %.2fx |\n", benches[b].name.c_str(),
                    benches[b].flops / o / 1e9, benches[b].flops / h / 1e9, median(half_ratio[b]));
        flops += benches[b].step_weight * benches[b].flops;
        t32 += benches[b].step_weight * o;
        t16 += benches[b].step_weight * h;
      }
      if (flops > 0)
        std::printf("| step (linear layers, weighted) | %.0f | %.0f | %.2fx |\n", flops / t32 / 1e9,
                    flops / t16 / 1e9, t32 / t16);
    }
    std::fflush(stdout);
  }
  return 0;
}
