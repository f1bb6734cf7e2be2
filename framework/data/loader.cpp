// DataLoader: samples from memory-mapped llm.c token shards (contract in loader.h).
//
// Vocabulary of this file:
//   token offset  position in the concatenation of all shards, 0..num_tokens-1
//   sample s      the window of T+1 tokens starting at token offset s*T
//   order k       the k-th sample of the global order, k = 0, 1, 2, ... forever:
//                 epoch k / S, and within it the (k % S)-th entry of that epoch's
//                 permutation (S = num_samples)
//   position      how much of the global order all ranks together have consumed
#include "framework/data/loader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <numeric>

#include "framework/data/shard.h"
#include "base/error.h"

namespace tessera {
namespace {

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed 64-bit generator. We draw the
// shuffle from our own generator, not <random> distributions, because those produce
// different numbers on different standard libraries, and the data order must be the
// same on every machine that resumes a run.
struct SplitMix64 {
  uint64_t state;

  static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t next() { return mix(state += 0x9E3779B97F4A7C15ull); }

  // Uniform in [0, n), n >= 1, without modulo bias: reject the lowest (2^64 mod n) values
  // so that the accepted range is a whole multiple of n.
  uint64_t below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;  // == 2^64 mod n
    for (;;) {
      const uint64_t r = next();
      if (r >= threshold) return r % n;
    }
  }
};

struct MappedShard {
  std::string path;
  void* map = nullptr;  // the whole file
  size_t map_bytes = 0;
  const uint16_t* tokens = nullptr;
  int64_t count = 0;
  int64_t first = 0;  // token offset of tokens[0] in the concatenation
};

}  // namespace

struct DataLoader::Impl {
  LoaderOptions opt;
  std::vector<std::string> files;
  std::vector<MappedShard> shards;
  std::vector<int64_t> shard_first;  // shards[i].first, for binary search
  int64_t total_tokens = 0;
  int64_t num_samples = 0;

  int64_t per_rank = 0;        // samples of a global batch that one rank takes
  int64_t micro_per_step = 0;  // next_micro_batch() calls per optimizer step
  int64_t step = 0;            // optimizer steps fully consumed
  int64_t micro = 0;           // micro-batches of the current step consumed (each rank)

  int64_t perm_epoch = -1;     // the epoch whose permutation `perm` holds
  std::vector<uint32_t> perm;
  std::vector<int32_t> window;  // T+1 tokens of one sample

  ~Impl() {
    for (auto& s : shards) {
      if (s.map) ::munmap(s.map, s.map_bytes);
    }
  }

  void check_options() const;
  void map_shard(const std::string& path);
  int64_t sample_at(int64_t k);
  void read_window(int64_t sample);
};

void DataLoader::Impl::check_options() const {
  const LoaderOptions& o = opt;
  check(o.seq_len >= 1, "model.seq_len " + std::to_string(o.seq_len) + " must be >= 1");
  check(o.micro_batch >= 1,
        "train.micro_batch " + std::to_string(o.micro_batch) + " must be >= 1");
  check(o.global_batch >= 1,
        "train.global_batch " + std::to_string(o.global_batch) + " must be >= 1");
  check(o.dp_size >= 1, "parallel.dp " + std::to_string(o.dp_size) + " must be >= 1");
  check(o.dp_rank >= 0 && o.dp_rank < o.dp_size,
        "data-parallel rank " + std::to_string(o.dp_rank) + " is outside 0.." +
            std::to_string(o.dp_size - 1));
  check(o.vocab_size >= 1,
        "model.vocab_size " + std::to_string(o.vocab_size) + " must be >= 1");
  const int64_t per_step = int64_t(o.dp_size) * o.micro_batch;
  check(o.global_batch % per_step == 0,
        "train.global_batch " + std::to_string(o.global_batch) +
            " is not a multiple of parallel.dp x train.micro_batch = " +
            std::to_string(o.dp_size) + " x " + std::to_string(o.micro_batch) + " = " +
            std::to_string(per_step));
}

void DataLoader::Impl::map_shard(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open token shard: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file (expected an llm.c token shard)");
  }
  const int64_t bytes = st.st_size;
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    read_shard_header(path);  // throws the "truncated" message
    throw Error(path + ": truncated: shorter than a token shard header");
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(bytes), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_errno = errno;
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) {
    throw Error(path + ": cannot memory-map token shard: " + std::strerror(map_errno));
  }
  MappedShard s;
  s.path = path;
  s.map = map;
  s.map_bytes = static_cast<size_t>(bytes);
  shards.push_back(s);  // owned (and unmapped) from here on, even if validation throws

  const auto* base = static_cast<const unsigned char*>(map);
  MappedShard& m = shards.back();
  m.count = check_shard_header(path, reinterpret_cast<const int32_t*>(base), bytes);
  m.tokens = reinterpret_cast<const uint16_t*>(base + kShardHeaderBytes);
  m.first = total_tokens;
  // One pass over every token now, so a bad id fails at start-up naming shard and index
  // instead of as an out-of-bounds embedding lookup hours into a run.
  check_token_range(path, {m.tokens, static_cast<size_t>(m.count)}, opt.vocab_size);
  total_tokens += m.count;
}

