// Every op's backward against central finite differences, in double precision
// (gradcheck.h; the Llama family's ops are in test_llama_kernels.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cpu/cast_fp16.h"
#include "kernels/cpu/vector_math.h"
#include "kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace k = tessera::kernels;
using tessera::test::dot;
using tessera::test::expect_gradient;
using tessera::test::random_vec;
using Vec = tessera::test::Vec;

TEST(GradCheck, Encoder) {
  const int B = 2, T = 3, C = 4, V = 5;
  std::vector<int32_t> tokens = {1, 3, 1, 0, 4, 1};  // token 1 repeats: gradients must add
  Vec wte = random_vec(V * C, 1), wpe = random_vec(T * C, 2), R = random_vec(B * T * C, 3);
  Vec out(B * T * C);
  auto loss = [&] {
    k::encoder_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  Vec dwte(V * C, 0.0), dwpe(T * C, 0.0);
  k::encoder_backward(dwte.data(), dwpe.data(), R.data(), tokens.data(), B, T, C);
  expect_gradient("encoder dwte", wte, dwte, loss);
  expect_gradient("encoder dwpe", wpe, dwpe, loss);
}

TEST(GradCheck, LayerNorm) {
  const int N = 5, C = 7;
  Vec x = random_vec(N * C, 4, 2.0), w = random_vec(C, 5), b = random_vec(C, 6),
      R = random_vec(N * C, 7);
  Vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    k::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(out, R);
  };
  loss();
  Vec dx(N * C, 0.0), dw(C, 0.0), db(C, 0.0);
  k::layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(),
                        rstd.data(), N, C);
  expect_gradient("layernorm dinp", x, dx, loss);
  expect_gradient("layernorm dweight", w, dw, loss);
  expect_gradient("layernorm dbias", b, db, loss);
}

TEST(GradCheck, LayerNormMatchesDefinition) {
  // The forward itself, against the textbook formula.
  const int N = 3, C = 6;
  Vec x = random_vec(N * C, 8), w = random_vec(C, 9), b = random_vec(C, 10);
  Vec out(N * C), mean(N), rstd(N);
  k::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  for (int n = 0; n < N; n++) {
    double m = 0, v = 0;
    for (int c = 0; c < C; c++) m += x[n * C + c] / C;
    for (int c = 0; c < C; c++) v += (x[n * C + c] - m) * (x[n * C + c] - m) / C;
    for (int c = 0; c < C; c++)
      EXPECT_NEAR(out[n * C + c], (x[n * C + c] - m) / std::sqrt(v + 1e-5) * w[c] + b[c], 1e-12);
  }
}

TEST(GradCheck, Matmul) {
  const int N = 4, C = 5, OC = 3;
  Vec x = random_vec(N * C, 11), w = random_vec(OC * C, 12), b = random_vec(OC, 13),
      R = random_vec(N * OC, 14);
  Vec out(N * OC);
  auto loss = [&] {
    k::matmul_forward(out.data(), x.data(), w.data(), b.data(), N, C, OC);
    return dot(out, R);
  };
  loss();
  for (int n = 0; n < N; n++)  // forward against the definition
    for (int o = 0; o < OC; o++) {
      double y = b[o];
      for (int c = 0; c < C; c++) y += x[n * C + c] * w[o * C + c];
      EXPECT_NEAR(out[n * OC + o], y, 1e-12);
    }
  Vec dx(N * C, 0.0), dw(OC * C, 0.0), db(OC, 0.0);
  k::matmul_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), N, C, OC);
  expect_gradient("matmul dinp", x, dx, loss);
  expect_gradient("matmul dweight", w, dw, loss);
  expect_gradient("matmul dbias", b, db, loss);
}

