// The device seam: the op list of kernels/ops.h (for float) and the memory operations
// behind one abstract class, so that the model, the optimizer and the trainer are written
// once and a backend decides where they compute. cpu_backend() forwards to the CPU kernels
// of ops.h; a CUDA backend implements the same methods on device pointers
// (kernels/cuda/ops.h) without a second model.
//
// Conventions are those of kernels/ops.h (row-major, explicit shapes, backward functions
// ADD into the gradients they write, null gradients are not computed), plus:
// - Every float / uint16_t pointer is memory of this backend's device(): parameters,
//   gradients, activations, optimizer moments, all in Buffers the backend allocated.
// - Token ids (inp, targets) are HOST memory. They come from the data loader on the host,
//   the model checks them there, and a GPU's deterministic embedding backward builds its
//   per-token buckets from them on the host (kernels/cuda/ops.h, build_token_buckets); a
//   device backend uploads what its kernels read into its own scratch. So the CPU pays no
//   copy and the GPU one upload of B*T ids per call.
// - Scratch a kernel needs (the attention backward's [B, NH, T, T], a GPU's partial sums)
//   is the backend's own, not the caller's; so the interface reads like ops.h. The CPU
//   backend keeps its scratch per calling thread (models train side by side on threads in
//   the tests).
// - Calls may be asynchronous on a device (a stream); results read on the host
//   (sum_squares, has_nonfinite, to_host, host_view) are complete when they return.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/buffer.h"
#include "kernels/cpu/mixed_precision.h"
#include "kernels/dropout.h"

namespace tessera::kernels {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // True where the kernels compute in host memory (the CPU): device pointers are then
  // host pointers, and host_view needs no copy.
  bool computes_on_host() const { return device() == Device::cpu; }

  // ---- memory ---------------------------------------------------------------------------
  // A zeroed buffer of count T on device() (released with the buffer).
  template <class T>
  Buffer<T> allocate(int64_t count, Pages pages = Pages::huge_when_large) {
    return Buffer<T>::allocate(count, device(), pages);
  }
  template <class T>
  void zero(T* x, int64_t n) { zero_bytes(x, sizeof(T) * (std::size_t)n); }
  template <class T>
  void copy(T* dst, const T* src, int64_t n) { copy_bytes(dst, src, sizeof(T) * (std::size_t)n); }
  template <class T>
  void to_device(T* dst, const T* host_src, int64_t n) {
    to_device_bytes(dst, host_src, sizeof(T) * (std::size_t)n);
  }
  template <class T>
  void to_host(T* host_dst, const T* src, int64_t n) {
    to_host_bytes(host_dst, src, sizeof(T) * (std::size_t)n);
  }
  // The n values at src for reading on the host: src itself where the backend computes on
  // the host (no copy), else a copy in `host` (resized). For the few values the host reads
  // back in a step: the micro-batch losses, a row of logits.
  template <class T>
  const T* host_view(const T* src, int64_t n, std::vector<T>& host) {
    if (computes_on_host()) return src;
    host.resize((std::size_t)n);
    to_host(host.data(), src, n);
    return host.data();
  }
  // Waits until every call made so far has finished (a no-op on the CPU).
  virtual void synchronize() = 0;

