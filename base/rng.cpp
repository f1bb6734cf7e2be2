#include "base/rng.h"

#include <cmath>

namespace tessera {

std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  // Round constants and Weyl key increments from the Random123 reference.
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; round++) {
    const uint64_t p0 = (uint64_t)kMul0 * ctr[0];
    const uint64_t p1 = (uint64_t)kMul1 * ctr[2];
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
    key[0] += kWeyl0;
    key[1] += kWeyl1;
  }
  return ctr;
}

uint64_t fnv1a64(std::string_view text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

CounterRng::CounterRng(uint64_t seed, std::string_view stream_name) {
  // The seed goes into the key; the name's hash too, mixed so that nearby seeds and
  // similar names give unrelated streams (Philox's key schedule does the rest).
  const uint64_t name_hash = fnv1a64(stream_name);
  const uint64_t k = seed * 0x9E3779B97F4A7C15ull ^ name_hash;
  key_ = {(uint32_t)k, (uint32_t)(k >> 32)};
}

static float to_unit_open(uint32_t bits) {
  // 24 high bits -> (0, 1): add half an ulp so the result is never 0 (log(0) in Box-Muller).
  return ((float)(bits >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

float CounterRng::uniform(uint64_t i) const {
  const auto r = philox4x32({(uint32_t)i, (uint32_t)(i >> 32), 0, 0}, key_);
  return to_unit_open(r[0]);
}

float CounterRng::normal(uint64_t i) const {
  const auto r = philox4x32({(uint32_t)i, (uint32_t)(i >> 32), 0, 0}, key_);
  const double u1 = to_unit_open(r[0]), u2 = to_unit_open(r[1]);
  return (float)(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace tessera
