// SystemInfo and `tessera doctor`: the report is complete, the CPU check names what is
// missing, and doctor's --json output parses.
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "framework/cli/commands/commands.h"
#include "base/error.h"
#include "framework/util/system_info.h"

using nlohmann::json;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(CpuCheck, ThisBinaryRunsOnTheMachineThatBuiltIt) {
  // Tests run where they were built, so every compiled-for feature must be present.
  EXPECT_NO_THROW(tessera::check_cpu_supports_build());
  EXPECT_TRUE(tessera::missing_isa_features(tessera::cpu_isa_features(),
                                            tessera::compiled_isa_features())
                  .empty());
}

TEST(CpuCheck, NamesTheMissingFeature) {
  tessera::IsaFeatures cpu;  // an old CPU: AVX2 and FMA only
  cpu.avx2 = cpu.fma = true;
  tessera::IsaFeatures built = cpu;
  built.avx512f = true;
  try {
    tessera::check_cpu_supports_build(cpu, built);
    FAIL() << "expected tessera::Error";
  } catch (const tessera::Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "this binary was compiled with -march=native for a CPU with AVX-512 "
              "(avx512f); this CPU lacks it: rebuild with TESSERA_NATIVE=OFF or on this "
              "node");
  }
}

TEST(CpuCheck, ListsSeveralMissingFeatures) {
  tessera::IsaFeatures cpu;
  tessera::IsaFeatures built;
  built.avx512f = built.avx512bw = built.avx512_bf16 = true;
  EXPECT_EQ(tessera::missing_isa_features(cpu, built),
            (std::vector<std::string>{"avx512f", "avx512bw", "avx512_bf16"}));
  try {
    tessera::check_cpu_supports_build(cpu, built);
    FAIL() << "expected tessera::Error";
  } catch (const tessera::Error& e) {
    EXPECT_TRUE(contains(e.what(), "AVX-512 (avx512f), AVX-512 BW (avx512bw), "
                                   "AVX-512 BF16 (avx512_bf16); this CPU lacks them"))
        << e.what();
  }
  // A CPU with more than the build asked for is fine.
  EXPECT_NO_THROW(tessera::check_cpu_supports_build(built, cpu));
}

TEST(CpuFeatures, AreConsistent) {
  const auto f = tessera::cpu_isa_features();
  // Every AVX-512 extension implies the foundation; BF16 dot products imply AVX-512.
  if (f.avx512bw || f.avx512vl || f.avx512_bf16) {
    EXPECT_TRUE(f.avx512f);
  }
  if (f.avx512f) {
    EXPECT_TRUE(f.avx2);
  }
}

TEST(SystemInfo, CollectsEveryPart) {
  const auto info = tessera::collect_system_info();
  EXPECT_FALSE(info.host.empty());
  EXPECT_FALSE(info.cpu_model.empty());
  EXPECT_GT(info.logical_cores, 0);
  EXPECT_GT(info.affinity_cores, 0);
  EXPECT_LE(info.affinity_cores, info.logical_cores);
  EXPECT_EQ(info.build_check, "ok");
  EXPECT_GE(info.omp_max_threads, 1);
#ifdef TESSERA_HAVE_BLAS
  EXPECT_TRUE(contains(info.blas_config, "OpenBLAS")) << info.blas_config;
  EXPECT_FALSE(info.blas_corename.empty());
#else
  EXPECT_EQ(info.blas_config, "not built with BLAS");
#endif
  EXPECT_EQ(info.env.count("OPENBLAS_CORETYPE"), 1u);
  EXPECT_FALSE(info.mpi_initialized);  // unit tests never call MPI_Init
  EXPECT_FALSE(info.mpi_library_version.empty());
  EXPECT_NE(info.mpi_library_version, "unknown");
  if (!info.cuda_built) {
    EXPECT_TRUE(contains(info.cuda_reason, "without CUDA")) << info.cuda_reason;
  } else if (!info.cuda_available) {
    EXPECT_EQ(info.cuda_reason.rfind("no GPU: ", 0), 0u) << info.cuda_reason;
    EXPECT_TRUE(info.gpus.empty());
  }
  EXPECT_EQ(info.versions["tessera"], tessera::kTesseraVersion);
  EXPECT_EQ(info.versions["mpi"], info.mpi_library_version);
}

TEST(SystemInfo, SoftwareVersionsNameEveryLibrary) {
  const json v = tessera::software_versions();
  for (const char* key : {"tessera", "compiler", "mpi", "yaml_cpp", "eigen", "nlohmann_json",
                          "openblas"}) {
    ASSERT_TRUE(v.contains(key)) << key;
    EXPECT_TRUE(v[key].is_string()) << key;
    EXPECT_FALSE(v[key].get<std::string>().empty()) << key;
  }
  EXPECT_EQ(v["mpi"], "not initialized");
  EXPECT_NE(v["eigen"], "unknown");  // the version macros were found
}

TEST(SystemInfo, JsonAndReportCoverTheSameGround) {
  const auto info = tessera::collect_system_info();
  const json j = tessera::to_json(info);
  for (const char* key : {"host", "cpu", "openmp", "blas", "env", "mpi", "cuda", "versions"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["cpu"]["features"].is_array());
  EXPECT_TRUE(j["cpu"]["compiled_for"].is_array());
  EXPECT_TRUE(j["cuda"]["gpus"].is_array());

  const std::string report = tessera::format_report(info);
  for (const char* part : {"CPU", "compiled for", "build check", "OpenMP", "BLAS",
                           "OPENBLAS_CORETYPE", "MPI", "CUDA", "Versions"})
    EXPECT_TRUE(contains(report, part)) << part << " missing from:\n" << report;
}

TEST(Doctor, PrintsJsonAndHelp) {
  testing::internal::CaptureStdout();
  const int rc = tessera::cli::cmd_doctor({"--json"});
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  json j;
  ASSERT_NO_THROW(j = json::parse(out)) << out;
  EXPECT_EQ(j["cpu"]["build_check"], "ok");

  testing::internal::CaptureStdout();
  EXPECT_EQ(tessera::cli::cmd_doctor({"--help"}), 0);
  EXPECT_TRUE(contains(testing::internal::GetCapturedStdout(), "usage: tessera doctor"));

  EXPECT_THROW(tessera::cli::cmd_doctor({"--bogus"}), tessera::Error);
}

TEST(Doctor, TextReportFromTheBinary) {
  // End to end through main(): the subcommand is wired up and exits 0 here.
  if (!std::filesystem::exists(TESSERA_BINARY)) GTEST_SKIP() << "no " << TESSERA_BINARY;
  std::FILE* pipe = popen((std::string("'") + TESSERA_BINARY + "' doctor 2>&1").c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(contains(out, "build check")) << out;
  EXPECT_TRUE(contains(out, "Versions")) << out;
}

}  // namespace
