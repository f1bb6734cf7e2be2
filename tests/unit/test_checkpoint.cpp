// HDF5 checkpoints: round trip, `latest`, keep_last, and every way a checkpoint on disk
// can be missing, partial or corrupt. The unit_tests binary does not initialise MPI, so
// save_checkpoint runs as a single rank here.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "base/error.h"
#include "tests/unit/test_support.h"

namespace fs = std::filesystem;
using namespace tessera;
using tessera::test_support::error_of;
using tessera::test_support::fresh_dir;
using tessera::test_support::read_text;

namespace {

// A fresh directory per test (gtest_discover_tests runs tests in parallel processes),
// removed afterwards.
class Checkpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root = fresh_dir("ckpt_" + std::string(info->name()));
  }
  void TearDown() override { fs::remove_all(root); }
  fs::path root;
};

// A tiny "model": parameters and their AdamW moments, named as the trainer names them.
struct Tensors {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::vector<float>> values;

  void add(const std::string& name, std::vector<int64_t> shape, float seed) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; i++) v[i] = std::sin(seed + 0.37f * (float)i) * (1.0f + seed);
    names.push_back(name);
    shapes.push_back(std::move(shape));
    values.push_back(std::move(v));
  }
  // Every tensor as one piece.
  std::vector<TensorPiece> refs() const {
    std::vector<TensorPiece> r;
    for (size_t i = 0; i < names.size(); i++) r.push_back({names[i], shapes[i], {}, {}, values[i].data()});
    return r;
  }
  // 2-D tensors as two row blocks, as two tensor-parallel ranks would hold them.
  std::vector<TensorPiece> split_refs() const {
    std::vector<TensorPiece> r;
    for (size_t i = 0; i < names.size(); i++) {
      const auto& s = shapes[i];
      if (s.size() != 2) {
        r.push_back({names[i], s, {}, {}, values[i].data()});
        continue;
      }
      const int64_t top = s[0] / 2;
      r.push_back({names[i], s, {0, 0}, {top, s[1]}, values[i].data()});
      r.push_back({names[i], s, {top, 0}, {s[0] - top, s[1]}, values[i].data() + top * s[1]});
    }
    return r;
  }
};

Tensors small_model() {
  Tensors t;
  for (const char* p : {"", ".adam_m", ".adam_v"}) {
    t.add(std::string("wte.weight") + p, {7, 4}, 0.5f);
    t.add(std::string("h.0.attn.qkv.weight") + p, {4, 12}, 1.5f);
    t.add(std::string("h.0.ln_1.bias") + p, {4}, 2.5f);
  }
  return t;
}

CheckpointMeta meta_at(int64_t step) {
  CheckpointMeta m;
  m.step = step;
  m.tokens_seen = step * 16 * 64;
  m.data_position = step * 16 + 3;
  m.run_id = "20250114-093012-3fa9c1";
  m.recipe_yaml = "model:\n  n_layer: 1\n";
  m.layout = {{"dp", 2}, {"tp", 1}, {"pp", 1}, {"world", 2}};
  return m;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A checkpoint of small_model() at step 1 in `dir`; returns its directory.
fs::path save_small(const fs::path& dir, int64_t step = 1, int keep_last = 3) {
  const Tensors t = small_model();
  return save_checkpoint(dir.string(), meta_at(step), t.refs(), keep_last);
}

}  // namespace

