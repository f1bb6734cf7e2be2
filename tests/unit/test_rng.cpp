#include <gtest/gtest.h>

#include <cmath>

#include "framework/model/params.h"
#include "base/rng.h"

using namespace tessera;

TEST(Philox, MatchesRandom123KnownAnswers) {
  // Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
  auto zero = philox4x32({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(zero[0], 0x6627e8d5u);
  EXPECT_EQ(zero[1], 0xe169c58du);
  EXPECT_EQ(zero[2], 0xbc57ac4cu);
  EXPECT_EQ(zero[3], 0x9b00dbd8u);
  auto ones = philox4x32({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                         {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(ones[0], 0x408f276du);
  EXPECT_EQ(ones[1], 0x41c83b0eu);
  EXPECT_EQ(ones[2], 0xa20bc7c6u);
  EXPECT_EQ(ones[3], 0x6d5451fdu);
}

TEST(CounterRng, NormalMomentsAndStreamsDiffer) {
  CounterRng a(1337, "h.0.attn.qkv.weight"), b(1337, "h.1.attn.qkv.weight");
  const int n = 200000;
  double sum = 0, sum2 = 0;
  int same = 0;
  for (int i = 0; i < n; i++) {
    const double x = a.normal(i);
    sum += x;
    sum2 += x * x;
    same += a.normal(i) == b.normal(i);
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum2 / n, 1.0, 0.01);
  EXPECT_LT(same, 5);
}

TEST(CounterRng, SliceGeneratesSameValuesAsWhole) {
  // The property layouts rely on: element i's value depends only on (seed, name, i).
  CounterRng rng(7, "wte.weight");
  std::vector<float> whole(1000);
  for (int i = 0; i < 1000; i++) whole[i] = rng.normal(i);
  CounterRng again(7, "wte.weight");
  for (int i = 600; i < 700; i++) EXPECT_EQ(again.normal(i), whole[i]);
}

TEST(ParamTable, AlignsOffsetsAndInitialises) {
  ParamTable t;
  t.add("a", {3, 5}, Init::Normal, 0.02f, true);
  t.add("b", {7}, Init::Ones, 0, false);
  EXPECT_EQ(t.get("b").offset % 16, 0);
  EXPECT_GE(t.get("b").offset, 15);
  std::vector<float> buf(t.total_numel(), -1.0f);
  init_params(t, 1, buf.data());
  EXPECT_EQ(buf[t.get("b").offset + 6], 1.0f);
  float maxabs = 0;
  for (int i = 0; i < 15; i++) maxabs = std::max(maxabs, std::abs(buf[i]));
  EXPECT_GT(maxabs, 0.0f);
  EXPECT_LT(maxabs, 0.2f);
  EXPECT_THROW(t.get("c"), std::exception);
}
