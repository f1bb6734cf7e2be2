#include "framework/model/linear.h"

#include <algorithm>
#include <climits>

#include "base/error.h"

namespace tessera {

namespace k = kernels;

namespace {

bool mixed(const LinearContext& ctx) { return ctx.dtype != k::Dtype::fp32; }

void allreduce_tp(const LinearContext& ctx, float* x, int64_t n) {
  if (ctx.tp_size > 1) ctx.tp->all_reduce(x, n);
}

// The input as the base GEMM saw it, in fp32: x itself, or its 16-bit rounding widened
// into the context's scratch (exact).
const float* gemm_input(const LinearContext& ctx, SavedInput x, int64_t n) {
  if (!mixed(ctx)) return x.f32;
  ctx.backend.widen_16bit(ctx.dtype, ctx.scratch, x.f16, n);
  return ctx.scratch;
}

// The adapter's input: x, or x after dropout (in the context's second scratch).
const float* adapter_input(const LoraAdapter& A, const LinearContext& ctx, const float* x, int N,
                           int in) {
  if (A.dropout.p == 0) return x;
  ctx.backend.dropout_forward(ctx.scratch2, x, N, in, A.dropout);
  return ctx.scratch2;
}

}  // namespace

void linear_forward(const LinearLayer& L, const LinearContext& ctx, float* out, const float* x,
                    uint16_t* x16, float* lora_h, int N) {
  k::Backend& be = ctx.backend;
  const bool reduce = L.split == TpSplit::row && ctx.tp_size > 1;
  const float* bias = reduce ? nullptr : L.bias;  // a row-parallel bias goes in once, after
  if (mixed(ctx)) {
    be.round_to_16bit(ctx.dtype, x16, x, (int64_t)N * L.in);
    be.matmul_forward_16bit(ctx.dtype, out, x16, L.weight16, bias, N, L.in, L.out);
  } else {
    be.matmul_forward(out, x, L.weight, bias, N, L.in, L.out);
  }
  if (reduce) {
    allreduce_tp(ctx, out, (int64_t)N * L.out);
    if (L.bias) be.add_bias(out, L.bias, N, L.out);  // once, not once per rank
  }
  const LoraAdapter& A = L.lora;
  if (!A.a) return;
  const float* xin = adapter_input(A, ctx, gemm_input(ctx, SavedInput{x, x16}, (int64_t)N * L.in),
                                   N, L.in);
  // h = x @ A^T (this rank's input columns: a partial sum for a row-parallel layer)
  be.sgemm(false, true, N, A.rank, L.in, 1.0f, xin, L.in, A.a, L.in, 0.0f, lora_h, A.rank);
  if (L.split == TpSplit::row) allreduce_tp(ctx, lora_h, (int64_t)N * A.rank);
  // out += scale * h @ B^T
  be.sgemm(false, true, N, L.out, A.rank, A.scale, lora_h, A.rank, A.b, A.rank, 1.0f, out, L.out);
}

void linear_backward(const LinearLayer& L, const LinearContext& ctx, float* dx, const float* dout,
                     SavedInput x, const float* lora_h, int N) {
  k::Backend& be = ctx.backend;
  if (mixed(ctx)) {
    // dout is rounded to 16 bits whole when it fits the scratch (a block's layers), else
    // in blocks of output columns (the LM head's [N, vocabulary]): each block's GEMMs
    // still run over all N rows, so dW's K stays N.
    const int cols = (int)std::min<int64_t>(L.out, ctx.scratch16_size / std::max(N, 1));
    check(cols >= 1, "mixed-precision scratch smaller than one column of the output gradient");
    if (cols == L.out) {
      be.round_to_16bit(ctx.dtype, ctx.scratch16, dout, (int64_t)N * L.out);
      be.matmul_backward_16bit(ctx.dtype, dx, L.dweight, L.dbias, dout, ctx.scratch16, x.f16,
                               L.weight16, N, L.in, L.out);
    } else {
      check(L.dbias == nullptr, "column blocks of an output gradient with a bias");
      for (int o0 = 0; o0 < L.out; o0 += cols) {
        const int c = std::min(cols, L.out - o0);
        be.round_to_16bit_rows(ctx.dtype, ctx.scratch16, dout + o0, N, c, L.out);
        float* dweight = L.dweight ? L.dweight + (int64_t)o0 * L.in : nullptr;
        be.matmul_backward_16bit(ctx.dtype, dx, dweight, nullptr, nullptr, ctx.scratch16, x.f16,
                                 L.weight16 + (int64_t)o0 * L.in, N, L.in, c);
      }
    }
  } else {
    be.matmul_backward(dx, L.dweight, L.dbias, dout, x.f32, L.weight, N, L.in, L.out);
  }
  const LoraAdapter& A = L.lora;
  if (!A.a) return;
  const int r = A.rank;
  // dh = scale * dout @ B: partial over the tp group when B is split (column-parallel).
  be.sgemm(false, false, N, r, L.out, A.scale, dout, L.out, A.b, r, 0.0f, ctx.dh, r);
  // dB += scale * dout^T @ h
  be.sgemm(true, false, L.out, r, N, A.scale, dout, L.out, lora_h, r, 1.0f, A.db, r);
  // dx += dropout'(dh @ A): a partial sum for a column-parallel layer, as the base's is.
  if (A.dropout.p == 0) {
    be.sgemm(false, false, N, L.in, r, 1.0f, ctx.dh, r, A.a, L.in, 1.0f, dx, L.in);
  } else {
    be.sgemm(false, false, N, L.in, r, 1.0f, ctx.dh, r, A.a, L.in, 0.0f, ctx.scratch2, L.in);
    be.dropout_backward(dx, ctx.scratch2, N, L.in, A.dropout);
  }
  if (L.split == TpSplit::column) allreduce_tp(ctx, ctx.dh, (int64_t)N * r);
  // dA += dh^T @ dropout(x)
  const float* xin = adapter_input(A, ctx, gemm_input(ctx, x, (int64_t)N * L.in), N, L.in);
  be.sgemm(true, false, r, L.in, N, 1.0f, ctx.dh, r, xin, L.in, 1.0f, A.da, L.in);
}

}  // namespace tessera
