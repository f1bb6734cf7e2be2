#include "parallel/mesh.h"

#include <cstdlib>
#include <string_view>
#include <utility>

#include "base/error.h"
#include "parallel/mpi_communicator.h"

namespace tessera {

namespace {

std::string s(int v) { return std::to_string(v); }

// A non-negative decimal integer, or nullopt.
std::optional<int> parse_int(const char* text) {
  if (text == nullptr || *text == '\0') return std::nullopt;
  long v = 0;
  for (const char* p = text; *p; ++p) {
    if (*p < '0' || *p > '9') return std::nullopt;
    v = v * 10 + (*p - '0');
    if (v > 1'000'000'000) return std::nullopt;
  }
  return static_cast<int>(v);
}

// Slurm's compressed per-node task counts, "4(x2),3,2(x5)", entry for node `node`.
std::optional<int> tasks_on_node(std::string_view list, int node) {
  int seen = 0;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
    int repeat = 1;
    if (const size_t paren = item.find("(x"); paren != std::string_view::npos) {
      const size_t close = item.find(')', paren);
      if (close == std::string_view::npos) return std::nullopt;
      const auto r = parse_int(std::string(item.substr(paren + 2, close - paren - 2)).c_str());
      if (!r) return std::nullopt;
      repeat = *r;
      item = item.substr(0, paren);
    }
    const auto count = parse_int(std::string(item).c_str());
    if (!count) return std::nullopt;
    if (node < seen + repeat) return count;
    seen += repeat;
  }
  return std::nullopt;
}

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw Error(std::string("MPI call failed while building the mesh: ") + what);
}

// How to start a job of `ranks` ranks: in a Slurm job, srun's and sbatch's options.
std::string launch_hint(long long ranks, bool under_slurm) {
  const std::string n = std::to_string(ranks);
  return under_slurm ? "start it with srun -n " + n + " or sbatch --ntasks=" + n + ","
                     : "start it with mpirun -n " + n;
}

}  // namespace

bool running_under_slurm() {
  const char* job = std::getenv("SLURM_JOB_ID");
  return job != nullptr && *job != '\0';
}

std::optional<std::string> layout_problem(const LayoutSpec& l, int world_size, bool under_slurm) {
  const std::string layout = "parallel layout dp=" + s(l.dp) + " x tp=" + s(l.tp) + " x pp=" + s(l.pp);
  if (l.dp < 1 || l.tp < 1 || l.pp < 1)
    return layout + ": every parallel degree must be at least 1";
  const long long ranks = 1LL * l.dp * l.tp * l.pp;
  if (ranks != world_size)
    return layout + " = " + std::to_string(ranks) + (ranks == 1 ? " rank" : " ranks") +
           ", but the job has " + s(world_size) +
           " MPI rank" + (world_size == 1 ? "" : "s") +
           " (" + launch_hint(ranks, under_slurm) + " or change parallel.dp/tp/pp)";
  if (l.n_head % l.tp != 0)
    return layout + ": model.n_head = " + s(l.n_head) + " is not divisible by parallel.tp = " +
           s(l.tp) + " (attention heads are split across tensor-parallel ranks)";
  if (l.n_kv_head > 0 && l.n_kv_head % l.tp != 0)
    return layout + ": model.n_kv_head = " + s(l.n_kv_head) + " is not divisible by parallel.tp = " +
           s(l.tp) + " (key/value heads are split across tensor-parallel ranks)";
  const long long mlp = l.mlp_width > 0 ? l.mlp_width : 4LL * l.n_embd;
  if (mlp % l.tp != 0)
    return layout + ": the MLP width " +
           (l.mlp_width > 0 ? std::string("") : std::string("4 * model.n_embd = ")) +
           std::to_string(mlp) + " is not divisible by parallel.tp = " + s(l.tp) +
           " (MLP columns are split across tensor-parallel ranks)";
  if (l.n_embd % l.tp != 0)
    return layout + ": model.n_embd = " + s(l.n_embd) + " is not divisible by parallel.tp = " +
           s(l.tp) + " (the embedding width is split across tensor-parallel ranks)";
  if (l.n_layer < l.pp)
    return layout + ": model.n_layer = " + s(l.n_layer) + " is fewer than parallel.pp = " +
           s(l.pp) + " pipeline stages (every stage needs at least one layer)";
  if (l.micro_batch < 1)
    return layout + ": train.micro_batch = " + s(l.micro_batch) + " must be at least 1";
  const long long per_step = 1LL * l.dp * l.micro_batch;
  if (l.global_batch % per_step != 0)
    return layout + ": train.global_batch = " + s(l.global_batch) +
           " is not divisible by parallel.dp * train.micro_batch = " + s(l.dp) + " * " +
           s(l.micro_batch) + " = " + std::to_string(per_step);
  return std::nullopt;
}