TEST(GradCheck, Attention) {
  const int B = 2, T = 4, C = 6, NH = 2;
  Vec qkv = random_vec(B * T * 3 * C, 15), R = random_vec(B * T * C, 16);
  Vec out(B * T * C), att(B * NH * T * T), scratch(B * NH * T * T);
  auto loss = [&] {
    k::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, R);
  };
  loss();
  // Causality: position 0 attends only to itself.
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++) EXPECT_DOUBLE_EQ(att[((b * NH + h) * T) * T + 0], 1.0);
  Vec dqkv(B * T * 3 * C, 0.0);
  k::attention_backward(dqkv.data(), scratch.data(), R.data(), qkv.data(), att.data(), B, T, C, NH);
  expect_gradient("attention dqkv", qkv, dqkv, loss);
}

TEST(GradCheck, Gelu) {
  const int N = 50;
  Vec x = random_vec(N, 17, 2.0), R = random_vec(N, 18), out(N);
  auto loss = [&] {
    k::gelu_forward(out.data(), x.data(), N);
    return dot(out, R);
  };
  Vec dx(N, 0.0);
  k::gelu_backward(dx.data(), x.data(), R.data(), N);
  expect_gradient("gelu dinp", x, dx, loss);
}

TEST(GradCheck, Residual) {
  const int N = 8;
  Vec a = random_vec(N, 19), b = random_vec(N, 20), out(N);
  k::residual_forward(out.data(), a.data(), b.data(), N);
  for (int i = 0; i < N; i++) EXPECT_DOUBLE_EQ(out[i], a[i] + b[i]);
}

TEST(GradCheck, CrossEntropyPaddedVocab) {
  const int N = 4, V = 5, Vp = 8;
  Vec logits = random_vec(N * Vp, 21, 2.0);
  std::vector<int32_t> targets = {0, 4, 2, 4};
  const double dloss = 0.25;  // as for a mean over N
  Vec losses(N);
  auto loss = [&] {
    k::crossentropy_forward_backward(losses.data(), (double*)nullptr, logits.data(),
                                     targets.data(), 0.0, N, V, Vp);
    double s = 0;
    for (double l : losses) s += l;
    return dloss * s;
  };
  loss();
  for (int n = 0; n < N; n++) {  // forward against -log softmax over the real vocabulary
    double z = 0;
    for (int i = 0; i < V; i++) z += std::exp(logits[n * Vp + i]);
    EXPECT_NEAR(losses[n], std::log(z) - logits[n * Vp + targets[n]], 1e-12);
  }
  Vec dlogits(N * Vp, -1.0);
  k::crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(), targets.data(),
                                   dloss, N, V, Vp);
  for (int n = 0; n < N; n++)
    for (int i = V; i < Vp; i++) EXPECT_EQ(dlogits[n * Vp + i], 0.0) << "padded column " << i;
  expect_gradient("cross-entropy dlogits", logits, dlogits, loss);

  // In place (dlogits aliasing logits) gives the same gradient.
  Vec inplace = logits;
  k::crossentropy_forward_backward(losses.data(), inplace.data(), inplace.data(), targets.data(),
                                   dloss, N, V, Vp);
  for (int i = 0; i < N * Vp; i++) EXPECT_DOUBLE_EQ(inplace[i], dlogits[i]);
}

TEST(Kernels, AdamWMatchesScalarFormula) {
  const int n = 10;
  Vec p = random_vec(n, 22), g = random_vec(n, 23), m(n, 0.0), v(n, 0.0);
  Vec p_ref = p, m_ref = m, v_ref = v;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  for (int t = 1; t <= 3; t++) {
    k::adamw_update(p.data(), g.data(), m.data(), v.data(), n, (float)lr, (float)b1, (float)b2,
                    (float)eps, (float)wd, t);
    for (int i = 0; i < n; i++) {
      m_ref[i] = b1 * m_ref[i] + (1 - b1) * g[i];
      v_ref[i] = b2 * v_ref[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m_ref[i] / (1 - std::pow(b1, t)), vhat = v_ref[i] / (1 - std::pow(b2, t));
      p_ref[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * p_ref[i]);
    }
  }
  // The kernel takes hyperparameters as float, so agreement is to float precision.
  for (int i = 0; i < n; i++) EXPECT_NEAR(p[i], p_ref[i], 1e-7) << i;
}

TEST(Kernels, SumSquares) {
  Vec x = {1, -2, 3};
  EXPECT_DOUBLE_EQ(k::sum_squares(x.data(), 3), 14.0);
}

TEST(Kernels, AdamWGradScaleEqualsScaledGradient) {
  // Clipping is folded into the update: grad_scale * g must act exactly like the scaled g.
  const int n = 8;
  std::vector<float> p1(n), p2, g(n), g_scaled(n), m1(n, 0), v1(n, 0), m2(n, 0), v2(n, 0);
  for (int i = 0; i < n; i++) {
    p1[i] = 0.1f * (float)i - 0.3f;
    g[i] = 0.5f - 0.07f * (float)i;
    g_scaled[i] = 0.25f * g[i];
  }
  p2 = p1;
  k::adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1,
                  0.25f);
  k::adamw_update(p2.data(), g_scaled.data(), m2.data(), v2.data(), n, 1e-2f, 0.9f, 0.95f, 1e-8f,
                  0.1f, 1);
  for (int i = 0; i < n; i++) EXPECT_FLOAT_EQ(p1[i], p2[i]);
}

