// One linear layer of the GPT-2 module as it is computed: in fp32 or in mixed precision,
// split over the tensor-parallel group or not, trained or frozen, with or without a LoRA
// adapter. The four linear layers of every block and the LM head all go through the two
// functions below, so each of those choices is made in one place (gpt_model.cpp only says
// which layer is which). Every op goes through the context's kernels::Backend.
//
// Tensor-parallel splits (Megatron-LM):
//   column: the weight's rows (output features) are split; the input is replicated, the
//           output is this rank's columns. The input's gradient is a partial sum that the
//           CALLER all-reduces (once, before the LayerNorm that fed the layer).
//   row:    the weight's columns (input features) are split; the input is this rank's
//           columns. The output is all-reduced HERE and the replicated bias added after.
// At tp = 1 both are the plain layer.
//
// Mixed precision (kernels/cpu/mixed_precision.h): the input is rounded to the 16-bit type and
// saved so for the backward pass (half the memory of fp32); the weight's 16-bit copy and
// the output gradient rounded to 16 bits feed the GEMMs; every sum and every gradient is
// fp32.
//
// LoRA (Hu et al., 2021): out += scale * (dropout(x) @ A^T) @ B^T, A [r, in], B [out, r],
// scale = alpha / r, with x the input as the base GEMM sees it (rounded in mixed
// precision). A is split like the base weight's input dimension (row-parallel layers),
// B like its output dimension (column-parallel layers); the other is replicated. The
// small product h = x @ A^T [N, r] is all-reduced when A is split (forward), and its
// gradient when B is split (backward), so both adapters see the whole h: a layer's
// LoRA result does not depend on tp up to rounding. The adapter's GEMMs are fp32.
#pragma once
#include <cstdint>

#include "kernels/backend.h"
#include "kernels/cpu/mixed_precision.h"
#include "parallel/communicator.h"

namespace tessera {

enum class TpSplit { column, row };

struct LoraAdapter {
  const float* a = nullptr;  // [r, in]; null: no adapter
  const float* b = nullptr;  // [out, r]
  float* da = nullptr;       // gradients, same shapes
  float* db = nullptr;
  int rank = 0;
  float scale = 0;           // alpha / r
  // Dropout on the adapter's input in a training pass (p = 0: none), its mask keyed by
  // logical positions (kernels/dropout.h), so every layout drops the same elements.
  kernels::DropoutMask dropout;
};

struct LinearLayer {
  TpSplit split = TpSplit::column;
  int in = 0, out = 0;                 // this rank's widths
  const float* weight = nullptr;       // [out, in] fp32 master
  const float* bias = nullptr;         // [out] or null
  const uint16_t* weight16 = nullptr;  // its 16-bit copy (mixed precision), else null
  float* dweight = nullptr;            // null: frozen
  float* dbias = nullptr;              // null: frozen or no bias
  LoraAdapter lora;
};

// What every layer of a pass shares.
struct LinearContext {
  kernels::Backend& backend;  // computes every op, on its device's memory
  kernels::Dtype dtype = kernels::Dtype::fp32;
  int tp_size = 1;
  Communicator* tp = nullptr;  // the tensor-parallel group (null at tp_size 1)
  uint16_t* scratch16 = nullptr;  // the output gradient rounded, in chunks of rows
  int64_t scratch16_size = 0;     // its elements (N * widest block layer)
  float* scratch = nullptr;       // [N * widest input]: a rounded input as fp32 (LoRA)
  float* scratch2 = nullptr;      // [N * widest input]: the input after dropout (LoRA)
  float* dh = nullptr;            // [N * r]: the adapter's inner gradient (LoRA)
};

// A layer's input as saved for the backward pass: f32 [N, in] in fp32 runs, f16 (its
// 16-bit rounding) in mixed precision; the other is null.
struct SavedInput {
  const float* f32 = nullptr;
  const uint16_t* f16 = nullptr;
};

// out[N, out] = x[N, in] @ W^T + bias (+ the adapter). Mixed precision writes x rounded
// into x16 [N, in]; with an adapter, h [N, r] is kept for the backward pass. Collective
// over the tp group for row-parallel layers (and adapters with a split A).
void linear_forward(const LinearLayer& layer, const LinearContext& ctx, float* out,
                    const float* x, uint16_t* x16, float* lora_h, int N);

// dx += d/dx, and the layer's gradients (those not null) += theirs, from dout [N, out].
// For a column-parallel layer dx is this rank's partial sum (see above). Collective over
// the tp group for adapters with a split B.
void linear_backward(const LinearLayer& layer, const LinearContext& ctx, float* dx,
                     const float* dout, SavedInput x, const float* lora_h, int N);

}  // namespace tessera
