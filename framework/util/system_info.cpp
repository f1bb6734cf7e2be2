// collect_system_info() and friends: see system_info.h.
#include "framework/util/system_info.h"

#include <dlfcn.h>
// Only the C API of MPI is used: skip the deprecated C++ bindings mpi.h would pull in.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <yaml-cpp/yaml.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define TESSERA_X86 1
#endif

// Eigen's version macros live in this one small header. Eigen is not on the framework's
// include path (the kernels link it privately), but its Debian/upstream install puts it
// under <prefix>/include/eigen3, so try both spellings.
#if __has_include(<Eigen/src/Core/util/Macros.h>)
#include <Eigen/src/Core/util/Macros.h>
#elif __has_include(<eigen3/Eigen/src/Core/util/Macros.h>)
#include <eigen3/Eigen/src/Core/util/Macros.h>
#endif

#ifdef TESSERA_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

#include "base/error.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemm_bf16.h"

// OpenBLAS's own introspection, the only use of BLAS in Tessera (its GEMMs are its own),
// so BLAS is optional: without it the report says so. Declared here rather than by
// including <cblas.h> because these two are all we need. BLAS::BLAS is OpenBLAS
// (BLA_VENDOR=OpenBLAS in the top CMakeLists.txt); both variants of the Debian library
// (pthreads, OpenMP) export them.
#ifdef TESSERA_HAVE_BLAS
extern "C" char* openblas_get_config(void);
extern "C" char* openblas_get_corename(void);
#endif

namespace tessera {

// ---------------------------------------------------------------------------------------
// Instruction-set features

namespace {

#ifdef TESSERA_X86
// XCR0: which register states the operating system saves on context switches. A CPU
// feature is only usable when the OS enables its state (AMX needs bits 17 and 18).
uint64_t read_xcr0() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
  if (!(ecx & (1u << 27))) return 0;  // OSXSAVE: without it xgetbv would fault
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (uint64_t(hi) << 32) | lo;
}
#endif

}  // namespace

IsaFeatures cpu_isa_features() {
  IsaFeatures f;
#ifdef TESSERA_X86
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the OS saves the AVX / AVX-512 state.
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  // AVX512_BF16 and AMX are not known to every compiler's __builtin_cpu_supports: ask
  // cpuid leaf 7 directly.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) {
    f.avx512_bf16 = f.avx512f && (eax & (1u << 5));
  }
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    const bool amx_bf16 = edx & (1u << 22);
    const bool amx_tile = edx & (1u << 24);
    const uint64_t amx_state = (1ull << 17) | (1ull << 18);  // XTILECFG, XTILEDATA
    f.amx = amx_bf16 && amx_tile && (read_xcr0() & amx_state) == amx_state;
  }
#endif
  return f;
}

IsaFeatures compiled_isa_features() {
  IsaFeatures f;
#ifdef __AVX2__
  f.avx2 = true;
#endif
#ifdef __FMA__
  f.fma = true;
#endif
#ifdef __AVX512F__
  f.avx512f = true;
#endif
#ifdef __AVX512BW__
  f.avx512bw = true;
#endif
#ifdef __AVX512VL__
  f.avx512vl = true;
#endif
#ifdef __AVX512BF16__
  f.avx512_bf16 = true;
#endif
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
  f.amx = true;
#endif
  return f;
}

namespace {

// One row per feature: its flag name, how a user would say it, and the field.
struct FeatureRow {
  const char* flag;
  const char* words;
  bool IsaFeatures::*field;
};

constexpr FeatureRow kFeatures[] = {
    {"avx2", "AVX2", &IsaFeatures::avx2},
    {"fma", "FMA", &IsaFeatures::fma},
    {"avx512f", "AVX-512", &IsaFeatures::avx512f},
    {"avx512bw", "AVX-512 BW", &IsaFeatures::avx512bw},
    {"avx512vl", "AVX-512 VL", &IsaFeatures::avx512vl},
    {"avx512_bf16", "AVX-512 BF16", &IsaFeatures::avx512_bf16},
    {"amx", "AMX", &IsaFeatures::amx},
};

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? sep : "") + parts[i];
  return out;
}

}  // namespace