TEST(Kernels, AdamWCopyEqualsTheRoundedUpdateAtAnyAlignment) {
  // adamw_update_with_copy streams the copy in aligned blocks, with ordinary stores for the
  // unaligned head and the tail: every element, at every offset of the copy, must be the
  // 16-bit rounding of the parameter that adamw_update computes, which must be unchanged.
  const int n = 5000;  // several 1024-element blocks and a ragged tail
  for (k::Dtype dt : {k::Dtype::bf16, k::Dtype::fp16})
    for (int offset : {0, 1, 7, 31}) {
      std::vector<float> p(n), g(n), m(n, 0.01f), v(n, 1e-4f);
      for (int i = 0; i < n; i++) p[i] = 0.37f * std::sin(0.1f * i), g[i] = 0.2f * std::cos(0.3f * i);
      std::vector<float> p_ref = p, m_ref = m, v_ref = v;
      std::vector<uint16_t> copy(n + 64, 0xABCD);
      uint16_t* c = copy.data() + offset;
      k::adamw_update_with_copy(p.data(), g.data(), m.data(), v.data(), n, 1e-2f, 0.9f, 0.95f,
                                1e-8f, 0.1f, 2, 0.5f, c, dt);
      k::adamw_update(p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, 1e-2f, 0.9f, 0.95f,
                      1e-8f, 0.1f, 2, 0.5f);
      for (int i = 0; i < n; i++) {
        ASSERT_EQ(p[i], p_ref[i]) << i;
        ASSERT_EQ(m[i], m_ref[i]) << i;
        ASSERT_EQ(v[i], v_ref[i]) << i;
        const uint16_t want =
            dt == k::Dtype::bf16 ? k::fp32_to_bf16(p[i]).bits : k::fp32_to_fp16(p[i]).bits;
        ASSERT_EQ(c[i], want) << "offset " << offset << " element " << i;
      }
      for (int i = 0; i < offset; i++) EXPECT_EQ(copy[i], 0xABCD);  // nothing written outside
      for (int i = offset + n; i < n + 64; i++) EXPECT_EQ(copy[i], 0xABCD);
    }
}

TEST(Kernels, VectorisedExpAndTanhMatchLibm) {
  // kernels/cpu/vector_math.h's float exp/tanh (used by softmax and GELU) against libm.
  double worst_exp = 0, worst_tanh = 0;
  for (float x = -80.0f; x < 80.0f; x += 0.01337f) {
    const double ref = std::exp((double)x);
    worst_exp = std::max(worst_exp, std::abs((double)k::vexp(x) - ref) / ref);
  }
  for (float x = -12.0f; x < 12.0f; x += 0.000913f) {
    const double ref = std::tanh((double)x);
    worst_tanh = std::max(worst_tanh, std::abs((double)k::vtanh(x) - ref) /
                                          std::max(std::abs(ref), 1e-30));
  }
  EXPECT_LT(worst_exp, 3e-7);   // about 2 float ulp
  EXPECT_LT(worst_tanh, 5e-7);
  EXPECT_EQ(k::vexp(-100.0f), 0.0f);
}
