// cuDNN's fused attention: the graphs of kernels/cuda/cudnn_attention.h in backend
// descriptors, their execution plans (cuDNN's heuristics, the first engine that builds),
// and the calls that round our fp32 arrays to the bf16 the engines take.
#include "kernels/cuda/cudnn_attention.h"

#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <utility>
#include <vector>

#include "base/error.h"
#include "kernels/cuda/ops.h"

namespace tessera::kernels::cuda {
namespace {

using Dims = std::vector<int64_t>;

// Throws tessera::Error naming what failed, with cuDNN's status and its last message.
void check(cudnnStatus_t status, const std::string& what) {
  if (status == CUDNN_STATUS_SUCCESS) return;
  char detail[1024] = "";
  cudnnGetLastErrorString(detail, sizeof detail);
  std::string message = "cuDNN " + what + ": " + cudnnGetErrorString(status);
  if (detail[0]) message += std::string(" (") + detail + ")";
  for (char& c : message)  // one line, whatever cuDNN's message holds
    if (c == '\n') c = ' ';
  throw Error(message);
}

// An owned backend descriptor, set attribute by attribute, then finalized.
class Descriptor {
 public:
  Descriptor(cudnnBackendDescriptorType_t type, std::string what) : what_(std::move(what)) {
    check(cudnnBackendCreateDescriptor(type, &d_), "creating " + what_);
  }
  Descriptor(Descriptor&& o) noexcept : d_(std::exchange(o.d_, nullptr)), what_(std::move(o.what_)) {}
  Descriptor& operator=(Descriptor&&) = delete;
  Descriptor(const Descriptor&) = delete;
  ~Descriptor() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  cudnnBackendDescriptor_t get() const { return d_; }

  template <typename T>
  Descriptor& set_array(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
                        const T* values, int64_t count) {
    check(cudnnBackendSetAttribute(d_, name, type, count, values),
          "setting attribute " + std::to_string((int)name) + " of " + what_);
    return *this;
  }
  // One value (a handle, an enum, a pointer: the attribute's type says which).
  template <typename T>
  Descriptor& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, T value) {
    return set_array(name, type, &value, 1);
  }
  Descriptor& set(cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t other) {
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, other);
  }
  Descriptor& finalize() {
    check(cudnnBackendFinalize(d_), "finalizing " + what_);
    return *this;
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  std::string what_;
};

// The device arrays and host scalars of a graph, by unique id (the variant pack's keys).
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kNegInf, kOne, kDO, kDQ, kDK, kDV, kRowSums, kDQAccum,
};

// A graph under construction: its tensors and operations, each finalized as it is added,
// and kept alive here as long as the operation graph and plans that refer to them.
class Graph {
 public:
  using T = cudnnBackendDescriptor_t;