  // ---- the op list (kernels/ops.h) ------------------------------------------------------
  virtual void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe,
                               int B, int T, int C) = 0;
  virtual void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp,
                                int B, int T, int C) = 0;
  // The vocabulary-parallel embedding (tensor parallelism): this rank's token rows
  // vocab_start .. + vocab_rows - 1; wpe / dwpe may be null (no learned positions).
  virtual void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                           const float* wpe, int B, int T, int C, int vocab_start,
                                           int vocab_rows) = 0;
  virtual void encoder_backward_vocab_shard(float* dwte_shard, float* dwpe, const float* dout,
                                            const int32_t* inp, int B, int T, int C,
                                            int vocab_start, int vocab_rows) = 0;

  virtual void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                                 const float* weight, const float* bias, int N, int C) = 0;
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                                  const float* inp, const float* weight, const float* mean,
                                  const float* rstd, int N, int C) = 0;

  virtual void matmul_forward(float* out, const float* inp, const float* weight,
                              const float* bias, int N, int C, int OC) = 0;
  virtual void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                               const float* inp, const float* weight, int N, int C, int OC) = 0;
  virtual void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16,
                                    const uint16_t* weight16, const float* bias, int N, int C,
                                    int OC) = 0;
  virtual void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias,
                                     const float* dout, const uint16_t* dout16,
                                     const uint16_t* inp16, const uint16_t* weight16, int N,
                                     int C, int OC) = 0;
  // C[M,N] = alpha * op(A) @ op(B) + beta * C, row-major (kernels/cpu/gemm.h's sgemm): the
  // small fp32 GEMMs of LoRA adapters.
  virtual void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                     int lda, const float* B, int ldb, float beta, float* C, int ldc) = 0;

  virtual void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                                 int NH) = 0;
  virtual void attention_backward(float* dqkv, const float* dout, const float* qkv,
                                  const float* att, int B, int T, int C, int NH) = 0;

  // Flash attention, where a backend has it (a GPU's): out as attention_forward, but no
  // T x T matrix is kept: lse[B, NH, T] holds each row's log-sum-exp of the scaled scores,
  // and the backward recomputes the probabilities from it (out is the forward's output).
  // q, k, v and the probabilities are rounded to bf16 inside (fp32 accumulation), so a
  // model uses it only when it trains in bf16. Supported where flash_attention_supported
  // says (head sizes); the defaults say no and throw.
  virtual bool flash_attention_supported(int C, int NH) const;
  virtual void flash_attention_forward(float* out, float* lse, const float* qkv, int B, int T,
                                       int C, int NH);
  virtual void flash_attention_backward(float* dqkv, const float* dout, const float* qkv,
                                        const float* out, const float* lse, int B, int T, int C,
                                        int NH);

  // cuDNN's fused attention (cuDNN 9's graph API), where a backend has it (the CUDA backend
  // of a build with cuDNN): flash_attention_forward/backward's contract (lse the same
  // natural-log log-sum-exp, so the two engines' forward and backward can be mixed), but
  // out is rounded to bf16 as well, and the backward is not deterministic (cuDNN adds dq up
  // with atomics). cudnn_attention_prepare builds the graphs for one shape (once; later
  // calls are a lookup) and returns "" when they run, else one line saying why not (no
  // cuDNN, no GPU engine for this shape, ...); forward and backward throw for a shape not
  // prepared successfully. The defaults say this backend has none.
  virtual std::string cudnn_attention_prepare(int B, int T, int C, int NH);
  virtual void cudnn_attention_forward(float* out, float* lse, const float* qkv, int B, int T,
                                       int C, int NH);
  virtual void cudnn_attention_backward(float* dqkv, const float* dout, const float* qkv,
                                        const float* out, const float* lse, int B, int T, int C,
                                        int NH);

  // The Llama family's ops (kernels/ops.h: gqa_attention_*, rope_*, rmsnorm_*, swiglu_*),
  // where a backend has them (the CPU's); has_llama_ops says so, and the defaults throw. The
  // rope tables are this backend's memory ([T, HS/2] each, from kernels::rope_table).
  virtual bool has_llama_ops() const;
  virtual void gqa_attention_forward(float* out, float* att, const float* q, const float* k,
                                     const float* v, int B, int T, int NH, int NKV, int HS,
                                     int q_stride, int kv_stride);
  virtual void gqa_attention_backward(float* dq, float* dk, float* dv, const float* dout,
                                      const float* q, const float* k, const float* v,
                                      const float* att, int B, int T, int NH, int NKV, int HS,
                                      int q_stride, int kv_stride);
  virtual void rope_forward(float* x, const float* cos_table, const float* sin_table, int B, int T,
                            int heads, int HS, int stride);
  virtual void rope_backward(float* dx, const float* cos_table, const float* sin_table, int B,
                             int T, int heads, int HS, int stride);
  virtual void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight,
                               int N, int C, float eps);
  virtual void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                                const float* weight, const float* rstd, int N, int C);
  virtual void swiglu_forward(float* out, const float* gate, const float* up, int64_t N);
  virtual void swiglu_backward(float* dgate, float* dup, const float* gate, const float* up,
                               const float* dout, int64_t N);

  virtual void gelu_forward(float* out, const float* inp, int64_t N) = 0;
  virtual void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) = 0;
  virtual void residual_forward(float* out, const float* a, const float* b, int64_t N) = 0;
  // out[N, OC] += bias[OC]: a row-parallel layer's bias, after the all-reduce.
  virtual void add_bias(float* out, const float* bias, int N, int OC) = 0;

  // out[N, C] = inp with the mask's elements dropped (0) or kept (scaled by 1 / (1 - p));
  // dinp += dout masked and scaled the same way (kernels/dropout.h).
  virtual void dropout_forward(float* out, const float* inp, int N, int C,
                               const DropoutMask& mask) = 0;
  virtual void dropout_backward(float* dinp, const float* dout, int N, int C,
                                const DropoutMask& mask) = 0;

  virtual void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                             const int32_t* targets, float dloss, int N, int V,
                                             int Vp) = 0;
  // The vocabulary-parallel cross-entropy: stats per rank, the caller's all_gather of them
  // over the group (all_stats [ranks, N, 3], rank order), then finish.
  virtual void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets,
                                        int N, int Vl, int n_real, int vocab_start) = 0;
  virtual void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                                         const float* all_stats, int ranks,
                                         const int32_t* targets, float dloss, int N, int Vl,
                                         int n_real, int vocab_start) = 0;

  virtual void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n,
                            float lr, float beta1, float beta2, float eps, float weight_decay,
                            int64_t t, float grad_scale) = 0;
  virtual void adamw_update_with_copy(float* params, const float* grads, float* m, float* v,
                                      int64_t n, float lr, float beta1, float beta2, float eps,
                                      float weight_decay, int64_t t, float grad_scale,
                                      uint16_t* copy16, Dtype dt) = 0;

  virtual double sum_squares(const float* x, int64_t n) = 0;
  // sum_squares of each (x, n) span, in order: one wait for the device for all of them
  // (a global norm over a model's ~150 tensors).
  virtual std::vector<double> sum_squares_each(
      const std::vector<std::pair<const float*, int64_t>>& spans);
  virtual bool has_nonfinite(const float* x, int64_t n) = 0;

  // The casts of kernels/cpu/mixed_precision.h. round_to_16bit_rows rounds a [rows, cols]
  // block of a wider matrix (row stride src_stride) into a contiguous dst [rows, cols].
  virtual void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n) = 0;
  virtual void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows,
                                   int64_t cols, int64_t src_stride) = 0;
  virtual void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n) = 0;
  virtual void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n,
                                        uint64_t seed, uint64_t offset) = 0;

 protected:
  virtual void zero_bytes(void* dst, std::size_t bytes) = 0;
  virtual void copy_bytes(void* dst, const void* src, std::size_t bytes) = 0;  // device to device
  virtual void to_device_bytes(void* dst, const void* host_src, std::size_t bytes) = 0;
  virtual void to_host_bytes(void* host_dst, const void* src, std::size_t bytes) = 0;
};

// The CPU implementation: the kernels of kernels/ops.h, on host memory.
Backend& cpu_backend();

// The CUDA implementation (kernels/cuda/cuda_backend.cpp): the GPU op list of
// kernels/cuda/ops.h on GPU local_rank % (GPUs this process sees), one GPU per process
// of a node, made on the first call (which picks the GPU; later calls return it).
// Defined by the backend library the executable links (kernels/CMakeLists.txt): the GPU,
// the CUDA emulator, or, in a build without CUDA, a function that throws tessera::Error
// saying so. Throws too when the runtime sees no device.
Backend& cuda_backend(int local_rank = 0);

// The backend of recipe key train.device: cpu_backend() or cuda_backend(local_rank).
Backend& backend_for(Device device, int local_rank = 0);

}  // namespace tessera::kernels
