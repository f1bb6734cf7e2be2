// cuBLASLt on the CPU for the CUDA emulator: see cublaslt_emulator.h for what it computes
// and what it refuses. Written from cuBLASLt's documentation (cublasLt.h):
//  - every matrix is column-major: element (i, j) of a rows x cols layout with leading
//    dimension ld is at i + j * ld, ld >= rows;
//  - op(A) is m x k and op(B) is k x n, where D is m x n: A's layout is m x k, or k x m
//    under TRANSA = T (likewise B); C has D's shape;
//  - D = alpha * op(A) op(B) + beta * C, then the epilogue: the bias (a vector of D's m
//    rows, broadcast over columns) is added before the activation; GELU_AUX* also writes
//    the activation's input to the aux matrix (m x n, leading dimension AUX_LD, which must
//    be a multiple of 8 and at least m);
//  - strided batches: BATCH_COUNT matrices, each STRIDED_BATCH_OFFSET elements after the
//    previous one; the bias is shared by the batch unless BIAS_BATCH_STRIDE says otherwise.
#include "kernels/cuda/emulator/cublaslt_emulator.h"

#include "kernels/cuda/emulator/cuda_emulator.h"  // land_pending

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/cast_bf16.h"
#include "kernels/cpu/cast_fp16.h"

struct cublasLtContext {
  int unused = 0;
};

struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute_type = CUBLAS_COMPUTE_32F;
  int32_t scale_type = CUDA_R_32F;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t trans_a = CUBLAS_OP_N, trans_b = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int64_t bias_batch_stride = 0;
  int32_t bias_type = -1;  // -1: D's type
  void* aux = nullptr;
  int64_t aux_ld = 0, aux_batch_stride = 0;
  int32_t aux_type = -1;  // -1: D's type
};

struct cublasLtMatrixLayoutOpaque_t {
  uint32_t type = CUDA_R_32F;
  int32_t order = CUBLASLT_ORDER_COL;
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  int32_t batch_count = 1;
  int64_t batch_stride = 0;
  int64_t plane_offset = 0;
};

struct cublasLtMatmulPreferenceOpaque_t {
  uint64_t max_workspace_bytes = 0;
  uint32_t search_mode = 0, reduction_scheme_mask = 0x7;
  uint32_t min_alignment[4] = {256, 256, 256, 256};  // A, B, C, D: the heuristic's business
};

