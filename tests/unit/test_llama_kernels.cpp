// The Llama family's ops (RMSNorm, rotary embeddings, SwiGLU, grouped-query attention):
// backward passes against finite differences (gradcheck.h), forward passes against their
// definitions written out independently here, and GQA against multi-head attention on
// repeated key/value heads.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <vector>

#include "kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace k = tessera::kernels;
using tessera::test::dot;
using tessera::test::expect_gradient;
using tessera::test::random_vec;
using Vec = tessera::test::Vec;

TEST(LlamaKernels, RmsNormForwardIsItsDefinitionAndBackwardMatchesFiniteDifferences) {
  const int N = 3, C = 8;
  const float eps = 1e-5f;
  Vec x = random_vec(N * C, 1), w = random_vec(C, 2), R = random_vec(N * C, 3);
  Vec out(N * C), rstd(N);
  k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  for (int n = 0; n < N; n++) {
    double ms = 0;
    for (int c = 0; c < C; c++) ms += x[n * C + c] * x[n * C + c] / C;
    for (int c = 0; c < C; c++)
      EXPECT_NEAR(out[n * C + c], x[n * C + c] / std::sqrt(ms + (double)eps) * w[c], 1e-12);
  }
  auto loss = [&] {
    k::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    return dot(out, R);
  };
  loss();
  Vec dx(N * C, 0.0), dw(C, 0.0);
  k::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  expect_gradient("rmsnorm dinp", x, dx, loss);
  expect_gradient("rmsnorm dweight", w, dw, loss);
}

TEST(LlamaKernels, RopeRotatesHalvesByThePositionsAngleEvenFarFromZero) {
  // One row at position t of a table for 5000 positions: the rotation of (x[i], x[i+HS/2])
  // by t * theta^(-2i/HS), with the angle in double (at t = 4321 an fp32 angle would be
  // off by ~1e-4 rad).
  const int T = 5000, HS = 16, half = HS / 2, heads = 3, stride = heads * HS + 5;
  const double theta = 10000.0;
  Vec cos_t((size_t)T * half), sin_t((size_t)T * half);
  k::rope_table(cos_t.data(), sin_t.data(), T, HS, theta);
  for (int t : {0, 1, 777, 4321, T - 1}) {
    Vec x = random_vec(stride, 10 + t), want = x;
    for (int h = 0; h < heads; h++)
      for (int i = 0; i < half; i++) {
        const double a = t * std::pow(theta, -2.0 * i / HS);
        const double x1 = x[h * HS + i], x2 = x[h * HS + i + half];
        want[h * HS + i] = x1 * std::cos(a) - x2 * std::sin(a);
        want[h * HS + i + half] = x2 * std::cos(a) + x1 * std::sin(a);
      }
    // A batch of one sequence whose rows 0..t-1 we do not look at: rope the row at t alone
    // by pointing the tables at position t.
    k::rope_forward(x.data(), cos_t.data() + (size_t)t * half, sin_t.data() + (size_t)t * half, 1,
                    1, heads, HS, stride);
    for (int j = 0; j < stride; j++) EXPECT_NEAR(x[j], want[j], 1e-12) << "t " << t << " j " << j;
  }
}

TEST(LlamaKernels, RopeBackwardMatchesFiniteDifferencesAndInvertsTheForward) {
  const int B = 2, T = 5, HS = 8, heads = 3, stride = 4 * HS;  // a 4th head is left alone
  Vec cos_t(T * HS / 2), sin_t(T * HS / 2);
  k::rope_table(cos_t.data(), sin_t.data(), T, HS, 500.0);
  Vec x = random_vec(B * T * stride, 4), R = random_vec(B * T * stride, 5), y;
  auto loss = [&] {
    y = x;
    k::rope_forward(y.data(), cos_t.data(), sin_t.data(), B, T, heads, HS, stride);
    return dot(y, R);
  };
  loss();
  for (int n = 0; n < B * T; n++)  // columns past the rotated heads are untouched
    for (int j = heads * HS; j < stride; j++) EXPECT_EQ(y[n * stride + j], x[n * stride + j]);
  Vec dx = R;
  k::rope_backward(dx.data(), cos_t.data(), sin_t.data(), B, T, heads, HS, stride);
  expect_gradient("rope dx", x, dx, loss);
  loss();  // y of x itself again (the finite differences left it at a perturbed x)
  Vec back = y;  // backward applied to the output gives the input back
  k::rope_backward(back.data(), cos_t.data(), sin_t.data(), B, T, heads, HS, stride);
  for (size_t i = 0; i < x.size(); i++) EXPECT_NEAR(back[i], x[i], 1e-12);
}

