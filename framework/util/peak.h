// The speed limits of this process's cores, measured on the spot: fp32 FLOP/s for the MFU,
// memory bandwidth for the kernels that only stream (AdamW).
#pragma once
#include <cstdint>

namespace tessera {

// FLOP/s of a register-resident fused multiply-add loop on the current OpenMP threads
// (widest vectors the build targets: AVX-512 under -march=native on this machine): the
// best 10 ms slice of about `seconds`. MFU = achieved FLOP/s / this.
double measure_fp32_peak_flops(double seconds = 0.2);

// Bytes/s of an in-place triad, a[i] = a[i] + s * b[i], over two fp32 arrays of `n` floats
// (large enough to miss every cache) split over the current OpenMP threads: the best pass
// of about `seconds`, counting 12 bytes per element. In place, as AdamW updates: the line
// written was just read, so no read-for-ownership moves bytes that are not counted
// (STREAM's a = b + s * c has one, and under-reports the bandwidth by up to a quarter).
double measure_triad_bandwidth(int64_t n = int64_t(1) << 25, double seconds = 0.3);

}  // namespace tessera
