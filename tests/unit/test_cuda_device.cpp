// The CUDA backend's view of the machine. No machine of this project has a GPU: these
// tests check what can be checked without one (versions, a clear "why not") and skip the
// GPU-only assertions, saying why.
//
// unit_tests does not see the TESSERA_HAVE_CUDA definition unless it links
// tessera_kernels_cuda itself, so the first test goes through SystemInfo (whose CUDA
// fields are filled in by the framework, which does see it); the second calls
// cuda_status() directly when the definition is visible.
#include <string>

#include <gtest/gtest.h>

#include "framework/util/system_info.h"
#ifdef TESSERA_HAVE_CUDA
#include "kernels/cuda/device.h"
#endif

namespace {

std::string strip_prefix(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0 ? s.substr(prefix.size()) : s;
}

TEST(CudaDevice, SystemInfoReportsDevicesOrWhyNot) {
  const auto info = tessera::collect_system_info();
  if (!info.cuda_built) GTEST_SKIP() << "built without CUDA: " << info.cuda_reason;
  EXPECT_GT(info.cuda_runtime_version, 0);
  EXPECT_GT(info.cublaslt_version, 0);  // cublasLtGetVersion works without a GPU
  if (!info.cuda_available) {
    EXPECT_FALSE(info.cuda_reason.empty());
    EXPECT_TRUE(info.gpus.empty());
    GTEST_SKIP() << "no CUDA device: " << strip_prefix(info.cuda_reason, "no GPU: ");
  }
  ASSERT_FALSE(info.gpus.empty());
  for (const auto& g : info.gpus) {
    EXPECT_FALSE(g.name.empty());
    EXPECT_GE(g.major, 7) << g.name << ": CUDA 13 needs sm_75 or newer";
    EXPECT_GT(g.memory_bytes, 0u) << g.name;
  }
}

#ifdef TESSERA_HAVE_CUDA
TEST(CudaDevice, CudaStatusDirect) {
  const auto status = tessera::cuda::cuda_status();
  EXPECT_GT(status.runtime_version, 0);
  EXPECT_GT(status.cublaslt_version, 0);
  if (!status.available) {
    EXPECT_FALSE(status.reason.empty());
    EXPECT_TRUE(status.devices.empty());
    GTEST_SKIP() << "no CUDA device: " << status.reason;
  }
  EXPECT_TRUE(status.reason.empty()) << status.reason;
  ASSERT_FALSE(status.devices.empty());
  for (size_t i = 0; i < status.devices.size(); ++i) {
    const auto& d = status.devices[i];
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.major, 7) << d.name;
    EXPECT_GT(d.memory_bytes, 0u) << d.name;
  }
}
#endif

}  // namespace
