// The CUDA backend: kernels/backend.h's Backend over the GPU op list (kernels/cuda/ops.h),
// on one stream of the current device. Host code only (the kernels are in the .cu files);
// compiled twice, against the CUDA runtime (the real GPU) and against the CUDA emulator
// (the same kernels on the CPU, so that a whole training run on this backend is tested on
// machines without a GPU).
//
// What this file adds to the kernels is bookkeeping:
// - scratch: the partial sums of the deterministic reductions (LayerNorm, bias gradient,
//   norm) and the attention's scratch, in device arrays that only grow, so a run
//   allocates them in its first step;
// - token ids arrive in host memory (the Backend's convention): they are uploaded per
//   call from pinned memory, asynchronously, and the embedding backward's per-token
//   buckets are built from them on the host;
// - device memory for kernels::Buffer (install_device_memory), so that the model's
//   parameters, gradients and activations come from cudaMalloc.
// Everything runs on the legacy default stream: every call is ordered after the previous
// one, and the synchronous copies to and from the host wait for the kernels before them.
#include <algorithm>
#include <cstring>
#include <string>

#include "base/error.h"
#include "kernels/backend.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#ifdef TESSERA_HAVE_CUDNN
#include "kernels/cuda/cudnn_attention.h"
#endif

namespace tessera::kernels {

namespace {

namespace gpu = ::tessera::kernels::cuda;

void* allocate_zeroed(std::size_t bytes) {
  void* p = gpu::device_malloc(bytes, "a training buffer");
  gpu::check_cuda(cudaMemset(p, 0, bytes), "cudaMemset (a new buffer)");
  return p;
}

constexpr cudaStream_t kStream = nullptr;  // the legacy default stream

// A device array of T that grows to the largest size asked of it (its old contents are
// not kept). The stream is ordered, so one call's use ends before the next call's begins;
// cudaFree waits for the device, so growing never frees memory a kernel still reads.
template <typename T>
class Scratch {
 public:
  explicit Scratch(const char* what) : what_(what) {}
  T* get(int64_t count) {
    if (array_.size() < count) {
      array_ = gpu::DeviceArray<T>();
      array_ = gpu::DeviceArray<T>(count, what_);
    }
    return array_.data();
  }

 private:
  const char* what_;
  gpu::DeviceArray<T> array_;
};

// Host values (token ids) to the device without waiting for them: copied into pinned
// memory, then an asynchronous copy on the stream, ordered before the kernels that read
// them. Before the pinned buffer is written again, the copy that read it has finished
// (an event; long done by then, a micro-batch later).
template <typename T>
class PinnedUpload {
 public:
  explicit PinnedUpload(const char* what) : device_(what), what_(what) {}
  PinnedUpload(const PinnedUpload&) = delete;
  PinnedUpload& operator=(const PinnedUpload&) = delete;
  ~PinnedUpload() {
    if (copied_) cudaEventDestroy(copied_);
    if (pinned_) cudaFreeHost(pinned_);
  }
  const T* upload(const T* host, int64_t count) {
    if (count == 0) return nullptr;  // e.g. the buckets of a shard holding none of the tokens
    // The values of the last upload (tensor parallelism's cross-entropy sends its targets
    // twice a micro-batch) are on the device already; waiting for that copy, queued behind
    // the forward pass, would drain the GPU's queue.
    if (count == count_ && std::memcmp(pinned_, host, sizeof(T) * (size_t)count) == 0)
      return device_.get(count);
    if (!copied_) gpu::check_cuda(cudaEventCreate(&copied_), "cudaEventCreate");
    gpu::check_cuda(cudaEventSynchronize(copied_), what_);
    if (capacity_ < count) {
      if (pinned_) cudaFreeHost(pinned_);
      pinned_ = nullptr;
      gpu::check_cuda(cudaMallocHost(reinterpret_cast<void**>(&pinned_), sizeof(T) * (size_t)count),
                      what_);
      capacity_ = count;
    }
    count_ = 0;  // until the copy below is queued
    std::memcpy(pinned_, host, sizeof(T) * (size_t)count);
    T* d = device_.get(count);
    gpu::check_cuda(
        cudaMemcpyAsync(d, pinned_, sizeof(T) * (size_t)count, cudaMemcpyHostToDevice, kStream),
        what_);
    gpu::check_cuda(cudaEventRecord(copied_, kStream), what_);
    count_ = count;
    return d;
  }