TEST_F(Checkpoint, RoundTripIsBitExact) {
  const fs::path dir = root / "ckpt";
  Tensors t = small_model();
  // Values a lossy path would change: NaN payload, -0, infinities, a denormal.
  uint32_t nan_bits = 0x7fc01234u;
  std::memcpy(&t.values[0][0], &nan_bits, 4);
  t.values[0][1] = -0.0f;
  t.values[0][2] = std::numeric_limits<float>::infinity();
  t.values[0][3] = -std::numeric_limits<float>::infinity();
  t.values[0][4] = std::numeric_limits<float>::denorm_min();

  SaveInfo info;
  const std::string path = save_checkpoint(dir.string(), meta_at(7), t.refs(), 3, &info);
  EXPECT_EQ(path, (dir / "step_000007").string());
  EXPECT_EQ(info.path, path);
  ASSERT_EQ(info.checksums.size(), 1u);  // one shard file, rank 0's
  EXPECT_EQ(info.checksums[0].first, "rank_00000.h5");
  EXPECT_EQ(info.bytes, (7 * 4 + 4 * 12 + 4) * 3 * 4);
  EXPECT_TRUE(fs::exists(dir / "step_000007" / "index.h5"));
  EXPECT_TRUE(fs::exists(dir / "step_000007" / "rank_00000.h5"));
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"latest", "step_000007"}));

  std::vector<std::vector<float>> got(t.names.size());
  std::vector<TensorDest> dests;
  for (size_t i = 0; i < t.names.size(); i++) {
    got[i].assign(t.values[i].size(), 42.0f);
    dests.push_back({t.names[i], t.shapes[i], got[i].data(), {}, {}});
  }
  const LoadedCheckpoint loaded = load_checkpoint(path, dests);
  for (size_t i = 0; i < t.names.size(); i++)
    EXPECT_EQ(std::memcmp(got[i].data(), t.values[i].data(), got[i].size() * 4), 0) << t.names[i];

  const CheckpointMeta m = meta_at(7);
  EXPECT_EQ(loaded.path, path);
  EXPECT_EQ(loaded.meta.step, 7);
  EXPECT_EQ(loaded.meta.tokens_seen, m.tokens_seen);
  EXPECT_EQ(loaded.meta.data_position, m.data_position);
  EXPECT_EQ(loaded.meta.run_id, m.run_id);
  EXPECT_EQ(loaded.meta.recipe_yaml, m.recipe_yaml);
  EXPECT_EQ(loaded.meta.layout, m.layout);
  ASSERT_EQ(loaded.tensors.size(), t.names.size());
  for (const auto& ti : loaded.tensors) EXPECT_EQ(ti.pieces, 1) << ti.name;
  ASSERT_EQ(loaded.shards.size(), 1u);
  EXPECT_EQ(loaded.shards[0].checksum, info.checksums[0].second);
  EXPECT_EQ(verify_checkpoint(path), info.bytes);

  // Loading by the parent directory goes through `latest`; a subset of tensors is fine.
  std::vector<float> wte(28);
  EXPECT_EQ(load_checkpoint(dir.string(), {{"wte.weight", {7, 4}, wte.data(), {}, {}}}).meta.step, 7);
  EXPECT_EQ(std::memcmp(wte.data(), t.values[0].data(), 28 * 4), 0);
}

// Pieces written as row blocks read back whole, and any box reads across pieces.
TEST_F(Checkpoint, PiecesAndBoxes) {
  const fs::path dir = root / "ckpt";
  const Tensors t = small_model();
  const std::string path = save_checkpoint(dir.string(), meta_at(3), t.split_refs(), 3);
  const LoadedCheckpoint info = load_checkpoint(path, {});
  for (const auto& ti : info.tensors) EXPECT_EQ(ti.pieces, ti.shape.size() == 2 ? 2 : 1) << ti.name;
  verify_checkpoint(path);
  // h.0.attn.qkv.weight is [4, 12] in row blocks 0-1 and 2-3: rows 1-2, columns 5-8.
  std::vector<float> box(2 * 4, 0.0f);
  load_checkpoint(path, {{"h.0.attn.qkv.weight", {4, 12}, box.data(), {1, 5}, {2, 4}}});
  const std::vector<float>& qkv = t.values[1];
  for (int r = 0; r < 2; r++)
    for (int c = 0; c < 4; c++) EXPECT_EQ(box[r * 4 + c], qkv[(1 + r) * 12 + 5 + c]);
  const std::string msg = error_of([&] {
    load_checkpoint(path, {{"h.0.attn.qkv.weight", {4, 12}, box.data(), {3, 5}, {2, 4}}});
  });
  EXPECT_NE(msg.find("cannot read [2, 4] at [3, 5]"), std::string::npos) << msg;
}