TEST(LlamaKernels, SwigluForwardIsItsDefinitionAndBackwardMatchesFiniteDifferences) {
  const int N = 24;
  Vec gate = random_vec(N, 6, 2.0), up = random_vec(N, 60), R = random_vec(N, 7), out(N);
  k::swiglu_forward(out.data(), gate.data(), up.data(), N);
  for (int i = 0; i < N; i++) EXPECT_NEAR(out[i], gate[i] / (1 + std::exp(-gate[i])) * up[i], 1e-12);
  auto loss = [&] {
    k::swiglu_forward(out.data(), gate.data(), up.data(), N);
    return dot(out, R);
  };
  Vec dgate(N, 0.0), dup(N, 0.0);
  k::swiglu_backward(dgate.data(), dup.data(), gate.data(), up.data(), R.data(), N);
  expect_gradient("swiglu dgate", gate, dgate, loss);
  expect_gradient("swiglu dup", up, dup, loss);
}

namespace {
// Grouped-query attention on packed rows [q heads | k heads | v heads] of (NH + 2 NKV) HS.
template <typename T>
void gqa_forward(std::vector<T>& out, std::vector<T>& att, const std::vector<T>& qkv, int B, int T_,
                 int NH, int NKV, int HS) {
  const int row = (NH + 2 * NKV) * HS, C = NH * HS;
  k::gqa_attention_forward(out.data(), att.data(), qkv.data(), qkv.data() + C,
                           qkv.data() + C + NKV * HS, B, T_, NH, NKV, HS, row, row);
}
template <typename T>
void gqa_backward(std::vector<T>& dqkv, std::vector<T>& scratch, const std::vector<T>& dout,
                  const std::vector<T>& qkv, const std::vector<T>& att, int B, int T_, int NH,
                  int NKV, int HS) {
  const int row = (NH + 2 * NKV) * HS, C = NH * HS;
  k::gqa_attention_backward(dqkv.data(), dqkv.data() + C, dqkv.data() + C + NKV * HS,
                            scratch.data(), dout.data(), qkv.data(), qkv.data() + C,
                            qkv.data() + C + NKV * HS, att.data(), B, T_, NH, NKV, HS, row, row);
}

// qkv [B, T, (NH + 2 NKV) HS] of grouped-query attention -> qkv [B, T, 3 NH HS] of
// multi-head attention with each key/value head repeated for its group's query heads.
Vec repeat_kv(const Vec& qkv, int N, int NH, int NKV, int HS) {
  const int row = (NH + 2 * NKV) * HS, group = NH / NKV;
  Vec full((size_t)N * 3 * NH * HS);
  for (int n = 0; n < N; n++)
    for (int part = 0; part < 3; part++)
      for (int h = 0; h < NH; h++)
        for (int i = 0; i < HS; i++) {
          const int src = part == 0 ? h * HS + i : (NH + (part - 1) * NKV + h / group) * HS + i;
          full[(size_t)n * 3 * NH * HS + (part * NH + h) * HS + i] = qkv[(size_t)n * row + src];
        }
  return full;
}
}  // namespace

