// The fp32 speed limit of this process's cores, measured on the spot, for MFU.
#pragma once

namespace tessera {

// FLOP/s of a register-resident fused multiply-add loop on the current OpenMP threads
// (widest vectors the build targets: AVX-512 under -march=native on this machine): the
// best 10 ms slice of about `seconds`. MFU = achieved FLOP/s / this.
double measure_fp32_peak_flops(double seconds = 0.2);

}  // namespace tessera
