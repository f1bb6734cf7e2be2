// cuDNN's fused attention through cuDNN 9's graph API (backend descriptors; the header-only
// cudnn-frontend is not used): causal, scale 1/sqrt(HS), on the qkv layout of our own
// kernels. The contract is flash_attention_forward/backward's (kernels/cuda/ops.h): out
// [B,T,C] fp32, lse [B,NH,T] the natural-log log-sum-exp of the scaled scores, dqkv += the
// gradient. cuDNN's fused engines take bf16 q, k, v, dO and give bf16 O, dq, dk, dv, so
// each call rounds our fp32 arrays to bf16 copies first (as our flash kernel does inside)
// and widens the results back; lse is written by cuDNN directly in fp32.
//
// cuDNN 9.19 (this toolkit's) has an SDPA operation but no causal mask for it before 9.21,
// so the graphs are spelled out of matmul, pointwise and reduction operations, the pattern
// cuDNN's fused attention engines recognise (the one cudnn-frontend 1.x emits for its
// "composite" SDPA nodes on such versions):
//   forward:  S = Q K^T * scale, masked where col > row (-inf), M = rowmax S,
//             E = exp(S - M), Z = rowsum E, lse = M + log Z, O = (E / Z) V
//   backward: D = rowsum(dO * O); P = exp(Q K^T * scale - lse) masked;
//             dV = P^T dO; dS = P * (dO V^T - D) * scale; dK = dS^T Q; dQ = dS K
// The backward adds dQ up with atomics in an fp32 workspace, so it is not deterministic.
// Two spellings of the mask (cudnn-frontend's current and older ones) are tried per shape.
//
// Host code (the graph API has no kernels of ours); built only where CMake found cuDNN.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "kernels/cuda/runtime.h"

namespace tessera::kernels::cuda {

class CudnnAttention {
 public:
  CudnnAttention();
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Builds the forward and backward graphs and their execution plans for one shape (once;
  // later calls look the answer up): "" when both run, else one line saying why not.
  std::string prepare(int B, int T, int C, int NH);
  // As flash_attention_forward / _backward; the shape must have been prepared with "".
  void forward(float* out, float* lse, const float* qkv, int B, int T, int C, int NH,
               cudaStream_t stream);
  void backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                const float* lse, int B, int T, int C, int NH, cudaStream_t stream);

  // How a prepared shape runs ("mask indices in fp32, workspace N bytes"), or why not.
  std::string describe(int B, int T, int C, int NH) const;

  // The forward and backward graphs' operations built and finalized for one shape, without
  // a GPU (no handle, no operation graph, no engine): "" when cuDNN accepts every tensor
  // and operation descriptor, else its complaint. What a machine without a GPU can check.
  static std::string check_descriptors(int B, int T, int C, int NH);

  struct Plans;  // one shape's graphs, plans and workspace sizes (cudnn_attention.cpp)

 private:
  const Plans& plans_for(int B, int T, int C, int NH, const char* caller);
  // lse itself when it is 16-byte aligned, else an aligned stand-in.
  float* staged_lse(float* lse, int64_t rows);
  void* handle_ = nullptr;  // cudnnHandle_t, created on the first prepare
  std::map<std::tuple<int, int, int, int>, std::unique_ptr<Plans>> plans_;
  // bf16 copies of the operands and results, and cuDNN's workspaces; grown on demand.
  DeviceArray<uint16_t> qkv16_, o16_, do16_, dqkv16_;
  DeviceArray<float> row_sums_, dq_accum_, lse_;
  DeviceArray<uint8_t> workspace_;
};

}  // namespace tessera::kernels::cuda