  // A tensor in memory named by uid (16-byte aligned), or a virtual one (an intermediate
  // the engine keeps in registers; it needs a unique id all the same).
  T tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return add_tensor(uid, type, dims, strides, false, false);
  }
  T virtual_tensor(cudnnDataType_t type, const Dims& dims, const Dims& strides) {
    return add_tensor(next_virtual_uid_++, type, dims, strides, true, false);
  }
  // An fp32 scalar passed by value: its variant-pack pointer is to host memory.
  T scalar(int64_t uid) { return add_tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }

  // y = mode(x[, b][, t]) elementwise, computed in `compute`; GEN_INDEX takes an axis.
  void pointwise(cudnnPointwiseMode_t mode, T x, T y, T b = nullptr, T t = nullptr,
                 cudnnDataType_t compute = CUDNN_DATA_FLOAT, int64_t axis = -1) {
    Descriptor& pw = keep(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "a pointwise descriptor");
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, mode)
        .set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, compute);
    if (axis >= 0) pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, axis);
    pw.finalize();
    Descriptor& op = add_operation(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
                                   "pointwise operation " + std::to_string((int)mode));
    // The alphas are cudnn-frontend's (always 1, always set): the graphs match its spelling.
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw.get())
        .set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1.0f)
        .set(CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1.0f)
        .set(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) op.set(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) op.set(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    op.set(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y).finalize();
  }
  // y = reduce(x) over the axes where y has extent 1, in fp32.
  void reduction(cudnnReduceTensorOp_t reduce, T x, T y) {
    Descriptor& r = keep(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "a reduction descriptor");
    r.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, reduce)
        .set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, CUDNN_DATA_FLOAT);
    if (cudnnGetVersion() >= 91100)  // the attribute's first version; cudnn-frontend sets it
      r.set(CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, CUDNN_TYPE_BOOLEAN, false);
    r.finalize();
    add_operation(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation")
        .set(CUDNN_ATTR_OPERATION_REDUCTION_DESC, r.get())
        .set(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x)
        .set(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y)
        .finalize();
  }
  // c[b,h] = a[b,h] @ b[b,h] for every batch and head, accumulated in fp32.
  void matmul(T a, T b, T c) {
    Descriptor& m = keep(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "a matmul descriptor");
    m.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, CUDNN_DATA_FLOAT).finalize();
    add_operation(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation")
        .set(CUDNN_ATTR_OPERATION_MATMUL_DESC, m.get())
        .set(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a)
        .set(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b)
        .set(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c)
        .finalize();
  }
  // y = x seen through other dims and strides (a transpose, here).
  void reshape(T x, T y) {
    add_operation(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape operation")
        .set(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x)
        .set(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y)
        .finalize();
  }

  // The operation graph of every operation added (needs a handle, so a GPU).
  Descriptor& operation_graph(cudnnHandle_t handle, const std::string& what) {
    std::vector<cudnnBackendDescriptor_t> ops;
    for (const Descriptor& op : operations_) ops.push_back(op.get());
    Descriptor& g = keep(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, what + " operation graph");
    g.set_array(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, ops.data(),
                (int64_t)ops.size())
        .set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, handle)
        .finalize();
    return g;
  }

 private:
  T add_tensor(int64_t uid, cudnnDataType_t type, const Dims& dims, const Dims& strides,
               bool is_virtual, bool by_value) {
    Descriptor& t = keep(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor " + std::to_string(uid));
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, type)
        .set_array(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, dims.data(),
                   (int64_t)dims.size())
        .set_array(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.data(),
                   (int64_t)strides.size())
        .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, uid)
        .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, int64_t{16})
        .set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, is_virtual);
    if (by_value) t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, true);
    return t.finalize().get();
  }
  Descriptor& keep(cudnnBackendDescriptorType_t type, std::string what) {
    return descriptors_.emplace_back(type, std::move(what));
  }
  Descriptor& add_operation(cudnnBackendDescriptorType_t type, std::string what) {
    return operations_.emplace_back(type, std::move(what));
  }

  std::deque<Descriptor> descriptors_, operations_;  // deque: references stay valid
  int64_t next_virtual_uid_ = 1000;
};

// The layouts of one shape: q, k, v, dq, dk, dv live in a [B, T, 3C] array (head h's
// channels h*D.. of each third), O and dO in [B, T, C], lse and the row sums in
// [B, NH, T]; cuDNN sees them as [B, NH, T, D] (or transposed [B, NH, D, T]) with strides.
struct Layout {
  int64_t B, H, T, D, C;
  Dims bhtd() const { return {B, H, T, D}; }
  Dims bhdt() const { return {B, H, D, T}; }
  Dims in_qkv() const { return {T * 3 * C, D, 3 * C, 1}; }
  Dims in_qkv_transposed() const { return {T * 3 * C, D, 1, 3 * C}; }
  Dims in_out() const { return {T * C, D, C, 1}; }
  Dims packed_bhtd() const { return {H * T * D, T * D, D, 1}; }
  Dims scores() const { return {B, H, T, T}; }
  Dims scores_strides() const { return {H * T * T, T * T, T, 1}; }
  Dims scores_transposed() const { return {H * T * T, T * T, 1, T}; }
  Dims rows() const { return {B, H, T, 1}; }
  Dims rows_strides() const { return {H * T, T, 1, 1}; }
};