namespace {

constexpr uint64_t kAlgoMagic = 0x7E55E8A1A190ull;  // "the emulator's one algorithm"

// *dst = the attribute value in buf, if its size is the documented one.
template <typename T>
cublasStatus_t set_value(T* dst, const void* buf, size_t size) {
  if (buf == nullptr || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(dst, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

bool is_input_type(uint32_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

// The GELU of GPT-2 (and of cuBLASLt's epilogue): the tanh approximation.
float gelu(float x) {
  const float s = 0.7978845608028654f;  // sqrt(2 / pi)
  return 0.5f * x * (1.0f + std::tanh(s * (x + 0.044715f * x * x * x)));
}

bool has_bias(uint32_t epilogue) { return (epilogue & CUBLASLT_EPILOGUE_BIAS) != 0; }
bool has_gelu(uint32_t epilogue) { return (epilogue & CUBLASLT_EPILOGUE_GELU) != 0; }
bool has_aux(uint32_t epilogue) { return (epilogue & 128u) != 0; }

// The problem's sizes, once check_problem has accepted it.
struct Problem {
  int64_t m = 0, n = 0, k = 0, batch = 1;
};

// Everything cublasLtMatmul needs to hold, short of the pointers to the data: what the
// heuristic checks too.
cublasStatus_t check_problem(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                             cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                             cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, Problem* p) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!desc || !a || !b || !c || !d) return CUBLAS_STATUS_INVALID_VALUE;
  // fp32 arithmetic only: TF32 or a 16-bit compute type would round what this computes exactly.
  if (desc->compute_type != CUBLAS_COMPUTE_32F && desc->compute_type != CUBLAS_COMPUTE_32F_PEDANTIC)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (desc->scale_type != CUDA_R_32F || desc->pointer_mode != CUBLASLT_POINTER_MODE_HOST)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  for (auto* l : {a, b, c, d})
    if (l->order != CUBLASLT_ORDER_COL || l->plane_offset != 0) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!is_input_type(a->type) || b->type != a->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (c->type != CUDA_R_32F || d->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (int32_t op : {desc->trans_a, desc->trans_b})
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;

  const int64_t m = (int64_t)d->rows, n = (int64_t)d->cols;
  const bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
  const int64_t a_m = (int64_t)(ta ? a->cols : a->rows), k = (int64_t)(ta ? a->rows : a->cols);
  const int64_t b_k = (int64_t)(tb ? b->cols : b->rows), b_n = (int64_t)(tb ? b->rows : b->cols);
  if (a_m != m || b_k != k || b_n != n || c->rows != d->rows || c->cols != d->cols)
    return CUBLAS_STATUS_INVALID_VALUE;
  for (auto* l : {a, b, c, d}) {
    if (l->ld < 1 || l->ld < (int64_t)l->rows) return CUBLAS_STATUS_INVALID_VALUE;
    if (l->batch_count != d->batch_count || l->batch_count < 1) return CUBLAS_STATUS_INVALID_VALUE;
  }

  const uint32_t e = desc->epilogue;
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_GELU:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX:
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      break;
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (has_bias(e)) {
    if (desc->bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (desc->bias_type != -1 && desc->bias_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (has_aux(e)) {
    if (desc->aux == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (desc->aux_type != -1 && desc->aux_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    // Documented: the GELU input's leading dimension is a multiple of 8, at least m; its
    // batch stride a multiple of 8.
    if (desc->aux_ld < m || desc->aux_ld % 8 != 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (d->batch_count > 1 && desc->aux_batch_stride % 8 != 0) return CUBLAS_STATUS_INVALID_VALUE;
  }
  *p = Problem{m, n, k, d->batch_count};
  return CUBLAS_STATUS_SUCCESS;
}

// The element `index` of an A or B matrix of type t, widened to fp32 (exactly).
float load(uint32_t t, const void* base, int64_t index) {
  switch (t) {
    case CUDA_R_16BF:
      return tessera::kernels::bf16_to_fp32({static_cast<const uint16_t*>(base)[index]});
    case CUDA_R_16F:
      return tessera::kernels::fp16_to_fp32({static_cast<const uint16_t*>(base)[index]});
    default:
      return static_cast<const float*>(base)[index];
  }
}

// out[r * k + p] = op(X)(r, p) for a layout x holding op(X) as R x k (transposed or not):
// each row of op(X) contiguous, for the dot products.
void gather_rows(std::vector<float>& out, const cublasLtMatrixLayoutOpaque_t* x, bool trans,
                 const void* base, int64_t R, int64_t k) {
  out.resize((size_t)(R * k));
  for (int64_t r = 0; r < R; r++)
    for (int64_t p = 0; p < k; p++)
      out[(size_t)(r * k + p)] = load(x->type, base, trans ? p + r * x->ld : r + p * x->ld);
}

}  // namespace

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasGetStatusString(cublasStatus_t status) { return cublasLtGetStatusString(status); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
size_t cublasLtGetVersion(void) { return 130000; }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                        cublasComputeType_t compute_type,
                                        cudaDataType_t scale_type) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque_t;
  (*desc)->compute_type = compute_type;
  (*desc)->scale_type = scale_type;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                              cublasLtMatmulDescAttributes_t attr, const void* buf,
                                              size_t size) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: {
      int32_t v;
      const cublasStatus_t s = set_value(&v, buf, size);
      if (s == CUBLAS_STATUS_SUCCESS) desc->compute_type = (cublasComputeType_t)v;
      return s;
    }
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return set_value(&desc->scale_type, buf, size);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return set_value(&desc->pointer_mode, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSA: return set_value(&desc->trans_a, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return set_value(&desc->trans_b, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return set_value(&desc->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return set_value(&desc->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
      return set_value(&desc->bias_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return set_value(&desc->bias_type, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return set_value(&desc->aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return set_value(&desc->aux_ld, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      return set_value(&desc->aux_batch_stride, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return set_value(&desc->aux_type, buf, size);
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;  // TRANSC, FILL_MODE, scaling pointers, ...
  }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
  if (layout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = new cublasLtMatrixLayoutOpaque_t;
  (*layout)->type = (uint32_t)type;
  (*layout)->rows = rows;
  (*layout)->cols = cols;
  (*layout)->ld = ld;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  if (layout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: return set_value(&layout->type, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return set_value(&layout->order, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return set_value(&layout->rows, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return set_value(&layout->cols, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_LD: return set_value(&layout->ld, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return set_value(&layout->batch_count, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return set_value(&layout->batch_stride, buf, size);
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET: return set_value(&layout->plane_offset, buf, size);
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceOpaque_t;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void* buf, size_t size) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return set_value(&pref->search_mode, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return set_value(&pref->max_workspace_bytes, buf, size);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return set_value(&pref->reduction_scheme_mask, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return set_value(&pref->min_alignment[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf,
                       size);
    default:
      return CUBLAS_STATUS_NOT_SUPPORTED;
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a_desc,
                                              cublasLtMatrixLayout_t b_desc,
                                              cublasLtMatrixLayout_t c_desc,
                                              cublasLtMatrixLayout_t d_desc,
                                              cublasLtMatmulPreference_t pref, int requested_count,
                                              cublasLtMatmulHeuristicResult_t results[],
                                              int* returned_count) {
  if (requested_count <= 0 || results == nullptr || returned_count == nullptr || pref == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returned_count = 0;
  Problem p;
  const cublasStatus_t s = check_problem(handle, desc, a_desc, b_desc, c_desc, d_desc, &p);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].algo.data[0] = kAlgoMagic;
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned_count = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha,
                              const void* A, cublasLtMatrixLayout_t a_desc, const void* B,
                              cublasLtMatrixLayout_t b_desc, const void* beta, const void* C,
                              cublasLtMatrixLayout_t c_desc, void* D, cublasLtMatrixLayout_t d_desc,
                              const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, CUstream_st* stream) {
  (void)workspace, (void)workspace_bytes;
  tessera::kernels::cuda::emulator::land_pending(stream);  // the stream's earlier results
  Problem p;
  const cublasStatus_t s = check_problem(handle, desc, a_desc, b_desc, c_desc, d_desc, &p);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (algo != nullptr && algo->data[0] != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;
  if (alpha == nullptr || beta == nullptr || D == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if ((p.k > 0 && (A == nullptr || B == nullptr))) return CUBLAS_STATUS_INVALID_VALUE;
  // In place (C == D) needs C's layout to be D's.
  if (C == D && (c_desc->ld != d_desc->ld || c_desc->batch_stride != d_desc->batch_stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  if (b != 0.0f && C == nullptr) return CUBLAS_STATUS_INVALID_VALUE;

  const bool ta = desc->trans_a == CUBLAS_OP_T, tb = desc->trans_b == CUBLAS_OP_T;
  const size_t in_bytes = a_desc->type == CUDA_R_32F ? 4 : 2;
  const uint32_t e = desc->epilogue;
  const float* bias = static_cast<const float*>(desc->bias);
  float* aux = static_cast<float*>(desc->aux);
  std::vector<float> rows_a, cols_b;  // op(A) by rows, op(B) by columns, k contiguous
  for (int64_t batch = 0; batch < p.batch; batch++) {
    const char* a_base = static_cast<const char*>(A) + batch * a_desc->batch_stride * in_bytes;
    const char* b_base = static_cast<const char*>(B) + batch * b_desc->batch_stride * in_bytes;
    const float* c_base = static_cast<const float*>(C) + batch * c_desc->batch_stride;
    float* d_base = static_cast<float*>(D) + batch * d_desc->batch_stride;
    // op(A)(i, p): A(i, p), or A(p, i) transposed; op(B)(p, j) read as row j of op(B)^T.
    gather_rows(rows_a, a_desc, ta, a_base, p.m, p.k);
    gather_rows(cols_b, b_desc, !tb, b_base, p.n, p.k);
    for (int64_t j = 0; j < p.n; j++) {
      for (int64_t i = 0; i < p.m; i++) {
        const float* x = rows_a.data() + i * p.k;
        const float* y = cols_b.data() + j * p.k;
        float acc = 0.0f;
        for (int64_t q = 0; q < p.k; q++) acc += x[q] * y[q];
        float v = a * acc;
        if (b != 0.0f) v += b * c_base[i + j * c_desc->ld];  // beta == 0 never reads C
        if (has_bias(e)) v += bias[i + batch * desc->bias_batch_stride];
        if (has_aux(e)) aux[i + j * desc->aux_ld + batch * desc->aux_batch_stride] = v;
        if (has_gelu(e)) v = gelu(v);
        d_base[i + j * d_desc->ld] = v;
      }
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}