 private:
  Scratch<T> device_;
  const char* what_;
  T* pinned_ = nullptr;
  int64_t capacity_ = 0;
  int64_t count_ = 0;  // of the last upload, whose values pinned_ and the device hold
  cudaEvent_t copied_ = nullptr;
};


class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int local_rank) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0)
      throw Error(std::string("train.device: cuda: no usable CUDA device (") +
                  (err != cudaSuccess ? cudaGetErrorString(err) : "the runtime sees 0 devices") +
                  "); run on a GPU node, or set train.device: cpu");
    gpu::check_cuda(cudaSetDevice(local_rank % count), "cudaSetDevice (the process's GPU)");
    install_device_memory(Device::cuda, DeviceMemory{allocate_zeroed, gpu::device_free});
  }

  Device device() const override { return Device::cuda; }
  void synchronize() override {
    gpu::check_cuda(cudaStreamSynchronize(kStream), "cudaStreamSynchronize");
  }

  void encoder_forward(float* out, const int32_t* inp, const float* wte, const float* wpe, int B,
                       int T, int C) override {
    gpu::encoder_forward(out, tokens_.upload(inp, (int64_t)B * T), wte, wpe, B, T, C, kStream);
  }
  void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* inp, int B,
                        int T, int C) override {
    embedding_backward(dwte, dwpe, dout, gpu::build_token_buckets(inp, B, T), B, T, C);
  }
  void encoder_forward_vocab_shard(float* out, const int32_t* inp, const float* wte_shard,
                                   const float* wpe, int B, int T, int C, int vocab_start,
                                   int vocab_rows) override {
    gpu::encoder_forward_vocab_shard(out, tokens_.upload(inp, (int64_t)B * T), wte_shard, wpe, B,
                                     T, C, vocab_start, vocab_rows, kStream);
  }
  void encoder_backward_vocab_shard(float* dwte_shard, float* dwpe, const float* dout,
                                    const int32_t* inp, int B, int T, int C, int vocab_start,
                                    int vocab_rows) override {
    embedding_backward(dwte_shard, dwpe, dout,
                       gpu::build_token_buckets(inp, B, T, vocab_start, vocab_rows), B, T, C);
  }

  void layernorm_forward(float* out, float* mean, float* rstd, const float* inp,
                         const float* weight, const float* bias, int N, int C) override {
    gpu::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, kStream);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                          const float* inp, const float* weight, const float* mean,
                          const float* rstd, int N, int C) override {
    gpu::layernorm_backward(dinp, dweight, dbias,
                            partials_.get(gpu::layernorm_backward_scratch(N, C)), dout, inp,
                            weight, mean, rstd, N, C, kStream);
  }

  void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                      int C, int OC) override {
    gpu::matmul_forward(out, nullptr, inp, weight, bias, N, C, OC, kStream);
  }
  void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                       const float* inp, const float* weight, int N, int C, int OC) override {
    gpu::matmul_backward(dinp, dweight, dbias, bias_scratch(dbias, N, OC), dout, inp, weight, N, C,
                         OC, kStream);
  }
  void matmul_forward_16bit(Dtype dt, float* out, const uint16_t* inp16, const uint16_t* weight16,
                            const float* bias, int N, int C, int OC) override {
    gpu::matmul_forward_16bit(dt, out, nullptr, inp16, weight16, bias, N, C, OC, kStream);
  }
  void matmul_backward_16bit(Dtype dt, float* dinp, float* dweight, float* dbias,
                             const float* dout, const uint16_t* dout16, const uint16_t* inp16,
                             const uint16_t* weight16, int N, int C, int OC) override {
    gpu::matmul_backward_16bit(dt, dinp, dweight, dbias, bias_scratch(dbias, N, OC), dout, dout16,
                               inp16, weight16, N, C, OC, kStream);
  }
  void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
             const float* B, int ldb, float beta, float* C, int ldc) override {
    gpu::gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, kStream);
  }

  void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C,
                         int NH) override {
    gpu::attention_forward(out, att, attention_.get(gpu::attention_scratch(B, T, C, NH)), qkv, B,
                           T, C, NH, kStream);
  }
  void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                          int B, int T, int C, int NH) override {
    gpu::attention_backward(dqkv, attention_.get(gpu::attention_scratch(B, T, C, NH)), dout, qkv,
                            att, B, T, C, NH, kStream);
  }

  bool flash_attention_supported(int C, int NH) const override {
    return gpu::flash_attention_supported(C, NH);
  }
  void flash_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                               int NH) override {
    gpu::flash_attention_forward(out, lse, qkv, B, T, C, NH, kStream);
  }
  void flash_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                const float* lse, int B, int T, int C, int NH) override {
    gpu::flash_attention_backward(dqkv, attention_.get(gpu::flash_attention_scratch(B, T, C, NH)),
                                  dout, qkv, out, lse, B, T, C, NH, kStream);
  }