// Two spellings of the causal mask, tried in this order: cudnn-frontend's current one
// (index generation computed in fp32, masked scores -inf from cuDNN 9.10) and its older
// one (in int32, masked scores the lowest float). Which one an engine matches is only known
// on a GPU, so prepare() tries both.
struct Spelling {
  cudnnDataType_t index_compute;
  bool lowest_masked;  // else -inf (cuDNN >= 9.10; before, the lowest float in any case)
  const char* name;
};
const Spelling kSpellings[] = {
    {CUDNN_DATA_FLOAT, false, "mask indices in fp32"},
    {CUDNN_DATA_INT32, true, "mask indices in int32, lowest float masked"},
};

// x with every score above the diagonal (key after query) replaced by neg_inf.
Graph::T causal_mask(Graph& g, const Layout& l, const Spelling& spelling, Graph::T x,
                     Graph::T neg_inf) {
  Graph::T row = g.virtual_tensor(CUDNN_DATA_INT32, l.scores(), l.scores_strides());
  Graph::T col = g.virtual_tensor(CUDNN_DATA_INT32, l.scores(), l.scores_strides());
  Graph::T keep = g.virtual_tensor(CUDNN_DATA_BOOLEAN, l.scores(), l.scores_strides());
  Graph::T masked = g.virtual_tensor(CUDNN_DATA_FLOAT, l.scores(), l.scores_strides());
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, x, row, nullptr, nullptr, spelling.index_compute, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, x, col, nullptr, nullptr, spelling.index_compute, 3);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, row, keep, col, nullptr, CUDNN_DATA_BOOLEAN);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, x, masked, neg_inf, keep);  // keep ? x : -inf
  return masked;
}

// A virtual fp32 score-shaped tensor (an intermediate of the softmax chains).
Graph::T scores(Graph& g, const Layout& l) {
  return g.virtual_tensor(CUDNN_DATA_FLOAT, l.scores(), l.scores_strides());
}
Graph::T row_values(Graph& g, const Layout& l) {
  return g.virtual_tensor(CUDNN_DATA_FLOAT, l.rows(), l.rows_strides());
}

// S = Q K^T * scale, causal; lse = M + log Z; O = softmax(S) V (the header's forward).
void build_forward(Graph& g, const Layout& l, const Spelling& spelling) {
  const auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto kt = g.tensor(kK, CUDNN_DATA_BFLOAT16, l.bhdt(), l.in_qkv_transposed());
  const auto v = g.tensor(kV, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_out());
  const auto lse = g.tensor(kStats, CUDNN_DATA_FLOAT, l.rows(), l.rows_strides());
  const auto scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf);

  const auto s = scores(g, l), scaled = scores(g, l);
  g.matmul(q, kt, s);
  g.pointwise(CUDNN_POINTWISE_MUL, s, scaled, scale);
  const auto masked = causal_mask(g, l, spelling, scaled, neg_inf);
  const auto m = row_values(g, l), z = row_values(g, l), log_z = row_values(g, l);
  const auto shifted = scores(g, l), e = scores(g, l);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, m);
  g.pointwise(CUDNN_POINTWISE_SUB, masked, shifted, m);
  g.pointwise(CUDNN_POINTWISE_EXP, shifted, e);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z);
  g.pointwise(CUDNN_POINTWISE_LOG, z, log_z);
  g.pointwise(CUDNN_POINTWISE_ADD, m, lse, log_z);
  // The probabilities are the second matmul's operand: bf16, as the engines take them.
  const auto p = g.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores(), l.scores_strides());
  g.pointwise(CUDNN_POINTWISE_DIV, e, p, z);
  g.matmul(p, v, o);
}