std::vector<std::string> isa_feature_names(const IsaFeatures& f) {
  std::vector<std::string> names;
  for (const auto& row : kFeatures)
    if (f.*row.field) names.push_back(row.flag);
  return names;
}

std::vector<std::string> missing_isa_features(const IsaFeatures& cpu,
                                              const IsaFeatures& compiled) {
  std::vector<std::string> missing;
  for (const auto& row : kFeatures)
    if (compiled.*row.field && !(cpu.*row.field)) missing.push_back(row.flag);
  return missing;
}

void check_cpu_supports_build(const IsaFeatures& cpu, const IsaFeatures& compiled) {
  // Keep the common path to a few comparisons: this runs at the very start of main(),
  // and on the wrong CPU nothing compiled with the missing features may run before it.
  std::vector<std::string> described;
  for (const auto& row : kFeatures)
    if (compiled.*row.field && !(cpu.*row.field))
      described.push_back(std::string(row.words) + " (" + row.flag + ")");
  if (described.empty()) return;
  throw Error("this binary was compiled with -march=native for a CPU with " +
              join(described, ", ") + "; this CPU lacks " +
              (described.size() == 1 ? "it" : "them") +
              ": rebuild with TESSERA_NATIVE=OFF or on this node");
}

void check_cpu_supports_build() {
  check_cpu_supports_build(cpu_isa_features(), compiled_isa_features());
}

// ---------------------------------------------------------------------------------------
// Versions

namespace {

std::string trim(std::string s) {
  const char* ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  s.erase(s.find_last_not_of(ws) + 1);
  return s;
}

// MPI_Get_library_version may be called before MPI_Init and after MPI_Finalize (MPI-3).
std::string mpi_library_version() {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  if (MPI_Get_library_version(buf, &len) != MPI_SUCCESS) return "unknown";
  return trim(std::string(buf));
}

bool mpi_is_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

// yaml-cpp 0.7 has no version macro. Unless the build passes one, read the version from
// the file name of the shared library that holds YAML::Load (libyaml-cpp.so.0.7.0): that
// is the library actually loaded, which is what a run log should record.
std::string yaml_cpp_version() {
#ifdef TESSERA_YAML_CPP_VERSION
  return TESSERA_YAML_CPP_VERSION;
#else
  Dl_info info{};
  auto* fn = static_cast<YAML::Node (*)(const std::string&)>(&YAML::Load);
  if (dladdr(reinterpret_cast<void*>(fn), &info) == 0 || info.dli_fname == nullptr)
    return "unknown";
  std::error_code ec;
  auto real = std::filesystem::canonical(info.dli_fname, ec);
  const std::string name = ec ? std::string(info.dli_fname) : real.filename().string();
  const std::string marker = "libyaml-cpp.so.";
  const auto pos = name.find(marker);
  if (pos == std::string::npos) return "unknown (linked statically)";
  return name.substr(pos + marker.size());
#endif
}

std::string eigen_version() {
#ifdef EIGEN_WORLD_VERSION
  return std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) +
         "." + std::to_string(EIGEN_MINOR_VERSION);
#else
  return "unknown";
#endif
}

std::string compiler_version() {
#ifdef TESSERA_CXX_COMPILER
  return TESSERA_CXX_COMPILER;
#else
  return __VERSION__;
#endif
}

std::string c_string_or_unknown(const char* s) { return s ? trim(s) : "unknown"; }

constexpr const char* kNoBlas = "not built with BLAS";

std::string blas_config() {
#ifdef TESSERA_HAVE_BLAS
  return c_string_or_unknown(openblas_get_config());
#else
  return kNoBlas;
#endif
}