#ifdef TESSERA_HAVE_CUDNN
  std::string cudnn_attention_prepare(int B, int T, int C, int NH) override {
    return cudnn_attention_.prepare(B, T, C, NH);
  }
  void cudnn_attention_forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                               int NH) override {
    cudnn_attention_.forward(out, lse, qkv, B, T, C, NH, kStream);
  }
  void cudnn_attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                                const float* lse, int B, int T, int C, int NH) override {
    cudnn_attention_.backward(dqkv, dout, qkv, out, lse, B, T, C, NH, kStream);
  }
#else
  std::string cudnn_attention_prepare(int, int, int, int) override {
#ifdef TESSERA_CUDA_EMULATOR
    return "the CUDA emulator has no cuDNN";
#else
    return "this build has no cuDNN (CMake found no cudnn.h and libcudnn next to the CUDA "
           "toolkit, or it was configured with TESSERA_CUDNN=OFF)";
#endif
  }
#endif

  void gelu_forward(float* out, const float* inp, int64_t N) override {
    gpu::gelu_forward(out, inp, N, kStream);
  }
  void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) override {
    gpu::gelu_backward(dinp, inp, dout, N, kStream);
  }
  void residual_forward(float* out, const float* a, const float* b, int64_t N) override {
    gpu::residual_forward(out, a, b, N, kStream);
  }
  void add_bias(float* out, const float* bias, int N, int OC) override {
    gpu::add_bias(out, bias, N, OC, kStream);
  }

  void dropout_forward(float* out, const float* inp, int N, int C,
                       const DropoutMask& mask) override {
    gpu::dropout_forward(out, inp, N, C, mask, kStream);
  }
  void dropout_backward(float* dinp, const float* dout, int N, int C,
                        const DropoutMask& mask) override {
    gpu::dropout_backward(dinp, dout, N, C, mask, kStream);
  }

  void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                     const int32_t* targets, float dloss, int N, int V,
                                     int Vp) override {
    gpu::crossentropy_forward_backward(losses, dlogits, logits, targets_.upload(targets, N), dloss,
                                       N, V, Vp, kStream);
  }
  void crossentropy_shard_stats(float* stats, const float* logits, const int32_t* targets, int N,
                                int Vl, int n_real, int vocab_start) override {
    gpu::crossentropy_shard_stats(stats, logits, targets_.upload(targets, N), N, Vl, n_real,
                                  vocab_start, kStream);
  }
  void crossentropy_shard_finish(float* losses, float* dlogits, const float* logits,
                                 const float* all_stats, int ranks, const int32_t* targets,
                                 float dloss, int N, int Vl, int n_real,
                                 int vocab_start) override {
    gpu::crossentropy_shard_finish(losses, dlogits, logits, all_stats, ranks,
                                   targets_.upload(targets, N), dloss, N, Vl, n_real, vocab_start,
                                   kStream);
  }

  void adamw_update(float* params, const float* grads, float* m, float* v, int64_t n, float lr,
                    float beta1, float beta2, float eps, float weight_decay, int64_t t,
                    float grad_scale) override {
    gpu::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale,
                      nullptr, Dtype::fp32, 0, 0, kStream);
  }
  void adamw_update_with_copy(float* params, const float* grads, float* m, float* v, int64_t n,
                              float lr, float beta1, float beta2, float eps, float weight_decay,
                              int64_t t, float grad_scale, uint16_t* copy16, Dtype dt) override {
    gpu::adamw_update(params, grads, m, v, n, lr, beta1, beta2, eps, weight_decay, t, grad_scale,
                      copy16, dt, 0, 0, kStream);
  }

  double sum_squares(const float* x, int64_t n) override { return sum_squares_each({{x, n}})[0]; }
  std::vector<double> sum_squares_each(
      const std::vector<std::pair<const float*, int64_t>>& spans) override {
    std::vector<double> sums(spans.size());
    if (spans.empty()) return sums;
    int64_t largest = 0;
    for (const auto& span : spans) largest = std::max(largest, span.second);
    double* results = norm_result_.get((int64_t)spans.size());
    double* partials = norm_partials_.get(gpu::sum_squares_scratch(largest));  // before any use
    for (size_t i = 0; i < spans.size(); i++)  // stream-ordered: one scratch serves them all
      gpu::sum_squares(results + i, partials, spans[i].first, spans[i].second, kStream);
    to_host(sums.data(), results, (int64_t)spans.size());
    return sums;
  }
  bool has_nonfinite(const float* x, int64_t n) override {
    int32_t* flag = flag_.get(1);
    zero(flag, 1);
    gpu::has_nonfinite(flag, x, n, kStream);
    int32_t host = 0;
    to_host(&host, flag, 1);
    return host != 0;
  }

  void round_to_16bit(Dtype dt, uint16_t* dst, const float* src, int64_t n) override {
    gpu::round_to_16bit(dt, dst, src, n, kStream);
  }
  void round_to_16bit_rows(Dtype dt, uint16_t* dst, const float* src, int64_t rows, int64_t cols,
                           int64_t src_stride) override {
    gpu::round_to_16bit_rows(dt, dst, src, rows, cols, src_stride, kStream);
  }
  void widen_16bit(Dtype dt, float* dst, const uint16_t* src, int64_t n) override {
    gpu::widen_16bit(dt, dst, src, n, kStream);
  }
  void round_to_bf16_stochastic(uint16_t* dst, const float* src, int64_t n, uint64_t seed,
                                uint64_t offset) override {
    gpu::round_to_bf16_stochastic(dst, src, n, seed, offset, kStream);
  }

 protected:
  void zero_bytes(void* dst, std::size_t bytes) override {
    if (bytes) gpu::check_cuda(cudaMemsetAsync(dst, 0, bytes, kStream), "cudaMemsetAsync");
  }
  void copy_bytes(void* dst, const void* src, std::size_t bytes) override {
    if (bytes)
      gpu::check_cuda(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, kStream),
                      "cudaMemcpyAsync (device to device)");
  }
  void to_device_bytes(void* dst, const void* host_src, std::size_t bytes) override {
    if (bytes)
      gpu::check_cuda(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice),
                      "cudaMemcpy (host to device)");
  }
  void to_host_bytes(void* host_dst, const void* src, std::size_t bytes) override {
    if (bytes)
      gpu::check_cuda(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost),
                      "cudaMemcpy (device to host)");
  }

 private:
  // The bucketed embedding backward (kernels/cuda/encoder.cu) on buckets built on the host.
  void embedding_backward(float* dwte, float* dwpe, const float* dout, const gpu::TokenBuckets& b,
                          int B, int T, int C) {
    const int U = (int)b.bucket_tokens.size();
    gpu::encoder_backward(dwte, dwpe, dout, bucket_tokens_.upload(b.bucket_tokens.data(), U),
                          bucket_start_.upload(b.bucket_start.data(), U + 1),
                          positions_.upload(b.positions.data(), (int64_t)b.positions.size()), U,
                          B, T, C, kStream);
  }

  // The bias gradient's partial sums; none without one (the LM head's would be ~50 MB).
  float* bias_scratch(const float* dbias, int N, int OC) {
    return dbias ? partials_.get(gpu::matmul_backward_scratch(N, OC)) : nullptr;
  }

  PinnedUpload<int32_t> tokens_{"the batch's token ids"}, targets_{"the batch's targets"};
  PinnedUpload<int32_t> bucket_tokens_{"embedding backward buckets"},
      bucket_start_{"embedding backward buckets"}, positions_{"embedding backward buckets"};
  Scratch<float> partials_{"partial sums of a backward reduction"};
  Scratch<float> attention_{"attention scratch"};
  Scratch<double> norm_result_{"a norm"}, norm_partials_{"a norm's partial sums"};
  Scratch<int32_t> flag_{"the non-finite flag"};
#ifdef TESSERA_HAVE_CUDNN
  gpu::CudnnAttention cudnn_attention_;
#endif
};

}  // namespace

Backend& cuda_backend(int local_rank) {
  static CudaBackend backend(local_rank);
  return backend;
}

}  // namespace tessera::kernels