// The header's backward: the softmax recomputed from lse, dV, dS, then dK and dQ (dQ
// summed in an fp32 workspace and rounded to bf16 at the end).
void build_backward(Graph& g, const Layout& l, const Spelling& spelling) {
  const auto q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto kt = g.tensor(kK, CUDNN_DATA_BFLOAT16, l.bhdt(), l.in_qkv_transposed());
  const auto vt = g.tensor(kV, CUDNN_DATA_BFLOAT16, l.bhdt(), l.in_qkv_transposed());
  const auto o = g.tensor(kO, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_out());
  const auto dout = g.tensor(kDO, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_out());
  const auto lse = g.tensor(kStats, CUDNN_DATA_FLOAT, l.rows(), l.rows_strides());
  const auto dq = g.tensor(kDQ, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto dk = g.tensor(kDK, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto dv = g.tensor(kDV, CUDNN_DATA_BFLOAT16, l.bhtd(), l.in_qkv());
  const auto row_sums = g.tensor(kRowSums, CUDNN_DATA_FLOAT, l.rows(), l.rows_strides());
  const auto dq_accum = g.tensor(kDQAccum, CUDNN_DATA_FLOAT, l.bhtd(), l.packed_bhtd());
  const auto scale = g.scalar(kScale), neg_inf = g.scalar(kNegInf), one = g.scalar(kOne);

  // D = rowsum(dO * O), stored (the engines read it back per tile).
  // (A virtual tensor's strides are not a layout; these are cudnn-frontend's, whose graphs
  // the engines were matched against.)
  const auto do_o = g.virtual_tensor(CUDNN_DATA_FLOAT, l.bhtd(),
                                     {l.H * l.T * l.D, l.T * l.D, l.H * l.D, 1});
  const auto d = row_values(g, l);
  g.pointwise(CUDNN_POINTWISE_MUL, dout, do_o, o);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, d);
  g.pointwise(CUDNN_POINTWISE_MUL, d, row_sums, one);

  // P = exp(Q K^T * scale - lse), causal.
  const auto s = scores(g, l), scaled = scores(g, l), shifted = scores(g, l), p = scores(g, l);
  g.matmul(q, kt, s);
  g.pointwise(CUDNN_POINTWISE_MUL, s, scaled, scale);
  g.pointwise(CUDNN_POINTWISE_SUB, scaled, shifted, lse);
  g.pointwise(CUDNN_POINTWISE_EXP, causal_mask(g, l, spelling, shifted, neg_inf), p);

  // dV = P^T dO.
  const auto p_t = g.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores(), l.scores_transposed());
  g.reshape(p, p_t);
  g.matmul(p_t, dout, dv);

  // dS = P * (dO V^T - D) * scale.
  const auto dp = scores(g, l), dp_minus_d = scores(g, l), ds_unscaled = scores(g, l),
             ds = scores(g, l);
  g.matmul(dout, vt, dp);
  g.pointwise(CUDNN_POINTWISE_SUB, dp, dp_minus_d, row_sums);
  g.pointwise(CUDNN_POINTWISE_MUL, dp_minus_d, ds_unscaled, p);
  g.pointwise(CUDNN_POINTWISE_MUL, ds_unscaled, ds, scale);

  // dK = dS^T Q.
  const auto ds_t = g.virtual_tensor(CUDNN_DATA_BFLOAT16, l.scores(), l.scores_transposed());
  g.reshape(ds, ds_t);
  g.matmul(ds_t, q, dk);

  // dQ = dS K, K being K^T transposed back.
  const auto k = g.virtual_tensor(CUDNN_DATA_FLOAT, l.bhtd(), l.in_qkv());
  g.reshape(kt, k);
  g.matmul(ds, k, dq_accum);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, dq);
}

Layout layout_of(int B, int T, int C, int NH) {
  return Layout{B, NH, T, C / NH, C};
}

// An execution plan and the engine configuration it was built from (kept alive with it,
// as cudnn-frontend does).
struct Plan {
  Descriptor config, plan;
  int64_t workspace_bytes = 0;
};