TEST(LlamaKernels, GqaAttentionEqualsMultiHeadAttentionOnRepeatedKeysAndValues) {
  const int B = 2, T = 5, NH = 4, HS = 3;
  for (int NKV : {1, 2, 4}) {
    const int row = (NH + 2 * NKV) * HS, C = NH * HS;
    Vec qkv = random_vec(B * T * row, 8 + NKV), R = random_vec(B * T * C, 9);
    Vec out(B * T * C), att(B * NH * T * T), scratch(B * NH * T * T);
    gqa_forward(out, att, qkv, B, T, NH, NKV, HS);
    const Vec full = repeat_kv(qkv, B * T, NH, NKV, HS);
    Vec out_full(B * T * C), att_full(B * NH * T * T);
    k::attention_forward(out_full.data(), att_full.data(), full.data(), B, T, C, NH);
    for (size_t i = 0; i < out.size(); i++) EXPECT_NEAR(out[i], out_full[i], 1e-13) << NKV;
    // Backward: dq equal; dk, dv of a shared head = the sum over its group's copies.
    Vec dqkv(B * T * row, 0.0), dfull(B * T * 3 * C, 0.0);
    gqa_backward(dqkv, scratch, R, qkv, att, B, T, NH, NKV, HS);
    k::attention_backward(dfull.data(), scratch.data(), R.data(), full.data(), att_full.data(), B,
                          T, C, NH);
    const int group = NH / NKV;
    for (int n = 0; n < B * T; n++)
      for (int col = 0; col < row; col++) {
        double want = 0;
        if (col < C) {
          want = dfull[(size_t)n * 3 * C + col];
        } else {
          const int part = (col - C) / (NKV * HS), kvh = (col - C) % (NKV * HS) / HS, i = col % HS;
          for (int h = kvh * group; h < (kvh + 1) * group; h++)
            want += dfull[(size_t)n * 3 * C + (1 + part) * C + h * HS + i];
        }
        EXPECT_NEAR(dqkv[(size_t)n * row + col], want, 1e-12) << "NKV " << NKV << " col " << col;
      }
  }
}

TEST(LlamaKernels, GqaAttentionBackwardMatchesFiniteDifferences) {
  const int B = 2, T = 4, NH = 4, NKV = 2, HS = 3, row = (NH + 2 * NKV) * HS, C = NH * HS;
  Vec qkv = random_vec(B * T * row, 11), R = random_vec(B * T * C, 12);
  Vec out(B * T * C), att(B * NH * T * T), scratch(B * NH * T * T);
  auto loss = [&] {
    gqa_forward(out, att, qkv, B, T, NH, NKV, HS);
    return dot(out, R);
  };
  loss();
  Vec dqkv(B * T * row, 0.0);
  gqa_backward(dqkv, scratch, R, qkv, att, B, T, NH, NKV, HS);
  expect_gradient("gqa attention dqkv", qkv, dqkv, loss);
}

TEST(LlamaKernels, GqaAttentionBackwardIsTheSameOnOneThreadAndTwo) {
  // T > 128: several blocks of key rows, taken by the threads in any order; each block's
  // sum over the group's query heads runs in a fixed order, so the bits must not change.
  const int B = 1, T = 300, NH = 4, NKV = 1, HS = 8, row = (NH + 2 * NKV) * HS, C = NH * HS;
  std::vector<float> qkv(B * T * row), dout(B * T * C), out(B * T * C), att(B * NH * T * T),
      scratch(att.size());
  const Vec q = random_vec(qkv.size(), 13), d = random_vec(dout.size(), 14);
  for (size_t i = 0; i < qkv.size(); i++) qkv[i] = (float)q[i];
  for (size_t i = 0; i < dout.size(); i++) dout[i] = (float)d[i];
  gqa_forward(out, att, qkv, B, T, NH, NKV, HS);
  std::vector<std::vector<float>> grads;
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    std::vector<float> dqkv(qkv.size(), 0.0f);
    gqa_backward(dqkv, scratch, dout, qkv, att, B, T, NH, NKV, HS);
    grads.push_back(dqkv);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(grads[0], grads[1]);
  double norm = 0;
  for (float g : grads[0]) norm += (double)g * g;
  EXPECT_GT(norm, 0.0);
}
