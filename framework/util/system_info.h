// What this machine and this binary are: CPU model and instruction-set features, the
// features the binary was compiled for, OpenMP threads, BLAS, MPI, CUDA, and the versions
// of the libraries Tessera was built with.
//
// `tessera doctor` prints all of it; the run log records the versions; and
// check_cpu_supports_build() turns "binary built with -march=native on a newer node"
// from a SIGILL deep inside a kernel into one line the user can act on.
#pragma once
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace tessera {

// The Tessera version every run log and report carries.
inline constexpr const char* kTesseraVersion = "0.1.0";

// The x86 instruction-set features Tessera's CPU kernels care about. On other
// architectures every field is false.
struct IsaFeatures {
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512_bf16 = false;  // vdpbf16ps: bf16 dot products
  bool amx = false;          // AMX-TILE and AMX-BF16, and the OS enables the tile state
};

// What the running CPU (and operating system) supports.
IsaFeatures cpu_isa_features();
// What this binary was compiled for (the __AVX512F__ etc. macros, set by -march=native).
IsaFeatures compiled_isa_features();
// Flag names ("avx2", "avx512f", ...) of the features set in f, in a fixed order.
std::vector<std::string> isa_feature_names(const IsaFeatures& f);
// Flag names of the features set in `compiled` but not in `cpu`.
std::vector<std::string> missing_isa_features(const IsaFeatures& cpu, const IsaFeatures& compiled);

// Throws tessera::Error naming every feature the binary was compiled for that the CPU
// lacks, e.g. "this binary was compiled with -march=native for a CPU with AVX-512
// (avx512f); this CPU lacks it: rebuild with TESSERA_NATIVE=OFF or on this node".
void check_cpu_supports_build(const IsaFeatures& cpu, const IsaFeatures& compiled);
// The same for this CPU and this binary. Call it first thing in main(), before any
// kernel runs.
void check_cpu_supports_build();

struct GpuInfo {
  int index = 0;
  std::string name;
  int major = 0;  // compute capability
  int minor = 0;
  size_t memory_bytes = 0;
};

struct SystemInfo {
  std::string host;
  std::string cpu_model;        // "model name" from /proc/cpuinfo, or "unknown"
  int logical_cores = 0;        // online logical CPUs of the machine
  int affinity_cores = 0;       // logical CPUs this process may run on (Slurm, taskset)
  IsaFeatures cpu_features;     // what the CPU supports
  IsaFeatures compiled_features;  // what the binary was compiled for
  std::string build_check;      // "ok" or the message check_cpu_supports_build throws

  int omp_max_threads = 0;      // omp_get_max_threads()

  std::string blas_config;      // openblas_get_config(), e.g. "OpenBLAS 0.3.21 ...", or
                                // "not built with BLAS" (BLAS is optional)
  std::string blas_corename;    // openblas_get_corename(), e.g. "Haswell"
  std::string gemm_engine;      // Tessera's fp32 GEMM: "avx512-8x48" or "portable"
  std::string bf16_gemm_engine; // its bf16 GEMM (run-time dispatch): "avx512bf16-8x48" or
                                // "portable" (no AVX-512 BF16, or TESSERA_BF16_ENGINE)
  // Environment variables that change threading or kernel choice; "(unset)" if unset.
  std::map<std::string, std::string> env;

  bool mpi_initialized = false;
  std::string mpi_library_version;  // MPI_Get_library_version (allowed before MPI_Init)

  bool cuda_built = false;      // compiled with the CUDA backend (TESSERA_HAVE_CUDA)
  bool cuda_available = false;  // at least one GPU usable
  std::string cuda_reason;      // why not available: "no GPU: <CUDA error text>", or
                                // "built without CUDA"; empty when available
  int cuda_runtime_version = 0; // e.g. 13000; 0 when built without CUDA
  int cublaslt_version = 0;     // e.g. 130100; 0 when built without CUDA
  std::vector<GpuInfo> gpus;

  nlohmann::json versions;      // software_versions(), with the MPI version filled in
};

// Gathers everything above. Never throws: what cannot be found reads "unknown".
SystemInfo collect_system_info();

// The versions a run log records: {"tessera", "compiler", "mpi", "yaml_cpp", "eigen",
// "nlohmann_json", "openblas"} plus {"cuda_runtime", "cublaslt"} in CUDA builds. "mpi"
// reads "not initialized" unless MPI_Init has run (and MPI_Finalize has not).
nlohmann::json software_versions();

// This machine's host name, or "unknown".
std::string host_name();

// SystemInfo as JSON (what `tessera doctor --json` prints).
nlohmann::json to_json(const SystemInfo& info);
// SystemInfo as the readable report `tessera doctor` prints.
std::string format_report(const SystemInfo& info);

}  // namespace tessera
