#include "tests/nccl/file_bootstrap.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "base/error.h"
#include "parallel/nccl_communicator.h"
#ifdef TESSERA_CUDA_EMULATOR
#include <mpi.h>
#endif

namespace tessera {

namespace {

// The variable's integer value, or the first that is set of the fallbacks; -1 if none.
int env_int(std::initializer_list<const char*> names) {
  for (const char* name : names)
    if (const char* v = std::getenv(name); v && *v) {
      char* end = nullptr;
      const long x = std::strtol(v, &end, 10);
      check(*end == '\0' && x >= 0, std::string(name) + ": expected a number >= 0, got '" + v + "'");
      return (int)x;
    }
  return -1;
}

}  // namespace

ProcessGroup start_processes(int* argc, char*** argv) {
#ifdef TESSERA_CUDA_EMULATOR
  MPI_Init(argc, argv);
#else
  (void)argc, (void)argv;
#endif
  ProcessGroup p;
  p.size = env_int({"TESSERA_NCCL_RANKS", "OMPI_COMM_WORLD_SIZE"});
  p.rank = env_int({"TESSERA_NCCL_RANK", "OMPI_COMM_WORLD_RANK"});
  if (p.size < 0) p.size = 1;
  if (p.rank < 0) p.rank = 0;
  check(p.size >= 1 && p.rank < p.size, "TESSERA_NCCL_RANK " + std::to_string(p.rank) +
                                            " is not below TESSERA_NCCL_RANKS " +
                                            std::to_string(p.size));
  const char* file = std::getenv("TESSERA_NCCL_ID_FILE");
  p.id_file = file ? file : "";
  check(p.size == 1 || !p.id_file.empty(),
        "TESSERA_NCCL_ID_FILE must name the file through which the processes share rank 0's "
        "NCCL id");
  return p;
}

void finish_processes() {
#ifdef TESSERA_CUDA_EMULATOR
  MPI_Finalize();
#endif
}

std::unique_ptr<Communicator> nccl_world(const ProcessGroup& p) {
  NcclUniqueId id;
  std::error_code ec;
  if (p.rank == 0) {
    id = nccl_unique_id();
    if (p.size > 1) {
      const std::string partial = p.id_file + ".partial";
      check((bool)std::ofstream(partial, std::ios::binary).write(id.bytes, sizeof id.bytes),
            "cannot write the NCCL id to " + partial);
      std::filesystem::rename(partial, p.id_file, ec);
      check(!ec, "cannot rename " + partial + " to " + p.id_file + ": " + ec.message());
    }
  } else {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(p.id_file, ec)) {
      check(std::chrono::steady_clock::now() < give_up,
            "no NCCL id in " + p.id_file + " after 60 s: did rank 0 start?");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::ifstream in(p.id_file, std::ios::binary);
    check(in.read(id.bytes, sizeof id.bytes) && in.gcount() == (std::streamsize)sizeof id.bytes,
          "cannot read an NCCL id from " + p.id_file);
  }
  auto world = make_nccl_communicator(id, p.size, p.rank);
  // Every process has read the id once the communicator exists: a later run must not
  // find this one's id.
  if (p.rank == 0 && p.size > 1) std::filesystem::remove(p.id_file, ec);
  return world;
}

std::unique_ptr<Communicator> nccl_group(Communicator& world, int color) {
  const int n = world.size();
  std::vector<int32_t> colors((size_t)n);
  const int32_t mine = color;
  world.all_gather_bytes(&mine, colors.data(), sizeof mine);
  int leader = -1, size = 0, rank = 0;
  for (int r = 0; r < n; r++) {
    if (colors[(size_t)r] != color) continue;
    if (leader < 0) leader = r;
    if (r == world.rank()) rank = size;
    size++;
  }
  NcclUniqueId id;
  if (leader == world.rank()) id = nccl_unique_id();
  std::vector<NcclUniqueId> ids((size_t)n);
  world.all_gather_bytes(&id, ids.data(), sizeof id);
  return make_nccl_communicator(ids[(size_t)leader], size, rank);
}

}  // namespace tessera