// The first of cuDNN's heuristic choices (mode A) that builds an execution plan.
Plan build_plan(cudnnHandle_t handle, Descriptor& graph, const std::string& what) {
  Descriptor heuristics(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, what + " heuristics");
  heuristics.set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph.get())
      .set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, CUDNN_HEUR_MODE_A)
      .finalize();
  int64_t count = 0;
  check(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                 CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
        "counting the engines for the " + what);
  std::vector<Descriptor> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; i++) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, what + " engine config");
    raw.push_back(configs.back().get());
  }
  int64_t returned = 0;
  if (count > 0)
    check(cudnnBackendGetAttribute(heuristics.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                   CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &returned, raw.data()),
          "listing the engines for the " + what);
  std::string last_failure = "cuDNN's heuristics offer no engine";
  for (int64_t i = 0; i < returned; i++) {
    try {
      Descriptor plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, what + " execution plan");
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, handle)
          .set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, raw[i])
          .finalize();
      int64_t bytes = 0;
      check(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                     CUDNN_TYPE_INT64, 1, nullptr, &bytes),
            "reading the " + what + " plan's workspace size");
      return Plan{std::move(configs[(size_t)i]), std::move(plan), bytes};
    } catch (const Error& e) {
      last_failure = e.what();
    }
  }
  throw Error("no cuDNN engine runs the " + what + " graph: " + last_failure);
}

void execute(cudnnHandle_t handle, const Descriptor& plan,
             const std::vector<std::pair<int64_t, const void*>>& data, void* workspace,
             const char* what) {
  std::vector<int64_t> uids;
  std::vector<void*> pointers;
  for (const auto& [uid, pointer] : data) {
    uids.push_back(uid);
    pointers.push_back(const_cast<void*>(pointer));  // cuDNN's API is not const-correct
  }
  Descriptor pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, std::string(what) + " variant pack");
  pack.set_array(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, uids.data(),
                 (int64_t)uids.size())
      .set_array(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, pointers.data(),
                 (int64_t)pointers.size())
      .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, workspace)
      .finalize();
  check(cudnnBackendExecute(handle, plan.get(), pack.get()), std::string("running the ") + what);
}

// An array grown to at least count elements (contents not kept).
template <typename E>
E* at_least(DeviceArray<E>& array, int64_t count, const char* what) {
  if (array.size() < count) {
    array = DeviceArray<E>();
    array = DeviceArray<E>(count, what);
  }
  return array.data();
}

}  // namespace

struct CudnnAttention::Plans {
  std::string unsupported;  // why not, or "" with the plans below
  const char* spelling = "";
  Graph forward_graph, backward_graph;
  std::unique_ptr<Plan> forward, backward;
  // The by-value scalars, read from here when a plan runs.
  float scale = 0, neg_inf = 0, one = 1;
  int64_t workspace_bytes() const {
    return std::max(forward->workspace_bytes, backward->workspace_bytes);
  }
};

namespace {
// Both graphs of one shape in one spelling, and their plans; throws Error saying why not.
void build_plans(CudnnAttention::Plans& p, cudnnHandle_t handle, const Layout& layout,
                 const Spelling& spelling, size_t version) {
  p.spelling = spelling.name;
  build_forward(p.forward_graph, layout, spelling);
  build_backward(p.backward_graph, layout, spelling);
  p.forward = std::make_unique<Plan>(build_plan(
      handle, p.forward_graph.operation_graph(handle, "attention forward"), "attention forward"));
  p.backward = std::make_unique<Plan>(build_plan(
      handle, p.backward_graph.operation_graph(handle, "attention backward"),
      "attention backward"));
  p.scale = 1.0f / std::sqrt((float)layout.D);
  p.neg_inf = spelling.lowest_masked || version < 91000 ? std::numeric_limits<float>::lowest()
                                                         : -std::numeric_limits<float>::infinity();
}
}  // namespace

CudnnAttention::CudnnAttention() = default;

CudnnAttention::~CudnnAttention() {
  plans_.clear();  // before the handle they were built with
  if (handle_) cudnnDestroy(static_cast<cudnnHandle_t>(handle_));
}