TEST_F(Checkpoint, LatestPointsAtNewestAndKeepLastPrunesOlder) {
  const fs::path dir = root;
  for (int64_t step = 1; step <= 4; step++) save_small(dir, step, /*keep_last=*/2);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"latest", "step_000003", "step_000004"}));
  EXPECT_EQ(read_text(dir / "latest"), "step_000004\n");
  EXPECT_EQ(load_checkpoint(dir.string(), {}).meta.step, 4);

  // keep_last <= 0 keeps everything.
  save_small(dir, 5, 0);
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"latest", "step_000003", "step_000004", "step_000005"}));
  // Saving a step again (a rerun into the same directory) replaces it.
  Tensors t = small_model();
  t.values[0][0] = 123.0f;
  save_checkpoint(dir.string(), meta_at(4), t.refs(), 0);
  EXPECT_EQ(read_text(dir / "latest"), "step_000004\n");
  std::vector<float> wte(28);
  load_checkpoint(dir.string(), {{"wte.weight", {7, 4}, wte.data(), {}, {}}});
  EXPECT_EQ(wte[0], 123.0f);
  EXPECT_EQ(entries(dir),
            (std::vector<std::string>{"latest", "step_000003", "step_000004", "step_000005"}));
}

TEST_F(Checkpoint, MissingRankFileIsAnError) {
  const fs::path ckpt = save_small(root);
  fs::remove(ckpt / "rank_00000.h5");
  const std::string msg = error_of([&] { load_checkpoint(ckpt.string(), {}); });
  EXPECT_NE(msg.find("rank_00000.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing"), std::string::npos) << msg;
}

TEST_F(Checkpoint, FlippedByteFailsTheChecksum) {
  const fs::path ckpt = save_small(root);
  // The piece holding h.0.attn.qkv.weight.adam_v: the 8th tensor written (see small_model).
  tessera::test_support::flip_bit_in_dataset((ckpt / "rank_00000.h5").string(), "/pieces/7", 21);
  const std::string msg = error_of([&] { verify_checkpoint(ckpt.string()); });
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("h.0.attn.qkv.weight.adam_v"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank_00000.h5"), std::string::npos) << msg;

  // Loading with verify_exact_pieces checks a box that is exactly a piece as it reads it
  // (what a resume in the writing layout does), and marks the pieces it checked.
  std::vector<float> buf(4 * 12);
  const std::string load_msg = error_of([&] {
    load_checkpoint(ckpt.string(), {{"h.0.attn.qkv.weight.adam_v", {4, 12}, buf.data(), {}, {}}}, true);
  });
  EXPECT_NE(load_msg.find("checksum mismatch in"), std::string::npos) << load_msg;
  EXPECT_NE(load_msg.find("rank_00000.h5"), std::string::npos) << load_msg;
  const LoadedCheckpoint ok =
      load_checkpoint(ckpt.string(), {{"h.0.attn.qkv.weight", {4, 12}, buf.data(), {}, {}}}, true);
  ASSERT_EQ(ok.verified_pieces.size(), 9u);
  EXPECT_EQ(std::count(ok.verified_pieces.begin(), ok.verified_pieces.end(), 1), 1);
  EXPECT_EQ(ok.verified_pieces[1], 1);  // h.0.attn.qkv.weight: the 2nd piece written
  // Skipping the corrupt piece, verification finds nothing else wrong.
  std::vector<char> skip(9, 0);
  skip[7] = 1;
  EXPECT_GT(verify_checkpoint(ckpt.string(), 0, 1, skip), 0);
}

TEST_F(Checkpoint, TruncatedFilesAreErrorsNamingTheFile) {
  const fs::path dir = root;
  const fs::path ckpt = save_small(dir / "a");
  fs::resize_file(ckpt / "rank_00000.h5", fs::file_size(ckpt / "rank_00000.h5") / 2);
  std::string msg = error_of([&] { load_checkpoint(ckpt.string(), {}); });
  EXPECT_NE(msg.find("rank_00000.h5"), std::string::npos) << msg;

  const fs::path ckpt2 = save_small(dir / "b");
  fs::resize_file(ckpt2 / "index.h5", fs::file_size(ckpt2 / "index.h5") / 2);
  msg = error_of([&] { load_checkpoint(ckpt2.string(), {}); });
  EXPECT_NE(msg.find("index.h5"), std::string::npos) << msg;
}

TEST_F(Checkpoint, LeftoverTmpDirectoryIsIgnoredByLatestAndRefusedDirectly) {
  const fs::path dir = root;
  const fs::path ckpt = save_small(dir, 1);
  // What a crash mid-write leaves: a complete-looking copy under a .tmp name.
  const fs::path tmp = dir / "step_000002.tmp-20250114-093012-deadbe";
  fs::copy(ckpt, tmp);
  EXPECT_EQ(load_checkpoint(dir.string(), {}).meta.step, 1);
  const std::string msg = error_of([&] { load_checkpoint(tmp.string(), {}); });
  EXPECT_NE(msg.find(tmp.filename().string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("unfinished"), std::string::npos) << msg;
  // Pruning leaves it alone: it may belong to another job still writing.
  save_small(dir, 3, 1);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"latest", tmp.filename().string(), "step_000003"}));
}