// 13000 -> "13.0" (cudaRuntimeGetVersion's 1000 * major + 10 * minor).
std::string cuda_runtime_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}
// 130100 -> "13.1.0" (cuBLASLt's, cuDNN 9's and NCCL's 10000 * major + 100 * minor +
// patch); 0 -> "not found".
std::string library_version_string(int v) {
  if (v == 0) return "not found";
  return std::to_string(v / 10000) + "." + std::to_string((v % 10000) / 100) + "." +
         std::to_string(v % 100);
}

}  // namespace

nlohmann::json software_versions() {
  nlohmann::json v;
  v["tessera"] = kTesseraVersion;
  v["compiler"] = compiler_version();
  v["mpi"] = mpi_is_initialized() ? mpi_library_version() : "not initialized";
  v["yaml_cpp"] = yaml_cpp_version();
  v["eigen"] = eigen_version();
  v["nlohmann_json"] = std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
                       std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
                       std::to_string(NLOHMANN_JSON_VERSION_PATCH);
  v["openblas"] = blas_config();
#ifdef TESSERA_HAVE_CUDA
  const auto cuda = cuda::cuda_status();
  v["cuda_runtime"] = cuda_runtime_string(cuda.runtime_version);
  v["cublaslt"] = library_version_string(cuda.cublaslt_version);
  v["cudnn"] = library_version_string(cuda.cudnn_version);
  v["nccl"] = library_version_string(cuda.nccl_version);
  v["cuda_driver"] = cuda.driver_version ? cuda_runtime_string(cuda.driver_version) : "none";
#endif
  return v;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == '\0') return "unknown";
  return buf;
}

// ---------------------------------------------------------------------------------------
// The whole picture

namespace {

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return trim(line.substr(colon + 1));
    }
  }
  return "unknown";
}

}  // namespace