void validate_layout(const LayoutSpec& spec, int world_size) {
  if (auto problem = layout_problem(spec, world_size, running_under_slurm()))
    throw ConfigError(*problem);
}

int mesh_world_rank(const MeshCoords& c, int dp, int tp, int /*pp*/) {
  return c.pp * (dp * tp) + c.dp * tp + c.tp;
}

MeshCoords mesh_coords(int world_rank, int dp, int tp, int /*pp*/) {
  MeshCoords c;
  c.tp = world_rank % tp;
  c.dp = (world_rank / tp) % dp;
  c.pp = world_rank / (dp * tp);
  return c;
}

std::vector<int> mesh_group_ranks(int world_rank, MeshAxis axis, int dp, int tp, int pp) {
  const MeshCoords me = mesh_coords(world_rank, dp, tp, pp);
  const int n = axis == MeshAxis::dp ? dp : axis == MeshAxis::tp ? tp : pp;
  std::vector<int> ranks;
  ranks.reserve(n);
  for (int i = 0; i < n; ++i) {
    MeshCoords c = me;
    (axis == MeshAxis::dp ? c.dp : axis == MeshAxis::tp ? c.tp : c.pp) = i;
    ranks.push_back(mesh_world_rank(c, dp, tp, pp));
  }
  return ranks;
}

LocalRank discover_local_rank(const EnvLookup& env) {
  LocalRank out;
  if (auto r = parse_int(env("OMPI_COMM_WORLD_LOCAL_RANK"))) {
    out.rank = *r;
    out.size = parse_int(env("OMPI_COMM_WORLD_LOCAL_SIZE")).value_or(*r + 1);
    out.source = "openmpi";
  } else if (auto r = parse_int(env("SLURM_LOCALID"))) {
    out.rank = *r;
    std::optional<int> size = parse_int(env("SLURM_NTASKS_PER_NODE"));
    if (!size) {
      const char* list = env("SLURM_TASKS_PER_NODE");
      const int node = parse_int(env("SLURM_NODEID")).value_or(0);
      if (list != nullptr) size = tasks_on_node(list, node);
    }
    out.size = size.value_or(*r + 1);
    out.source = "slurm";
  }
  if (out.size <= out.rank) out.size = out.rank + 1;
  return out;
}

LocalRank discover_local_rank() {
  return discover_local_rank([](const char* name) -> const char* { return std::getenv(name); });
}

Mesh::Mesh(MPI_Comm world, const LayoutSpec& spec) : world_(world), spec_(spec) {
  check_mpi(MPI_Comm_rank(world, &world_rank_), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(world, &world_size_), "MPI_Comm_size");
  // Before any collective: every rank sees the same spec and world size, so every rank
  // throws the same message here and none is left waiting in MPI_Comm_split.
  validate_layout(spec_, world_size_);
  coords_ = mesh_coords(world_rank_, spec_.dp, spec_.tp, spec_.pp);
  local_ = discover_local_rank();
  const int dp = spec_.dp, tp = spec_.tp;
  try {
    // color = the coordinates held fixed; key = the coordinate along the group's axis.
    check_mpi(MPI_Comm_split(world, coords_.pp * dp + coords_.dp, coords_.tp, &tp_), "MPI_Comm_split(tp)");
    check_mpi(MPI_Comm_split(world, coords_.pp * tp + coords_.tp, coords_.dp, &dp_), "MPI_Comm_split(dp)");
    check_mpi(MPI_Comm_split(world, coords_.dp * tp + coords_.tp, coords_.pp, &pp_), "MPI_Comm_split(pp)");
    // Queued non-blocking operations rather than a helper thread: with one core per rank
    // the helper thread's polling takes the core from the computation it should overlap.
    const MpiCommunicatorOptions options{.async_thread = 0};
    world_comm_ = std::make_unique<MpiCommunicator>(world, options);
    tp_comm_ = std::make_unique<MpiCommunicator>(tp_, options);
    dp_comm_ = std::make_unique<MpiCommunicator>(dp_, options);
    pp_comm_ = std::make_unique<MpiCommunicator>(pp_, options);
  } catch (...) {
    free_comms();
    throw;
  }
}