TEST_F(Checkpoint, ShapeMismatchAndAbsentTensorAreErrors) {
  const fs::path ckpt = save_small(root);
  std::vector<float> buf(28);
  std::string msg =
      error_of([&] { load_checkpoint(ckpt.string(), {{"wte.weight", {4, 7}, buf.data(), {}, {}}}); });
  EXPECT_NE(msg.find("'wte.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[7, 4]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 7]"), std::string::npos) << msg;
  msg = error_of([&] { load_checkpoint(ckpt.string(), {{"lm_head.weight", {7, 4}, buf.data(), {}, {}}}); });
  EXPECT_NE(msg.find("'lm_head.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("index.h5"), std::string::npos) << msg;
  fs::create_directory(root / "empty");
  msg = error_of([&] { load_checkpoint((root / "empty").string(), {}); });
  EXPECT_NE(msg.find("is not a checkpoint"), std::string::npos) << msg;
}

TEST_F(Checkpoint, InvalidTensorListsAreRejectedBeforeWriting) {
  const fs::path dir = root / "ckpt";
  std::vector<float> v(4);
  const auto save = [&](std::vector<TensorPiece> pieces) {
    return error_of([&] { save_checkpoint(dir.string(), meta_at(1), pieces, 3); });
  };
  EXPECT_NE(save({{"a", {4}, {}, {}, v.data()}, {"a", {4}, {}, {}, v.data()}}).find("'a' is written twice"),
            std::string::npos);
  EXPECT_NE(save({{"a", {4}, {0}, {2}, v.data()}}).find("the pieces of tensor 'a' cover 2 of its 4 elements"),
            std::string::npos);
  EXPECT_NE(save({{"a", {4}, {3}, {2}, v.data()}}).find("outside its shape [4]"), std::string::npos);
  EXPECT_NE(save({{"a", {4}, {}, {}, v.data()}, {"a", {2, 2}, {}, {}, v.data()}}).find("shapes [4] and [2, 2]"),
            std::string::npos);
  EXPECT_NE(save({{"a/b", {4}, {}, {}, v.data()}}).find("'a/b'"), std::string::npos);
  EXPECT_NE(save({{"a", {0, 4}, {}, {}, v.data()}}).find("invalid shape [0, 4]"), std::string::npos);
  EXPECT_NE(save({{"a", {4}, {}, {}, nullptr}}).find("no data"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir / "step_000001"));
  EXPECT_EQ(entries(dir), std::vector<std::string>{});  // no .tmp left either
}

// A write that fails half-way, as on a full disk, simulated with RLIMIT_FSIZE: the first
// write past the limit fails with EFBIG and raises SIGXFSZ, whose handler lifts the limit
// again (so, as on a disk that our clean-up frees, the writes after it succeed). The .tmp
// directory must go and the previous checkpoint stay the latest.
static rlimit g_saved_fsize{};
static void lift_fsize_limit(int) { setrlimit(RLIMIT_FSIZE, &g_saved_fsize); }

TEST_F(Checkpoint, WriteFailureLeavesNoPartialCheckpoint) {
  const fs::path dir = root;
  save_small(dir, 1);
  std::vector<float> big(1 << 18, 1.0f);  // 1 MiB
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &g_saved_fsize), 0);
  struct sigaction lift {}, old_action {};
  lift.sa_handler = lift_fsize_limit;
  sigemptyset(&lift.sa_mask);
  ASSERT_EQ(sigaction(SIGXFSZ, &lift, &old_action), 0);
  rlimit small = g_saved_fsize;
  small.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string msg;
  try {
    save_checkpoint(dir.string(), meta_at(2), {{"big", {1 << 18}, {}, {}, big.data()}}, 3);
  } catch (const Error& e) {
    msg = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &g_saved_fsize);
  sigaction(SIGXFSZ, &old_action, nullptr);
  EXPECT_NE(msg.find("rank_00000.h5"), std::string::npos) << msg;
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"latest", "step_000001"}));
  EXPECT_EQ(load_checkpoint(dir.string(), {}).meta.step, 1);

  // A checkpoint directory that cannot be created.
  std::ofstream(dir / "file") << "x";
  msg = error_of([&] { save_small(dir / "file" / "ckpt"); });
  EXPECT_NE(msg.find("cannot create checkpoint directory"), std::string::npos) << msg;
}

