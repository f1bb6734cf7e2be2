// GPT-2: token + learned position embeddings, n_layer pre-LayerNorm blocks (causal
// multi-head attention with QKV bias and an output projection, MLP 4C with GELU-tanh),
// a final LayerNorm, and an LM head tied to the token embedding. Forward and backward
// are written out by hand on top of kernels/ops.h; there is no autograd.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "framework/model/params.h"
#include "framework/recipe/recipe.h"

namespace tessera {

struct GPTConfig {
  int n_layer = 2, n_head = 2, n_embd = 64;
  int vocab_size = 256;         // V: real tokens
  int padded_vocab_size = 256;  // Vp >= V: rows of the logical wte, the same for every
                                // layout (extra rows never win the softmax)
  int seq_len = 64;             // maximum T (rows of wpe)

  static GPTConfig from_recipe(const ModelConfig& model);
  // Training FLOPs per token (forward + backward = 3x forward) of every matmul and of the
  // attention as computed (full T x T score matrices), at sequence length T:
  //   3 * (2 * (L * 12 C^2 + C * Vp) + L * 4 * T * C)
  // See docs/performance.md.
  double training_flops_per_token(int T) const;
};

// Wall-clock split of the last forward_backward(), for the benchmarks.
struct PassTimes {
  double forward_ms = 0, backward_ms = 0;
};

// This rank's place in its tensor-parallel group (Megatron). size 1 (the default) is the
// single-process model; comm may then be MPI_COMM_NULL.
struct TensorParallel {
  int rank = 0, size = 1;
  MPI_Comm comm = MPI_COMM_NULL;
};

// Tensor parallelism (Megatron-LM, docs/parallel.md) is part of this one module; tp = 1
// is the degenerate case. Split across the tp ranks, all in the shard specs of table():
//   wte            rows (vocabulary-parallel embedding and LM head), ceil(Vp / tp) each
//   attn.qkv       rows of this rank's heads in each of q, k, v (column-parallel)
//   attn.proj      columns of this rank's heads (row-parallel; bias replicated)
//   mlp.up         rows (column-parallel); mlp.down columns (row-parallel; bias replicated)
//   LayerNorms, wpe, row-parallel biases: replicated.
// Communication is MPI_Allreduce(sum) in the tp communicator: after each row-parallel
// matmul and the vocabulary-parallel embedding (forward), on the gradient of the input
// of each column-parallel block and of the LM head (backward), and three small ones in
// the vocabulary-parallel cross-entropy.
class GPT2 {
 public:
  // Lays out the parameters (this tp rank's slices) and allocates parameters, gradients
  // and an activation arena for micro-batches of up to max_batch sequences of
  // config.seq_len tokens.
  // flat_multiple > 1 pads the flat buffers (params(), grads()) with zeros up to a
  // multiple of 16 * flat_multiple floats, so ZeRO-1 can split them into flat_multiple
  // (= dp) equal, 64-byte aligned ranges; the padding belongs to no parameter.
  GPT2(const GPTConfig& config, int max_batch, TensorParallel tp = {}, int flat_multiple = 1);
  ~GPT2();
  GPT2(const GPT2&) = delete;
  GPT2& operator=(const GPT2&) = delete;

  // Parameters from the counter-based RNG: N(0, 0.02) for matrices and embeddings,
  // N(0, 0.02 / sqrt(2 n_layer)) for the two projections into the residual stream
  // (GPT-2's scaled init), LayerNorm weights 1, biases 0.
  void init_weights(uint64_t seed);

  // Forward pass on inputs [B, T] (B <= max_batch, T <= seq_len). Without targets the
  // logits [B, T, local_vocab()] (this tp rank's columns) stay readable through logits();
  // with targets [B, T] returns the mean cross-entropy over the B*T positions (NaN
  // without targets). Collective over the tp group.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T);

  // Forward and backward in one go: returns the mean loss of this micro-batch and ADDS
  // grad_scale * d(mean loss)/d(parameter) into grads(). The trainer passes
  // 1 / (micro-batches per step * dp) so the summed gradient is that of the global mean.
  float forward_backward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         float grad_scale);

  void zero_grad();

  // Called during forward_backward() with a parameter's index in table() as soon as its
  // gradient is final (nothing later in the backward pass adds to it): ln_f first, then
  // the blocks from last to first, then wpe and wte — the reverse of the table's order.
  // Data parallelism uses it to start each bucket's all-reduce while the backward pass
  // goes on. Empty (the default): no calls.
  using GradReadyHook = std::function<void(int param_index)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_ = std::move(hook); }

  const GPTConfig& config() const { return config_; }
  const ParamTable& table() const { return table_; }
  float* params() { return params_.get(); }
  float* grads() { return grads_.get(); }
  int64_t flat_size() const { return flat_size_; }  // floats in params()/grads() (padded)
  int64_t num_parameters() const;                             // without alignment padding
  // [B, T, local_vocab()] of last forward(): logical vocabulary columns
  // vocab_start() .. vocab_start() + local_vocab() - 1 (those >= V are padding).
  const float* logits() const;
  int local_vocab() const { return local_vocab_; }
  int vocab_start() const { return tp_.rank * local_vocab_; }
  const TensorParallel& tp() const { return tp_; }
  // The greedy next token after position `row` of the last forward(): argmax over the
  // real vocabulary (lowest id on ties), across the tp group (collective).
  int32_t argmax_token(int64_t row) const;
  // Global L2 norm of the gradient of the logical model: squares of sharded parameters
  // summed over the tp group, replicated ones counted once (collective over tp).
  double grad_norm() const;
  // The full logical tensor of parameter `index` from the flat buffer `base` (params(),
  // grads() or an optimizer moment laid out like them), gathered over the tp group
  // (collective).
  std::vector<float> gather_logical(int index, const float* base) const;
  const PassTimes& last_times() const { return times_; }

 private:
  struct Activations;
  struct ParamPtrs;
  void forward_blocks(const int32_t* inputs, int B, int T);
  void backward_blocks(const int32_t* inputs, int B, int T);
  ParamPtrs param_ptrs(float* base) const;

  void allreduce_tp(float* x, int64_t n) const;  // sum over the tp group (no-op at tp 1)
  void vocab_parallel_crossentropy(const int32_t* targets, int N, float dloss, bool backward);

  GPTConfig config_;
  int max_batch_;
  TensorParallel tp_;
  int local_vocab_;
  ParamTable table_;
  int64_t flat_size_ = 0;  // table_.total_numel() padded to the flat_multiple
  struct FreeDeleter {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], FreeDeleter> params_, grads_, arena_;
  std::unique_ptr<Activations> acts_;
  PassTimes times_;
  GradReadyHook grad_ready_;
};

}  // namespace tessera
