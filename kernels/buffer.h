// Memory that knows its device: the buffers the model and optimizer hold (parameters,
// gradients, 16-bit copies, activation arenas, optimizer moments). CPU memory is built
// here; device memory comes from the backend that owns the device (kernels/cuda), which
// installs its allocator (install_device_memory) before it allocates its first buffer,
// so that this library needs no CUDA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

namespace tessera::kernels {

enum class Device { cpu, cuda };
const char* to_string(Device device);

// Large buffers go on transparent huge pages (2 MiB) unless asked not to: fewer TLB
// misses in the passes and a faster gradient all-reduce.
enum class Pages { huge_when_large, normal };

// How a device's backend allocates zeroed memory there and frees it.
struct DeviceMemory {
  void* (*allocate_zeroed)(std::size_t bytes) = nullptr;
  void (*release)(void* p) = nullptr;
};
// Makes Buffer<T>::allocate(n, device) use `memory` (device must not be cpu).
void install_device_memory(Device device, DeviceMemory memory);

namespace buffer_detail {
// Zeroed bytes on `device`, 64-byte aligned; with huge_when_large, buffers of 4 MiB or
// more are 2 MiB aligned and advised onto huge pages before their first touch (the
// memset), so they are backed by huge pages from the start. Sets *alignment. Throws
// tessera::Error when out of memory, or for a device whose backend installed no allocator.
void* allocate_zeroed(std::size_t bytes, Device device, Pages pages, std::size_t* alignment);
void release(void* p, Device device);
}  // namespace buffer_detail

// A move-only buffer of `size()` elements of T on `device()`: either owned (allocate:
// zeroed, freed with the buffer) or a view of memory someone else owns and frees (wrap:
// e.g. the data-parallel communicator's shared memory holding the gradients).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  static Buffer allocate(int64_t count, Device device = Device::cpu,
                         Pages pages = Pages::huge_when_large) {
    Buffer b;
    b.data_ = static_cast<T*>(buffer_detail::allocate_zeroed(sizeof(T) * (std::size_t)count, device,
                                                             pages, &b.alignment_));
    b.size_ = count, b.device_ = device, b.owned_ = true;
    return b;
  }
  static Buffer wrap(T* data, int64_t count, Device device = Device::cpu) {
    Buffer b;
    b.data_ = data, b.size_ = count, b.device_ = device, b.owned_ = false;
    return b;
  }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(data_, o.data_), std::swap(size_, o.size_), std::swap(device_, o.device_);
      std::swap(owned_, o.owned_), std::swap(alignment_, o.alignment_);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  T* data() { return data_; }
  const T* data() const { return data_; }
  // The unique_ptr spelling, constness included (a const buffer's elements stay
  // writable through it), for code that held one.
  T* get() const { return data_; }
  int64_t size() const { return size_; }
  Device device() const { return device_; }
  bool owned() const { return owned_; }
  std::size_t alignment() const { return alignment_; }  // of an owned buffer; 0 otherwise
  explicit operator bool() const { return data_ != nullptr; }

 private:
  void reset() {
    if (owned_ && data_) buffer_detail::release(data_, device_);
    data_ = nullptr, size_ = 0, owned_ = false, alignment_ = 0;
  }
  T* data_ = nullptr;
  int64_t size_ = 0;
  Device device_ = Device::cpu;
  bool owned_ = false;
  std::size_t alignment_ = 0;
};

}  // namespace tessera::kernels