std::string CudnnAttention::check_descriptors(int B, int T, int C, int NH) {
  try {
    for (const Spelling& spelling : kSpellings) {
      Graph forward, backward;
      build_forward(forward, layout_of(B, T, C, NH), spelling);
      build_backward(backward, layout_of(B, T, C, NH), spelling);
    }
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::string CudnnAttention::prepare(int B, int T, int C, int NH) {
  const auto key = std::make_tuple(B, T, C, NH);
  if (auto it = plans_.find(key); it != plans_.end()) return it->second->unsupported;
  std::unique_ptr<Plans> plans;
  try {
    const size_t version = cudnnGetVersion();
    // cuDNN before 9.16 needs a padding mask for a key length not a multiple of 128; the
    // graphs here have none.
    if (version < 91600 && T % 128 != 0)
      throw Error("cuDNN " + std::to_string(version) + " (before 9.16) needs T a multiple of 128");
    // cuDNN 9.10.0 and 9.10.1 have known bugs in their bf16/fp16 attention; cudnn-frontend
    // and onnxruntime refuse them too.
    if (version == 91000 || version == 91001)
      throw Error("cuDNN " + std::to_string(version) +
                  " has known bugs in its bf16 attention (9.10.0 and 9.10.1 are refused)");
    // K and V start C and 2C elements into each qkv row, and every tensor is declared
    // 16-byte aligned: C must be a multiple of 8 bf16 elements.
    if (C % 8 != 0) throw Error("cuDNN attention needs C a multiple of 8, got " + std::to_string(C));
    if (!handle_) {
      cudnnHandle_t handle = nullptr;
      check(cudnnCreate(&handle), "cudnnCreate");
      handle_ = handle;
    }
    std::string failures;
    for (const Spelling& spelling : kSpellings) {
      auto attempt = std::make_unique<Plans>();
      try {
        build_plans(*attempt, static_cast<cudnnHandle_t>(handle_), layout_of(B, T, C, NH),
                    spelling, version);
        plans = std::move(attempt);
        break;
      } catch (const Error& e) {
        failures += (failures.empty() ? "" : "; ") + std::string(spelling.name) + ": " + e.what();
      }
    }
    if (!plans) throw Error(failures);
  } catch (const Error& e) {
    plans = std::make_unique<Plans>();
    plans->unsupported = std::string(e.what()) + " (B=" + std::to_string(B) + " T=" +
                         std::to_string(T) + " head size " + std::to_string(C / NH) + ")";
  }
  return plans_.emplace(key, std::move(plans)).first->second->unsupported;
}

std::string CudnnAttention::describe(int B, int T, int C, int NH) const {
  const auto it = plans_.find(std::make_tuple(B, T, C, NH));
  if (it == plans_.end()) return "not prepared";
  const Plans& p = *it->second;
  if (!p.unsupported.empty()) return p.unsupported;
  return std::string(p.spelling) + ", workspace " + std::to_string(p.workspace_bytes()) +
         " bytes";
}

const CudnnAttention::Plans& CudnnAttention::plans_for(int B, int T, int C, int NH,
                                                       const char* caller) {
  auto it = plans_.find(std::make_tuple(B, T, C, NH));
  if (it == plans_.end())
    throw Error(std::string("cuDNN attention ") + caller + ": shape B=" + std::to_string(B) +
                " T=" + std::to_string(T) + " C=" + std::to_string(C) + " NH=" +
                std::to_string(NH) + " was not prepared");
  if (!it->second->unsupported.empty())
    throw Error(std::string("cuDNN attention ") + caller + ": " + it->second->unsupported);
  return *it->second;
}

void CudnnAttention::forward(float* out, float* lse, const float* qkv, int B, int T, int C,
                             int NH, cudaStream_t stream) {
  const Plans& p = plans_for(B, T, C, NH, "forward");
  const auto handle = static_cast<cudnnHandle_t>(handle_);
  check(cudnnSetStream(handle, stream), "cudnnSetStream");
  const int64_t N = (int64_t)B * T, rows = (int64_t)B * NH * T;
  uint16_t* qkv16 = at_least(qkv16_, N * 3 * C, "cuDNN attention's bf16 qkv");
  uint16_t* o16 = at_least(o16_, N * C, "cuDNN attention's bf16 output");
  void* workspace = at_least(workspace_, p.workspace_bytes(), "cuDNN attention's workspace");
  float* stats = staged_lse(lse, rows);
  round_to_16bit(Dtype::bf16, qkv16, qkv, N * 3 * C, stream);
  execute(handle, p.forward->plan,
          {{kQ, qkv16}, {kK, qkv16 + C}, {kV, qkv16 + 2 * C}, {kO, o16}, {kStats, stats},
           {kScale, &p.scale}, {kNegInf, &p.neg_inf}},
          workspace, "attention forward");
  if (stats != lse)
    check_cuda(cudaMemcpyAsync(lse, stats, sizeof(float) * (size_t)rows,
                               cudaMemcpyDeviceToDevice, stream),
               "cudaMemcpyAsync (cuDNN attention's lse)");
  widen_16bit(Dtype::bf16, out, o16, N * C, stream);
}

void CudnnAttention::backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                              const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream) {
  const Plans& p = plans_for(B, T, C, NH, "backward");
  const auto handle = static_cast<cudnnHandle_t>(handle_);
  check(cudnnSetStream(handle, stream), "cudnnSetStream");
  const int64_t N = (int64_t)B * T, rows = (int64_t)B * NH * T;
  uint16_t* qkv16 = at_least(qkv16_, N * 3 * C, "cuDNN attention's bf16 qkv");
  uint16_t* o16 = at_least(o16_, N * C, "cuDNN attention's bf16 output");
  uint16_t* do16 = at_least(do16_, N * C, "cuDNN attention's bf16 output gradient");
  uint16_t* dqkv16 = at_least(dqkv16_, N * 3 * C, "cuDNN attention's bf16 dqkv");
  float* row_sums = at_least(row_sums_, rows, "cuDNN attention's row sums");
  float* dq_accum = at_least(dq_accum_, N * C, "cuDNN attention's dq accumulator");
  void* workspace = at_least(workspace_, p.workspace_bytes(), "cuDNN attention's workspace");
  const float* stats = staged_lse(const_cast<float*>(lse), rows);
  if (stats != lse)
    check_cuda(cudaMemcpyAsync(const_cast<float*>(stats), lse, sizeof(float) * (size_t)rows,
                               cudaMemcpyDeviceToDevice, stream),
               "cudaMemcpyAsync (cuDNN attention's lse)");
  // The forward's bf16 copies may hold another layer's by now: round again (out rounds to
  // the very bf16 values the forward widened it from).
  round_to_16bit(Dtype::bf16, qkv16, qkv, N * 3 * C, stream);
  round_to_16bit(Dtype::bf16, o16, out, N * C, stream);
  round_to_16bit(Dtype::bf16, do16, dout, N * C, stream);
  check_cuda(cudaMemsetAsync(dq_accum, 0, sizeof(float) * (size_t)(N * C), stream),
             "cudaMemsetAsync (cuDNN attention's dq accumulator)");
  execute(handle, p.backward->plan,
          {{kQ, qkv16}, {kK, qkv16 + C}, {kV, qkv16 + 2 * C}, {kO, o16}, {kDO, do16},
           {kStats, stats}, {kDQ, dqkv16}, {kDK, dqkv16 + C}, {kDV, dqkv16 + 2 * C},
           {kRowSums, row_sums}, {kDQAccum, dq_accum}, {kScale, &p.scale},
           {kNegInf, &p.neg_inf}, {kOne, &p.one}},
          workspace, "attention backward");
  add_widened_16bit(Dtype::bf16, dqkv, dqkv16, N * 3 * C, stream);
}

float* CudnnAttention::staged_lse(float* lse, int64_t rows) {
  // Every tensor is declared 16-byte aligned (as cudnn-frontend declares them); the
  // model's lse of one layer starts wherever the previous layers' end.
  if (reinterpret_cast<uintptr_t>(lse) % 16 == 0) return lse;
  return at_least(lse_, rows, "cuDNN attention's aligned lse");
}

}  // namespace tessera::kernels::cuda