SystemInfo collect_system_info() {
  SystemInfo info;
  info.host = host_name();
  info.cpu_model = cpu_model_name();
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  info.logical_cores = online > 0 ? static_cast<int>(online) : 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  info.affinity_cores =
      sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : info.logical_cores;

  info.cpu_features = cpu_isa_features();
  info.compiled_features = compiled_isa_features();
  try {
    check_cpu_supports_build(info.cpu_features, info.compiled_features);
    info.build_check = "ok";
  } catch (const Error& e) {
    info.build_check = e.what();
  }

  info.omp_max_threads = omp_get_max_threads();
  info.blas_config = blas_config();
#ifdef TESSERA_HAVE_BLAS
  info.blas_corename = c_string_or_unknown(openblas_get_corename());
#else
  info.blas_corename = kNoBlas;
#endif
  info.gemm_engine = kernels::gemm_engine();
  info.bf16_gemm_engine = kernels::bf16gemm_engine();
  for (const char* name : {"OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                           "OMP_WAIT_POLICY", "CUDA_VISIBLE_DEVICES", "TESSERA_BF16_ENGINE"}) {
    const char* value = std::getenv(name);
    info.env[name] = value ? value : "(unset)";
  }

  info.mpi_initialized = mpi_is_initialized();
  info.mpi_library_version = mpi_library_version();

#ifdef TESSERA_HAVE_CUDA
  info.cuda_built = true;
  const auto cuda = cuda::cuda_status();
  info.cuda_available = cuda.available;
  info.cuda_reason = cuda.available ? "" : "no GPU: " + cuda.reason;
  info.cuda_runtime_version = cuda.runtime_version;
  info.cublaslt_version = cuda.cublaslt_version;
  for (const auto& d : cuda.devices)
    info.gpus.push_back({d.index, d.name, d.major, d.minor, d.memory_bytes});
#else
  info.cuda_reason = "built without CUDA (nvcc was not found when the build was configured)";
#endif

  info.versions = software_versions();
  info.versions["mpi"] = info.mpi_library_version;
  return info;
}

nlohmann::json to_json(const SystemInfo& info) {
  nlohmann::json j;
  j["host"] = info.host;
  j["cpu"] = {{"model", info.cpu_model},
              {"logical_cores", info.logical_cores},
              {"affinity_cores", info.affinity_cores},
              {"features", isa_feature_names(info.cpu_features)},
              {"compiled_for", isa_feature_names(info.compiled_features)},
              {"build_check", info.build_check}};
  j["openmp"] = {{"max_threads", info.omp_max_threads}};
  j["blas"] = {{"config", info.blas_config}, {"corename", info.blas_corename}};
  j["gemm"] = {{"fp32", info.gemm_engine}, {"bf16", info.bf16_gemm_engine}};
  j["env"] = info.env;
  j["mpi"] = {{"initialized", info.mpi_initialized}, {"library", info.mpi_library_version}};
  nlohmann::json gpus = nlohmann::json::array();
  for (const auto& g : info.gpus)
    gpus.push_back({{"index", g.index},
                    {"name", g.name},
                    {"compute_capability", std::to_string(g.major) + "." + std::to_string(g.minor)},
                    {"memory_bytes", g.memory_bytes}});
  j["cuda"] = {{"built", info.cuda_built},
               {"available", info.cuda_available},
               {"reason", info.cuda_reason},
               {"runtime_version", info.cuda_runtime_version},
               {"cublaslt_version", info.cublaslt_version},
               {"gpus", gpus}};
  j["versions"] = info.versions;
  return j;
}

std::string format_report(const SystemInfo& info) {
  std::ostringstream out;
  auto row = [&](const std::string& label, const std::string& value) {
    const size_t width = 22;  // fits the longest label, CUDA_VISIBLE_DEVICES
    out << "  " << label << std::string(label.size() < width ? width - label.size() : 1, ' ')
        << value << "\n";
  };
  auto list = [](const std::vector<std::string>& v) {
    return v.empty() ? std::string("(none)") : join(v, " ");
  };

  out << "Tessera " << kTesseraVersion << " on " << info.host << "\n\nCPU\n";
  row("model", info.cpu_model);
  row("cores", std::to_string(info.logical_cores) + " logical, " +
                   std::to_string(info.affinity_cores) + " available to this process");
  row("features", list(isa_feature_names(info.cpu_features)));
  row("compiled for", list(isa_feature_names(info.compiled_features)));
  row("build check", info.build_check == "ok"
                         ? "ok: this CPU has every feature the binary was compiled for"
                         : "FAILED: " + info.build_check);

  out << "\nThreads and BLAS\n";
  row("OpenMP", std::to_string(info.omp_max_threads) + " max threads");
  row("BLAS", info.blas_config);
  row("BLAS core", info.blas_corename);
  row("GEMM fp32", info.gemm_engine);
  row("GEMM bf16", info.bf16_gemm_engine);
  for (const auto& [name, value] : info.env) row(name, value);

  out << "\nMPI\n";
  row("library", info.mpi_library_version);
  row("initialized", info.mpi_initialized ? "yes" : "no");

  out << "\nCUDA\n";
  if (!info.cuda_built) {
    row("backend", info.cuda_reason);
  } else {
    row("backend", "built with CUDA runtime " + cuda_runtime_string(info.cuda_runtime_version) +
                       ", cuBLASLt " + library_version_string(info.cublaslt_version) + ", cuDNN " +
                       info.versions.value("cudnn", "?") + ", NCCL " +
                       info.versions.value("nccl", "?"));
    row("driver", info.versions.value("cuda_driver", "?"));
    if (!info.cuda_available) row("GPUs", info.cuda_reason);
    for (const auto& g : info.gpus) {
      char mem[32];
      std::snprintf(mem, sizeof mem, "%.1f GiB", double(g.memory_bytes) / (1u << 30));
      row("GPU " + std::to_string(g.index), g.name + ", compute capability " +
                                                std::to_string(g.major) + "." +
                                                std::to_string(g.minor) + ", " + mem);
    }
  }

  out << "\nVersions\n";
  for (const auto& [name, value] : info.versions.items())
    row(name, value.is_string() ? value.get<std::string>() : value.dump());
  return out.str();
}

}  // namespace tessera