int64_t DataLoader::Impl::sample_at(int64_t k) {
  const int64_t epoch = k / num_samples;
  const int64_t i = k % num_samples;
  if (!opt.shuffle) return i;
  if (epoch != perm_epoch) {
    // Fisher-Yates with a generator keyed by (seed, epoch): each epoch's order can be
    // rebuilt from scratch, which is what makes set_position() exact.
    SplitMix64 rng{SplitMix64::mix(opt.seed) ^ SplitMix64::mix(uint64_t(epoch) + 1)};
    perm.resize(static_cast<size_t>(num_samples));
    std::iota(perm.begin(), perm.end(), 0u);
    for (size_t j = perm.size() - 1; j > 0; --j) std::swap(perm[j], perm[rng.below(j + 1)]);
    perm_epoch = epoch;
  }
  return perm[static_cast<size_t>(i)];
}

void DataLoader::Impl::read_window(int64_t sample) {
  int64_t offset = sample * opt.seq_len;
  size_t filled = 0;
  // The last shard starting at or before `offset`; a window may run into later shards.
  size_t s = static_cast<size_t>(
      std::upper_bound(shard_first.begin(), shard_first.end(), offset) - shard_first.begin() - 1);
  while (filled < window.size()) {
    const MappedShard& sh = shards[s++];
    const int64_t begin = offset - sh.first;
    const int64_t take = std::min<int64_t>(sh.count - begin, int64_t(window.size() - filled));
    for (int64_t t = 0; t < take; ++t) window[filled++] = sh.tokens[begin + t];
    offset += take;
  }
}

DataLoader::DataLoader(const LoaderOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->opt = options;
  impl->check_options();
  impl->files = expand_shard_pattern(options.pattern);
  for (const std::string& f : impl->files) impl->map_shard(f);
  for (const auto& s : impl->shards) impl->shard_first.push_back(s.first);

  const int64_t T = options.seq_len;
  impl->num_samples = impl->total_tokens >= 1 ? (impl->total_tokens - 1) / T : 0;
  if (impl->num_samples < 1) {
    throw Error("'" + options.pattern + "': its " + std::to_string(impl->files.size()) +
                " shard(s) hold " + std::to_string(impl->total_tokens) +
                " tokens, too few for one sample of model.seq_len " + std::to_string(T) +
                " (needs " + std::to_string(T + 1) + ")");
  }
  if (options.shuffle && impl->num_samples > int64_t(UINT32_MAX)) {
    throw Error("'" + options.pattern + "': " + std::to_string(impl->num_samples) +
                " samples exceed the 2^32 the shuffle supports (raise model.seq_len)");
  }
  impl->per_rank = options.global_batch / options.dp_size;
  impl->micro_per_step = impl->per_rank / options.micro_batch;
  impl->window.resize(static_cast<size_t>(T + 1));
  impl_ = impl.release();
}

DataLoader::~DataLoader() { delete impl_; }

void DataLoader::next_micro_batch(int32_t* inputs, int32_t* targets) {
  Impl& m = *impl_;
  const int T = m.opt.seq_len;
  // This rank's slice of the current global batch, then this micro-batch within it.
  const int64_t first = m.step * m.opt.global_batch + m.opt.dp_rank * m.per_rank +
                        m.micro * m.opt.micro_batch;
  for (int b = 0; b < m.opt.micro_batch; ++b) {
    m.read_window(m.sample_at(first + b));
    std::copy(m.window.begin(), m.window.end() - 1, inputs + int64_t(b) * T);
    std::copy(m.window.begin() + 1, m.window.end(), targets + int64_t(b) * T);
  }
  if (++m.micro == m.micro_per_step) {
    m.micro = 0;
    ++m.step;
  }
}

int64_t DataLoader::position() const {
  const Impl& m = *impl_;
  return m.step * m.opt.global_batch + m.micro * m.opt.dp_size * m.opt.micro_batch;
}

void DataLoader::set_position(int64_t samples_consumed) {
  Impl& m = *impl_;
  const int64_t per_call = int64_t(m.opt.dp_size) * m.opt.micro_batch;
  const int64_t within = samples_consumed % m.opt.global_batch;
  if (samples_consumed < 0 || within % per_call != 0) {
    throw Error("data position " + std::to_string(samples_consumed) +
                " is not a micro-batch boundary of this layout (expected a multiple of "
                "train.global_batch " + std::to_string(m.opt.global_batch) +
                " plus a multiple of parallel.dp x train.micro_batch " +
                std::to_string(per_call) + ")");
  }
  m.step = samples_consumed / m.opt.global_batch;
  m.micro = within / per_call;
}

int64_t DataLoader::num_samples() const { return impl_->num_samples; }
int64_t DataLoader::num_tokens() const { return impl_->total_tokens; }
const std::vector<std::string>& DataLoader::files() const { return impl_->files; }

}  // namespace tessera
