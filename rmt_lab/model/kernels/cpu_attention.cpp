// Softmax attention for the CPU, fp32, every key visible: out = softmax(scale * Q K^T) V.
//
// Built on first use by rmt_lab/model/kernels/__init__.py (torch.utils.cpp_extension). The shape it is
// for: an RMT segment of a few hundred positions and heads of 32-64 dims, where the flash kernel torch
// ships for the CPU reaches about 45% of the matmul peak (two BLAS calls per 64-row query block, with K
// or N the head dim); this one takes ~0.70x its time at 512 positions and 12 heads of 32. One head's
// keys (transposed) and values are packed once into contiguous buffers, and each block of query rows
// runs three passes that stay in the L1/L2 caches:
//   1. scores S = (scale Q) K^T, register tiles of 8 rows x 2 vectors of keys, with each row's max, key tile
//      by key tile (keys packed tile-major), so a tile read from L2 serves the whole block from L1;
//   2. S <- exp(S - max) in place and each row's sum (as 2^x of scores kept in log2 units, see exp2_nonpositive);
//   3. out = S V / sum, register tiles of (16 / vectors per head) rows x the head's vectors.
// A block is 8 query rows (16 for heads of one vector), see block_rows.
// Inputs (batch, heads, length, dim) with any strides whose last one is 1; the output is (batch, query
// length, heads, dim), contiguous: the layout the attention's output projection reads.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();
constexpr int QK_ROWS = 8;     // query rows per register tile of the scores
constexpr int QK_VECS = 2;     // vectors of keys per register tile of the scores
constexpr int64_t TILE = QK_VECS * W;  // keys per tile; packed keys are tile after tile, each (D, TILE)
constexpr int ACCUMULATORS = 16;  // vector registers a register tile of weighted values accumulates in

// Query rows of a head dim D that one register tile of weighted values covers (D / W vectors a row).
template <int64_t D>
constexpr int64_t pv_rows() { return std::max<int64_t>(1, ACCUMULATORS / (D / W)); }

// Query rows per block: one register tile of the scores, or of the weighted values where that is taller
// (a head of one vector). Its scores, 8 x 512 floats at 512 keys, stay in the L1 cache; blocks of 16 rows
// took ~4% longer at 12 heads of 32 dims, of 8 rows ~8% longer at heads of 16.
template <int64_t D>
constexpr int64_t block_rows() { return std::max<int64_t>(QK_ROWS, pv_rows<D>()); }

// Where packed (transposed) keys keep key j's dim d.
template <int64_t D>
inline int64_t kt_index(int64_t j, int64_t d) { return (j / TILE) * D * TILE + d * TILE + j % TILE; }

// One tile of scores: R query rows (packed, scaled) against TILE keys (one packed tile), stored at s[r][0..TILE)
// (rows n_keys apart); vmax[r] takes the running max of each row.
template <int R, int64_t D>
inline void tile_scores(const float* q, const float* tile, float* s, int64_t n_keys, Vec* vmax) {
  Vec acc[R][QK_VECS];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < QK_VECS; ++c) acc[r][c] = Vec(0.f);
