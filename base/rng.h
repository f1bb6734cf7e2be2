// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
//
// A counter-based generator is a pure function of (key, counter): the i-th number of a
// stream can be computed without computing the ones before it. Tessera keys each
// parameter's stream by (seed, logical name) and uses the element's index in the
// logical (unsharded) tensor as the counter, so a rank holding any slice of a tensor
// generates exactly the values the single-process run has there.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace tessera {

// One Philox4x32-10 block: four 32-bit outputs for a 128-bit counter and 64-bit key.
std::array<uint32_t, 4> philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// 64-bit FNV-1a of a string (keys streams by logical tensor name).
uint64_t fnv1a64(std::string_view text);

// A stream of numbers keyed by (seed, name).
class CounterRng {
 public:
  CounterRng(uint64_t seed, std::string_view stream_name);
  // Uniform in (0, 1), from element index i (24 random bits, never 0 or 1).
  float uniform(uint64_t i) const;
  // Standard normal for element index i (Box-Muller on the first two words of block i).
  float normal(uint64_t i) const;

 private:
  std::array<uint32_t, 2> key_;
};

}  // namespace tessera