Mesh::~Mesh() { free_comms(); }

Mesh::Mesh(Mesh&& o) noexcept
    : world_(o.world_), tp_(std::exchange(o.tp_, MPI_COMM_NULL)),
      dp_(std::exchange(o.dp_, MPI_COMM_NULL)), pp_(std::exchange(o.pp_, MPI_COMM_NULL)),
      world_comm_(std::move(o.world_comm_)), tp_comm_(std::move(o.tp_comm_)),
      dp_comm_(std::move(o.dp_comm_)), pp_comm_(std::move(o.pp_comm_)),
      tp_group_(std::move(o.tp_group_)), dp_group_(std::move(o.dp_group_)),
      pp_group_(std::move(o.pp_group_)), spec_(o.spec_), coords_(o.coords_),
      world_rank_(o.world_rank_), world_size_(o.world_size_), local_(std::move(o.local_)) {}

Mesh& Mesh::operator=(Mesh&& o) noexcept {
  if (this != &o) {
    free_comms();
    world_ = o.world_;
    tp_ = std::exchange(o.tp_, MPI_COMM_NULL);
    dp_ = std::exchange(o.dp_, MPI_COMM_NULL);
    pp_ = std::exchange(o.pp_, MPI_COMM_NULL);
    world_comm_ = std::move(o.world_comm_);
    tp_comm_ = std::move(o.tp_comm_);
    dp_comm_ = std::move(o.dp_comm_);
    pp_comm_ = std::move(o.pp_comm_);
    tp_group_ = std::move(o.tp_group_);
    dp_group_ = std::move(o.dp_group_);
    pp_group_ = std::move(o.pp_group_);
    spec_ = o.spec_;
    coords_ = o.coords_;
    world_rank_ = o.world_rank_;
    world_size_ = o.world_size_;
    local_ = std::move(o.local_);
  }
  return *this;
}

void Mesh::free_comms() noexcept {
  tp_group_.reset();
  dp_group_.reset();
  pp_group_.reset();
  world_comm_.reset();
  tp_comm_.reset();
  dp_comm_.reset();
  pp_comm_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  for (MPI_Comm* c : {&tp_, &dp_, &pp_}) {
    if (*c != MPI_COMM_NULL && !finalized) MPI_Comm_free(c);
    *c = MPI_COMM_NULL;
  }
}

MPI_Comm Mesh::comm(MeshAxis axis) const {
  switch (axis) {
    case MeshAxis::dp: return dp_;
    case MeshAxis::tp: return tp_;
    case MeshAxis::pp: return pp_;
  }
  return MPI_COMM_NULL;
}

Communicator& Mesh::world() const { return *world_comm_; }

Communicator& Mesh::group(MeshAxis axis) const {
  switch (axis) {
    case MeshAxis::dp: return dp_group_ ? *dp_group_ : *dp_comm_;
    case MeshAxis::tp: return tp_group_ ? *tp_group_ : *tp_comm_;
    case MeshAxis::pp: return pp_group_ ? *pp_group_ : *pp_comm_;
  }
  return *world_comm_;
}

void Mesh::use_group_communicators(const GroupFactory& make) {
  tp_group_ = make(*tp_comm_);
  dp_group_ = make(*dp_comm_);
  pp_group_ = make(*pp_comm_);
}

void Mesh::synchronize_groups() {
  for (MeshAxis axis : {MeshAxis::dp, MeshAxis::tp, MeshAxis::pp}) group(axis).synchronize();
}

int Mesh::prev_stage_world_rank() const {
  if (is_first_stage()) return -1;
  MeshCoords c = coords_;
  --c.pp;
  return mesh_world_rank(c, spec_.dp, spec_.tp, spec_.pp);
}

int Mesh::next_stage_world_rank() const {
  if (is_last_stage()) return -1;
  MeshCoords c = coords_;
  ++c.pp;
  return mesh_world_rank(c, spec_.dp, spec_.tp, spec_.pp);
}

std::string Mesh::describe() const {
  return "dp=" + s(spec_.dp) + " x tp=" + s(spec_.tp) + " x pp=" + s(spec_.pp) + " (rank " +
         s(world_rank_) + ": dp " + s(coords_.dp) + ", tp " + s(coords_.tp) + ", pp " +
         s(coords_.pp) + ")";
}

}  // namespace tessera