#pragma GCC unroll 16
  for (int64_t d = 0; d < D; ++d) {
    Vec b[QK_VECS];
    for (int c = 0; c < QK_VECS; ++c) b[c] = Vec::loadu(tile + d * TILE + c * W);
    for (int r = 0; r < R; ++r) {
      const Vec a(q[r * D + d]);
      for (int c = 0; c < QK_VECS; ++c) acc[r][c] = at::vec::fmadd(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < QK_VECS; ++c) {
      acc[r][c].store(s + r * n_keys + c * W);
      vmax[r] = at::vec::maximum(vmax[r], acc[r][c]);
    }
}

// Scores of a block's `rows` query rows against every key: s[r][j], each row's max in row_max[r]. Tile by
// tile, so each packed tile of keys is read from the L2 cache once per block and reused from L1.
template <int64_t D>
inline void block_scores(const float* q, int64_t rows, const float* kt, int64_t n_keys, float* s, float* row_max) {
  Vec vmax[block_rows<D>()];
  for (int64_t r = 0; r < rows; ++r) vmax[r] = Vec(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + TILE <= n_keys; j += TILE) {
    const float* tile = kt + kt_index<D>(j, 0);
    int64_t r = 0;
    for (; r + QK_ROWS <= rows; r += QK_ROWS) tile_scores<QK_ROWS, D>(q + r * D, tile, s + r * n_keys + j, n_keys, vmax + r);
    for (; r < rows; ++r) tile_scores<1, D>(q + r * D, tile, s + r * n_keys + j, n_keys, vmax + r);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float m = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return at::vec::maximum(x, y); }, vmax[r]);
    for (int64_t jj = j; jj < n_keys; ++jj) {  // keys past the last full tile
      float acc = 0.f;
      for (int64_t d = 0; d < D; ++d) acc += q[r * D + d] * kt[kt_index<D>(jj, d)];
      s[r * n_keys + jj] = acc;
      m = std::max(m, acc);
    }
    row_max[r] = m;
  }
}

// 2^x for x <= 0 (scores minus their row max, in log2 units); below 2^-126 (a weight under 1e-38 next
// to the max's 1) it returns 2^-126, never a denormal. AVX-512: x = n + f with n an integer, |f| <= 1/2,
// 2^f by its degree-6 Taylor polynomial (relative error < 1.3e-7), times 2^n by scalef: 10 instructions.
inline Vec exp2_nonpositive(Vec x) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 v = _mm512_max_ps(x, _mm512_set1_ps(-126.f));
  const __m512 n = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(v, n);
  __m512 p = _mm512_set1_ps(1.5403530393381606e-4f);            // ln2^6 / 6!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));  // ln2^5 / 5!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f));  // ln2^4 / 4!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f));  // ln2^3 / 3!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f));  // ln2^2 / 2!
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f));  // ln2
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return Vec(_mm512_scalef_ps(p, n));
#else
  return (at::vec::maximum(x, Vec(-126.f)) * Vec(0.69314718055994531f)).exp_u20();
#endif
}

// s <- 2^(s - max) over one row of scores in log2 units; returns the row's sum.
inline float exp_row(float* s, int64_t n_keys, float max) {
  const Vec vm(max);
  Vec vsum(0.f);
  int64_t j = 0;
  for (; j + W <= n_keys; j += W) {
    const Vec e = exp2_nonpositive(Vec::loadu(s + j) - vm);
    e.store(s + j);
    vsum = vsum + e;
  }
  float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, vsum);
  for (; j < n_keys; ++j) {
    s[j] = std::exp2(std::max(s[j] - max, -126.f));
    sum += s[j];
  }
  return sum;
}