// XXH64 against the reference implementation (python3-xxhash) on every tail length and a
// few large buffers.
TEST_F(Checkpoint, XxHash64MatchesTheReference) {
  ASSERT_TRUE(fs::exists("/usr/bin/python3")) << "/usr/bin/python3 not found: run make test";
  std::vector<unsigned char> bytes(1 << 20);
  for (size_t i = 0; i < bytes.size(); i++) bytes[i] = (unsigned char)(i * 2654435761u >> 13);
  std::ofstream(root / "data.bin", std::ios::binary).write((const char*)bytes.data(), bytes.size());
  const std::vector<size_t> lengths = {0, 1, 3, 4, 7, 8, 15, 31, 32, 33, 63, 64, 100, 4097, 1 << 20};
  std::string ours;
  for (size_t n : lengths) {
    char hex[20];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)xxhash64(bytes.data(), n));
    ours += std::string(hex) + "\n";
  }
  std::string script = "import xxhash,sys; d=open(sys.argv[1],'rb').read(); print(''.join("
                       "xxhash.xxh64(d[:n]).hexdigest()+chr(10) for n in [";
  for (size_t n : lengths) script += std::to_string(n) + ",";
  script += "]), end='')";
  const std::string cmd = "/usr/bin/python3 -c \"" + script + "\" " + (root / "data.bin").string() +
                          " > " + (root / "ref.txt").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd << " (python3-xxhash: run make test)";
  EXPECT_EQ(ours, read_text(root / "ref.txt"));
}

// h5py, an independent HDF5 reader, sees every tensor through index.h5 with the right
// shape, values and checksum.
TEST_F(Checkpoint, H5pyReadsTheIndex) {
  // No skip: python3-h5py is a test dependency that `make test` installs.
  ASSERT_TRUE(fs::exists("/usr/bin/python3")) << "/usr/bin/python3 not found: run make test";
  const fs::path dir = root;
  const Tensors t = small_model();
  const CheckpointMeta m = meta_at(12);
  save_checkpoint((dir / "ckpt").string(), m, t.split_refs(), 3);  // several pieces per tensor

  nlohmann::json expected = {{"step", m.step}, {"tokens_seen", m.tokens_seen},
                             {"data_position", m.data_position}, {"run_id", m.run_id},
                             {"recipe_yaml", m.recipe_yaml}, {"layout", m.layout}};
  for (size_t i = 0; i < t.names.size(); i++) {
    double sum = 0;
    for (float x : t.values[i]) sum += x;
    expected["tensors"][t.names[i]] = {
        {"shape", t.shapes[i]},
        {"sum", sum},
        {"first", std::vector<double>(t.values[i].begin(), t.values[i].begin() + 3)}};
  }
  std::ofstream(dir / "expected.json") << expected.dump(1);
  const std::string cmd = std::string("/usr/bin/python3 ") + TESSERA_SOURCE_DIR +
                          "/tests/reference/check_checkpoint.py " + (dir / "ckpt").string() + " " +
                          (dir / "expected.json").string() + " 2>&1";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
}
