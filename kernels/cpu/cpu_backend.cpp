// The CPU backend: each method forwards to the kernel of kernels/ops.h of the same name
// (qualified, since the method would otherwise call itself), on host memory.
#include <omp.h>

#include <cstring>

#include "kernels/backend.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ops.h"

namespace tessera::kernels {

namespace {

namespace ops = ::tessera::kernels;

// The attention backward's scratch [B, NH, T, T], one per calling thread: models train
// side by side on threads in the tests, and a kernel call must not share it with another.
// It only grows, so a run allocates it once (it was part of the model's arena before).
float* attention_scratch(int64_t n) {
  thread_local Buffer<float> scratch;
  if (scratch.size() < n) scratch = Buffer<float>::allocate(n);
  return scratch.data();
}

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  void synchronize() override {}

  void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                       int T, int C) override {
    ops::encoder_forward(out, inp, wte, wpe, B, T, C);
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                        int T, int C) override {
    ops::encoder_backward(dwte, dwpe, dout, inp, B, T, C);
  }
  void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                   const float* wpe, int B, int T, int C, int vocab_start,
                                   int vocab_rows) override {
    ops::encoder_forward_vocab_shard(out, inp, wte_shard, wpe, B, T, C, vocab_start, vocab_rows);
  }
  void encoder_backward_vocab_shard(float* dwte_shard, float* dwpe, const float* dout,
                                    const int32_t* inp, int B, int T, int C, int vocab_start,
                                    int vocab_rows) override {
    ops::encoder_backward_vocab_shard(dwte_shard, dwpe, dout, inp, B, T, C, vocab_start,
                                      vocab_rows);
  }

  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C) override {
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override {
    ops::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
  }

  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int C, int OC) override {
    ops::matmul_forward(out, inp, weight, bias, N, C, OC);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC) override {
    ops::matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, C, OC);
  }
  void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16, const uint16_t* weight16,
                            const float* bias, int N, int C, int OC) override {
    ops::matmul_forward_16bit(dt, out, inp16, weight16, bias, N, C, OC);
  }
  void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias,
                             const float* dout, const uint16_t* dout16, const uint16_t* inp16,
                             const uint16_t* weight16, int N, int C, int OC) override {
    ops::matmul_backward_16bit(dt, dinp, dweight, dbias, dout, dout16, inp16, weight16, N, C, OC);
  }
  void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
             int lda, const float* B, int ldb, float beta, float* C, int ldc) override {
    ops::sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                         int NH) override {
    ops::attention_forward(out, att, qkv, B, T, C, NH);
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                          int B, int T, int C, int NH) override {
    float* scratch = attention_scratch((int64_t)B * NH * T * T);
    ops::attention_backward(dqkv, scratch, dout, qkv, att, B, T, C, NH);
  }

  bool has_llama_ops() const override { return true; }
  void gqa_attention_forward(float* out, float* att, const float* q, const float* k,
                             const float* v, int B, int T, int NH, int NKV, int HS, int q_stride,
                             int kv_stride) override {
    ops::gqa_attention_forward(out, att, q, k, v, B, T, NH, NKV, HS, q_stride, kv_stride);
  }
  void gqa_attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                              const float* k, const float* v, const float* att, int B, int T,
                              int NH, int NKV, int HS, int q_stride, int kv_stride) override {
    float* scratch = attention_scratch((int64_t)B * NH * T * T);
    ops::gqa_attention_backward(dq, dk, dv, scratch, dout, q, k, v, att, B, T, NH, NKV, HS,
                                q_stride, kv_stride);
  }
  void rope_forward(float* x, const float* cos_table, const float* sin_table, int B, int T,
                    int heads, int HS, int stride) override {
    ops::rope_forward(x, cos_table, sin_table, B, T, heads, HS, stride);
  }
  void rope_backward(float* dx, const float* cos_table, const float* sin_table, int B, int T,
                     int heads, int HS, int stride) override {
    ops::rope_backward(dx, cos_table, sin_table, B, T, heads, HS, stride);
  }
  void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N,
                       int C, float eps) override {
    ops::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
  }
  void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                        const float* weight, const float* rstd, int N, int C) override {
    ops::rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C);
  }
  void swiglu_forward(float* out, const float* gate, const float* up, int64_t N) override {
    ops::swiglu_forward(out, gate, up, N);
  }
  void swiglu_backward(float* dgate, float* dup, const float* gate, const float* up,
                       const float* dout, int64_t N) override {
    ops::swiglu_backward(dgate, dup, gate, up, dout, N);
  }

  void gelu_forward(float* out, const float* inp, int64_t N) override {
    ops::gelu_forward(out, inp, N);
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) override {
    ops::gelu_backward(dinp, inp, dout, N);
  }
  void residual_forward(float* out, const float* a, const float* b, int64_t N) override {
    ops::residual_forward(out, a, b, N);
  }
  void add_bias(float* out, const float* bias, int N, int OC) override {
    ops::add_bias(out, bias, N, OC);
  }

  void dropout_forward(float* out, const float* inp, int N, int C,
                       const DropoutMask& mask) override {
    ops::dropout_forward(out, inp, N, C, mask);
  }
  void dropout_backward(float* dinp, const float* dout, int N, int C,
                        const DropoutMask& mask) override {
    ops::dropout_backward(dinp, dout, N, C, mask);
  }

  void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                     const int32_t* targets, float dloss, int N, int V,
                                     int Vp) override {
    ops::crossentropy_forward_backward(losses, dlogits, logits, targets, dloss, N, V, Vp);
  }
  void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets, int N,
                                int Vl, int n_real, int vocab_start) override {
    ops::crossentropy_shard_stats(stats, logits, targets, N, Vl, n_real, vocab_start);
  }
  void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                                 const float* all_stats, int ranks, const int32_t* targets,
                                 float dloss, int N, int Vl, int n_real,
                                 int vocab_start) override {
    ops::crossentropy_shard_finish(losses, dlogits, logits, all_stats, ranks, targets, dloss, N, Vl,
                                   n_real, vocab_start);
  }

  void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t,
                    float grad_scale) override {
    ops::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale);
  }
  void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                              float lr, float beta1, float beta2, float eps, float weight_decay,
                              int64_t t, float grad_scale, uint16_t* copy16, Dtype dt) override {
    ops::adamw_update_with_copy(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t,
                                grad_scale, copy16, dt);
  }

  double sum_squares(const float* x, int64_t n) override { return ops::sum_squares(x, n); }
  bool has_nonfinite(const float* x, int64_t n) override { return ops::has_nonfinite(x, n); }

  void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n) override {
    ops::round_to_16bit(dt, dst, src, n);
  }
  void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                           int64_t src_stride) override {
    ops::round_to_16bit_rows(dt, dst, src, rows, cols, src_stride);
  }
  void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n) override {
    ops::widen_16bit(dt, dst, src, n);
  }
  void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                                uint64_t offset) override {
    ops::round_to_bf16_stochastic(dst, src, n, seed, offset);
  }

 protected:
  // Device memory is host memory: plain memset and memcpy, in every direction. A large
  // memset is split over the threads: one core does not reach the memory's bandwidth
  // (zeroing the gradients of a 124M model every step took 18 ms on one thread).
  void zero_bytes(void* dst, std::size_t bytes) override {
    constexpr std::size_t kParallelBytes = std::size_t(8) << 20;
    if (bytes < kParallelBytes) {
      std::memset(dst, 0, bytes);
      return;
    }
    char* base = static_cast<char*>(dst);
#pragma omp parallel
    {
      const std::size_t threads = (std::size_t)omp_get_num_threads();
      const std::size_t t = (std::size_t)omp_get_thread_num();
      const std::size_t lo = bytes * t / threads, hi = bytes * (t + 1) / threads;
      std::memset(base + lo, 0, hi - lo);
    }
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void to_device_bytes(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
  void to_host_bytes(void* dst, const void* src, std::size_t bytes) override {
    std::memcpy(dst, src, bytes);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace tessera::kernels
