#include "kernels/buffer.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "base/error.h"

namespace tessera::kernels {
namespace {

TEST(Buffer, AllocatesZeroedAndAligned) {
  auto small = Buffer<float>::allocate(1000);
  EXPECT_TRUE(small.owned());
  EXPECT_EQ(small.size(), 1000);
  EXPECT_EQ(small.device(), Device::cpu);
  EXPECT_EQ(small.alignment(), 64u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % 64, 0u);
  for (int64_t i = 0; i < small.size(); i++) ASSERT_EQ(small.data()[i], 0.0f);
  // 4 MiB and more: on 2 MiB boundaries for huge pages, unless asked for ordinary pages.
  auto large = Buffer<float>::allocate(1 << 20);
  EXPECT_EQ(large.alignment(), size_t{2} << 20);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(large.data()) % (size_t{2} << 20), 0u);
  auto plain = Buffer<uint16_t>::allocate(1 << 22, Device::cpu, Pages::normal);
  EXPECT_EQ(plain.alignment(), 64u);
  auto empty = Buffer<float>::allocate(0);
  EXPECT_TRUE(empty);
  EXPECT_EQ(empty.size(), 0);
}

TEST(Buffer, MovesOwnershipAndWrapsForeignMemory) {
  auto a = Buffer<float>::allocate(16);
  float* p = a.data();
  Buffer<float> b = std::move(a);
  EXPECT_EQ(b.data(), p);
  EXPECT_FALSE(a);
  float foreign[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  {
    auto view = Buffer<float>::wrap(foreign, 8);
    EXPECT_FALSE(view.owned());
    EXPECT_EQ(view.data()[7], 8.0f);
    b = std::move(view);  // frees b's own memory, takes the view
  }
  EXPECT_EQ(b.data(), foreign);  // the view's end freed nothing
  EXPECT_EQ(foreign[0], 1.0f);
}

// Device memory comes from the allocator its backend installs; before that, a clear error.
int g_device_allocations = 0, g_device_releases = 0;
void* fake_device_allocate(std::size_t bytes) {
  g_device_allocations++;
  return std::calloc(1, bytes);
}
void fake_device_release(void* p) {
  g_device_releases++;
  std::free(p);
}

TEST(Buffer, DeviceMemoryComesFromTheInstalledAllocator) {
  try {
    (void)Buffer<float>::allocate(4, Device::cuda);
    FAIL() << "a CUDA buffer without a CUDA backend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("before the CUDA backend was set up"), std::string::npos)
        << e.what();
  }
  install_device_memory(Device::cuda, {fake_device_allocate, fake_device_release});
  {
    auto b = Buffer<float>::allocate(4, Device::cuda);
    EXPECT_EQ(b.device(), Device::cuda);
    EXPECT_EQ(g_device_allocations, 1);
    EXPECT_EQ(g_device_releases, 0);
  }
  EXPECT_EQ(g_device_releases, 1);
  install_device_memory(Device::cuda, {});  // as before, for the tests after this one
  EXPECT_THROW(install_device_memory(Device::cpu, {}), Error);
  EXPECT_STREQ(to_string(Device::cuda), "cuda");
}

}  // namespace
}  // namespace tessera::kernels