// out[r][:] = (sum_j p[r][j] v[j][:]) / sum[r] for R rows; v packed (keys, D), out rows `out_stride` apart.
template <int R, int64_t D>
inline void weighted_values(const float* p, int64_t n_keys, const float* v, const float* sum, float* out,
                            int64_t out_stride) {
  constexpr int NV = D / W;
  Vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = Vec(0.f);
  for (int64_t j = 0; j < n_keys; ++j) {
    Vec b[NV];
    for (int c = 0; c < NV; ++c) b[c] = Vec::loadu(v + j * D + c * W);
    for (int r = 0; r < R; ++r) {
      const Vec a(p[r * n_keys + j]);
      for (int c = 0; c < NV; ++c) acc[r][c] = at::vec::fmadd(a, b[c], acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const Vec inv(1.f / sum[r]);
    for (int c = 0; c < NV; ++c) (acc[r][c] * inv).store(out + r * out_stride + c * W);
  }
}

template <int64_t D>
void attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, float scale, at::Tensor& out) {
  constexpr int64_t BLOCK = block_rows<D>();
  constexpr int PV_ROWS = pv_rows<D>();
  const int64_t batch = q.size(0), heads = q.size(1), n_q = q.size(2), n_keys = k.size(2);
  const int64_t blocks = (n_q + BLOCK - 1) / BLOCK;
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const int64_t out_row = heads * D;  // out is (batch, n_q, heads, D)
  at::parallel_for(0, batch * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt((n_keys + TILE - 1) / TILE * TILE * D), vp(n_keys * D), s(BLOCK * n_keys), qp(BLOCK * D);
    float row_max[BLOCK], row_sum[BLOCK];
    int64_t packed = -1;  // the (batch, head) whose keys and values kt / vp hold
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / blocks, b = bh / heads, h = bh % heads, r0 = (task % blocks) * BLOCK;
      if (bh != packed) {
        const float* kb = k_data + b * k.stride(0) + h * k.stride(1);
        const float* vb = v_data + b * v.stride(0) + h * v.stride(1);
        int64_t j = 0;
        if (D % 16 == 0)  // 16 x 16 blocks, inside a tile: TILE is 16 or 32
          for (; j + 16 <= n_keys; j += 16)
            for (int64_t d = 0; d < D; d += 16)
              at::vec::transpose_mxn<float, 16, 16>(kb + j * k.stride(2) + d, k.stride(2), kt.data() + kt_index<D>(j, d),
                                                    TILE);
        for (; j < n_keys; ++j)
          for (int64_t d = 0; d < D; ++d) kt[kt_index<D>(j, d)] = kb[j * k.stride(2) + d];
        for (j = 0; j < n_keys; ++j)
          for (int64_t d = 0; d < D; d += W) Vec::loadu(vb + j * v.stride(2) + d).store(vp.data() + j * D + d);
        packed = bh;
      }
      const int64_t rows = std::min(BLOCK, n_q - r0);
      const float* qb = q_data + b * q.stride(0) + h * q.stride(1) + r0 * q.stride(2);
      const Vec vscale(scale * 1.4426950408889634f);  // log2(e): scores in log2 units, softmax by 2^x
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t d = 0; d < D; d += W) (Vec::loadu(qb + r * q.stride(2) + d) * vscale).store(qp.data() + r * D + d);
      block_scores<D>(qp.data(), rows, kt.data(), n_keys, s.data(), row_max);
      int64_t r = 0;
      for (; r < rows; ++r) row_sum[r] = exp_row(s.data() + r * n_keys, n_keys, row_max[r]);
      float* ob = out_data + b * n_q * out_row + r0 * out_row + h * D;
      for (r = 0; r + PV_ROWS <= rows; r += PV_ROWS)
        weighted_values<PV_ROWS, D>(s.data() + r * n_keys, n_keys, vp.data(), row_sum + r, ob + r * out_row, out_row);
      for (; r < rows; ++r)
        weighted_values<1, D>(s.data() + r * n_keys, n_keys, vp.data(), row_sum + r, ob + r * out_row, out_row);
    }
  });
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "cpu_attention: CPU tensors only");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "cpu_attention: float32 only");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "cpu_attention: (batch, heads, length, dim) inputs");
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
              "cpu_attention: q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes(), " do not match");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "cpu_attention: last dim must be contiguous");
  TORCH_CHECK(k.size(2) > 0, "cpu_attention: no keys");
  auto out = at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options());
  const float s = static_cast<float>(scale);
  switch (q.size(3)) {
    case W: attention_kernel<W>(q, k, v, s, out); break;
    case 2 * W: attention_kernel<2 * W>(q, k, v, s, out); break;
    case 4 * W: attention_kernel<4 * W>(q, k, v, s, out); break;
    case 8 * W: attention_kernel<8 * W>(q, k, v, s, out); break;
    default: TORCH_CHECK(false, "cpu_attention: head dim ", q.size(3), " not in ", W, ", ", 2 * W, ", ", 4 * W, ", ", 8 * W);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention", &attention, "softmax(scale q k^T) v, fp32, no mask; returns (batch, length, heads, dim)");
}
