// Softmax attention for the CPU, fp32, every key visible or a causal mask, with optional dropout of the
// weights: out = dropout(softmax(scale * Q K^T)) V, and its gradient.
//
// Built on first use by rmt_lab/model/kernels/__init__.py (torch.utils.cpp_extension). The shape it is
// for: an RMT segment of a few hundred positions and heads of 32-64 dims, where the flash kernel torch
// ships for the CPU reaches about 45-50% of the matmul peak, forward and backward (two BLAS calls per
// 64-row query block, with K or N the head dim). Measured figures: the README's speed section.
//
// Forward. One head's keys (transposed) and values are packed once into contiguous buffers (zero past the
// last key, up to a whole tile), and each block of query rows runs three passes that stay in the L1/L2 caches:
//   1. scores S = (scale Q) K^T, register tiles of 8 rows x 2 vectors of keys, with each row's max, key tile
//      by key tile (keys packed tile-major), so a tile read from L2 serves the whole block from L1; a last,
//      partial tile runs as whole vectors over the padding, whose lanes stay out of the max;
//   2. S <- exp(S - max) in place and each row's sum (as 2^x of scores kept in log2 units, see exp2_nonpositive);
//   3. out = S V / sum, register tiles of (16 / vectors per head) rows x the head's vectors.
// A block is 8 query rows (16 for heads of one vector), see block_rows. For a backward it also writes each
// row's log-sum-exp, lse = max + log2(sum), in the same log2 units.
//
// Causal (query i of n_q sees keys up to i + n_keys - n_q): a block's scores stop at its last row's last
// visible key, each row takes the max and the exponentials of its own keys only, and the weights past them
// are zeroed before pass 3. Dropout (training): pass 2 multiplies each weight by 0 or 1 / (1 - p) after
// summing the undropped ones, so lse stays that of all the scores; which weights go is a counter-based hash
// of (seed, row, key) (struct Dropout), which the backward evaluates again instead of storing a mask.
//
// Backward, flash-style: the weights are recomputed from lse, never stored. One task per (batch, head) packs
// its keys (transposed, and as rows) and values (transposed), keeps dK and dV in buffers of its own, and
// takes BACKWARD_ROWS query rows at a time, with their dQ, through the key tiles; per tile, all in L1:
//   1. P = 2^(S - lse), S from pass 1's register tiles, P in their epilogue;
//   2. dS = P (dO V^T - rowsum(dO o out)), the same tiles with dO and V in place of Q and K, P read back in
//      their epilogue; with dropout, dS = P (Z (dO V^T) - rowsum(dO o out)) with Z the forward's factors (0
//      or 1 / (1 - p)), since out is then (P o Z) V, and P o Z replaces P for step 4's dV;
//   3. dQ += dS K, register tiles as in pass 3;
//   4. dV += P^T dO and dK += dS^T Q, register tiles of keys x the head's vectors over the block's rows.
// Causal: a block's key tiles stop at its last row's last visible key, and in a tile that crosses the
// diagonal the weights of keys past a row's last are set to 0.
// dQ and dK are scaled once, when written. Like torch's flash backward, it computes five products of the
// forward's size (the scores again); the training FLOPs count four.
//
// Inputs (batch, heads, length, dim) with any strides whose last one is 1; out and its gradient are (batch,
// query length, heads, dim), the layout the attention's output projection reads, and so are the gradients
// of Q, K and V in memory (returned as (batch, heads, length, dim) views): the layout of the projections
// Q, K and V are views of.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t W = Vec::size();
constexpr int QK_ROWS = 8;     // query rows per register tile of the scores
constexpr int QK_VECS = 2;     // vectors of keys per register tile of the scores
constexpr int64_t TILE = QK_VECS * W;  // keys per tile; packed keys are tile after tile, each (D, TILE)
constexpr int ACCUMULATORS = 16;  // vector registers a register tile of weighted values accumulates in
constexpr float LOG2E = 1.4426950408889634f;

// Query rows per block of the backward: a key tile's weights and their gradients, 2 x 32 x 32 floats, and
// the block's rows of Q, dO and dQ stay in L1, and each tile's rows of dK and dV are loaded and stored once
// per block. Blocks of 16 rows took ~3% longer at 12 heads of 32 dims and 511 positions (AVX-512), of 48
// and 64 rows the same within 1-2%. A multiple of QK_ROWS.
#ifndef BACKWARD_ROWS
#define BACKWARD_ROWS 32
#endif

// Query rows of a head dim D that one register tile of weighted values covers (D / W vectors a row).
template <int64_t D>
constexpr int64_t pv_rows() { return std::max<int64_t>(1, ACCUMULATORS / (D / W)); }

// Query rows per block: one register tile of the scores, or of the weighted values where that is taller
// (a head of one vector). Its scores, 8 x 512 floats at 512 keys, stay in the L1 cache; blocks of 16 rows
// took ~4% longer at 12 heads of 32 dims, of 8 rows ~8% longer at heads of 16.
template <int64_t D>
constexpr int64_t block_rows() { return std::max<int64_t>(QK_ROWS, pv_rows<D>()); }

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Where packed (transposed) keys keep key j's dim d.
template <int64_t D>
inline int64_t kt_index(int64_t j, int64_t d) { return (j / TILE) * D * TILE + d * TILE + j % TILE; }

// Rows a pass over a strided tensor asks the cache for ahead of the one it reads. The tensors are (batch, length,
// heads, dim), so a head's rows are 128-512 bytes every few KB: too far apart for the hardware prefetchers,
// and each row read would wait for memory (without: ~20% of the backward's time at 12 heads of 32 dims).
constexpr int64_t PREFETCH_ROWS = 16;

// The cache lines of one row of D floats, fetched for a read (or a write) to come.
template <int64_t D, bool WRITE = false>
inline void prefetch_row(const float* row) {
  for (int64_t d = 0; d < D; d += 64 / sizeof(float)) __builtin_prefetch(row + d, WRITE ? 1 : 0);
}

// n rows of D floats (`stride` apart) packed transposed, tile-major (kt_index). The buffer's entries past n
// are not written: a zeroed buffer keeps them zero, which the backward reads as keys of weight 0.
template <int64_t D>
void pack_transposed(const float* src, int64_t stride, int64_t n, float* dst) {
  int64_t j = 0;
  if (D % 16 == 0)  // 16 x 16 blocks, inside a tile: TILE is 16 or 32
    for (; j + 16 <= n; j += 16) {
      for (int64_t i = j + PREFETCH_ROWS; i < std::min(n, j + PREFETCH_ROWS + 16); ++i) prefetch_row<D>(src + i * stride);
      for (int64_t d = 0; d < D; d += 16)
        at::vec::transpose_mxn<float, 16, 16>(src + j * stride + d, stride, dst + kt_index<D>(j, d), TILE);
    }
  for (; j < n; ++j)
    for (int64_t d = 0; d < D; ++d) dst[kt_index<D>(j, d)] = src[j * stride + d];
}

// n rows of D floats (`stride` apart) packed one after the other, times `mult`.
template <int64_t D>
void pack_rows(const float* src, int64_t stride, int64_t n, float* dst, float mult = 1.f) {
  const Vec m(mult);
  for (int64_t j = 0; j < n; ++j) {
    if (j + PREFETCH_ROWS < n) prefetch_row<D>(src + (j + PREFETCH_ROWS) * stride);
    for (int64_t d = 0; d < D; d += W) (Vec::loadu(src + j * stride + d) * m).store(dst + j * D + d);
  }
}

// One register tile: R packed rows of `a` (D floats each) times VECS vectors of keys of one packed tile;
// epi(r, c, x) gets row r's products x with the tile's keys c W .. (c + 1) W. Always inlined and its loops
// unrolled: otherwise GCC 12 left the d loop rolled, or the accumulators on the stack, behind some epilogues
// (~3% of the forward at 512 positions).
template <int R, int VECS, int64_t D, class Epilogue>
__attribute__((always_inline)) inline void tile_products(const float* a, const float* tile, Epilogue&& epi) {
  Vec acc[R][VECS];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < VECS; ++c) acc[r][c] = Vec(0.f);
#pragma GCC unroll 16
  for (int64_t d = 0; d < D; ++d) {
    Vec b[VECS];
    for (int c = 0; c < VECS; ++c) b[c] = Vec::loadu(tile + d * TILE + c * W);
    for (int r = 0; r < R; ++r) {
      const Vec x(a[r * D + d]);
      for (int c = 0; c < VECS; ++c) acc[r][c] = at::vec::fmadd(x, b[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < VECS; ++c) epi(r, c, acc[r][c]);
}

template <int VECS, int64_t D, class Epilogue>
inline void tile_rows(const float* a, int64_t rows, const float* tile, Epilogue& epi) {
  int64_t r = 0;
  for (; r + QK_ROWS <= rows; r += QK_ROWS)
    tile_products<QK_ROWS, VECS, D>(a + r * D, tile, [&](int i, int c, const Vec& x) { epi(r + i, c * W, x); });
  for (; r < rows; ++r)
    tile_products<1, VECS, D>(a + r * D, tile, [&](int, int c, const Vec& x) { epi(r, c * W, x); });
}

// Products of `rows` packed rows (D floats each) with one packed tile of keys, of which the first `keys` are
// real: epi(r, j, x) gets row r's products x with the tile's keys j .. j + W, for j = 0, W below `keys` (keys
// past it give products with the packing's padding).
template <int64_t D, class Epilogue>
inline void tile_block(const float* a, int64_t rows, const float* tile, int64_t keys, Epilogue&& epi) {
  if (keys > W)
    tile_rows<QK_VECS, D>(a, rows, tile, epi);
  else
    tile_rows<1, D>(a, rows, tile, epi);
}

// 2^x for x <= 0 (scores minus their row max or log-sum-exp, in log2 units); below 2^-126 (a weight under 1e-38 next
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

// Dropout of attention weights, with a keep mask that the backward regenerates instead of storing: weight
// (row, key) is kept iff the top 24 bits of a hash of (seed, row, key) read as a uniform in [0, 1) are >= p,
// and kept weights are scaled by 1 / (1 - p). row = (batch * heads + head) * query length + query. The seed
// (a fresh one per call, drawn from torch's generator) and the row go through splitmix64 once per row; each
// key then costs a 32-bit mix (murmur3's finalizer, a bijection, so a row's keys never share an input), two
// multiplies per vector of keys.
struct Dropout {
  uint64_t seed;
  int32_t threshold;  // keep iff hash >> 8 >= threshold = ceil(p 2^24)
  float scale;        // 1 / (1 - p)
};

constexpr uint32_t KEY_STEP = 0x9E3779B9u;  // 2^32 / golden ratio: consecutive keys far apart before the mix

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

inline uint32_t row_key(const Dropout& d, int64_t row) {
  return static_cast<uint32_t>(splitmix64(d.seed ^ splitmix64(static_cast<uint64_t>(row))) >> 32);
}

// 0 for a dropped key, 1 / (1 - p) for a kept one: key `key` of the row with key `rk`.
inline float keep_scale(const Dropout& d, uint32_t rk, int64_t key) {
  uint32_t x = rk ^ (static_cast<uint32_t>(key) * KEY_STEP);
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return static_cast<int32_t>(x >> 8) >= d.threshold ? d.scale : 0.f;
}

// Lane i's key offset times KEY_STEP, as the vector instructions take it.
constexpr int32_t step(uint32_t i) { return static_cast<int32_t>(i * KEY_STEP); }

// keep_scale of keys key0 .. key0 + W - 1, the same bits lane by lane.
inline Vec keep_scales(const Dropout& d, uint32_t rk, int64_t key0) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512i steps = _mm512_setr_epi32(step(0), step(1), step(2), step(3), step(4), step(5), step(6), step(7),
                                          step(8), step(9), step(10), step(11), step(12), step(13), step(14), step(15));
  __m512i x = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key0) * KEY_STEP)), steps);
  x = _mm512_xor_si512(x, _mm512_set1_epi32(static_cast<int32_t>(rk)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  const __mmask16 keep = _mm512_cmpge_epi32_mask(_mm512_srli_epi32(x, 8), _mm512_set1_epi32(d.threshold));
  return Vec(_mm512_maskz_mov_ps(keep, _mm512_set1_ps(d.scale)));
#elif defined(CPU_CAPABILITY_AVX2)
  const __m256i steps = _mm256_setr_epi32(step(0), step(1), step(2), step(3), step(4), step(5), step(6), step(7));
  __m256i x = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(key0) * KEY_STEP)), steps);
  x = _mm256_xor_si256(x, _mm256_set1_epi32(static_cast<int32_t>(rk)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int32_t>(0x846CA68Bu)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_srli_epi32(x, 8), _mm256_set1_epi32(d.threshold - 1));
  return Vec(_mm256_and_ps(_mm256_castsi256_ps(keep), _mm256_set1_ps(d.scale)));
#else
  float z[W];
  for (int64_t i = 0; i < W; ++i) z[i] = keep_scale(d, rk, key0 + i);
  return Vec::loadu(z);
#endif
}

// s <- 2^(s - max) over one row of scores in log2 units, times keep_scale where DROP; returns the row's sum
// before any weight is dropped (the softmax's denominator).
template <bool DROP>
inline float exp_row(float* s, int64_t n_keys, float max, const Dropout* drop, uint32_t rk) {
  const Vec vm(max);
  Vec vsum(0.f);
  int64_t j = 0;
  for (; j + W <= n_keys; j += W) {
    const Vec e = exp2_nonpositive(Vec::loadu(s + j) - vm);
    if constexpr (DROP)
      (e * keep_scales(*drop, rk, j)).store(s + j);
    else
      e.store(s + j);
    vsum = vsum + e;
  }
  float sum = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, vsum);
  for (; j < n_keys; ++j) {
    s[j] = std::exp2(std::max(s[j] - max, -126.f));
    sum += s[j];
    if constexpr (DROP) s[j] *= keep_scale(*drop, rk, j);
  }
  return sum;
}

// The largest of n scores (a causal row's visible keys).
inline float row_max(const float* s, int64_t n) {
  Vec vmax(-std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + W <= n; j += W) vmax = at::vec::maximum(vmax, Vec::loadu(s + j));
  float m = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return at::vec::maximum(x, y); }, vmax);
  for (; j < n; ++j) m = std::max(m, s[j]);
  return m;
}

// out[x][:] = (out[x][:] if ACCUMULATE) + sum_{y < n} a[x sx + y sy] b[y][:], times mult[x] (not with ACCUMULATE),
// for R rows x: weights times values (sx a row of weights, sy 1) or their transpose (sx 1, sy a row). The R x D
// accumulators stay in registers over the n rows of b, packed (n, D); out's rows are out_stride apart. Strides
// given as std::integral_constant fold into the addresses.
template <int R, int64_t D, bool ACCUMULATE, class SX, class SY>
inline void combine(const float* a, SX sx, SY sy, int64_t n, const float* b, const float* mult, float* out,
                    int64_t out_stride) {
  constexpr int NV = D / W;
  Vec acc[R][NV];
  for (int x = 0; x < R; ++x)
    for (int c = 0; c < NV; ++c) acc[x][c] = ACCUMULATE ? Vec::loadu(out + x * out_stride + c * W) : Vec(0.f);
  for (int64_t y = 0; y < n; ++y) {
    Vec bv[NV];
    for (int c = 0; c < NV; ++c) bv[c] = Vec::loadu(b + y * D + c * W);
    for (int x = 0; x < R; ++x) {
      const Vec w(a[x * sx + y * sy]);
      for (int c = 0; c < NV; ++c) acc[x][c] = at::vec::fmadd(w, bv[c], acc[x][c]);
    }
  }
  for (int x = 0; x < R; ++x) {
    const Vec m(ACCUMULATE ? 1.f : mult[x]);
    for (int c = 0; c < NV; ++c) (ACCUMULATE ? acc[x][c] : acc[x][c] * m).store(out + x * out_stride + c * W);
  }
}

// combine of weights (rows of a, p_stride apart) with values for a block's `rows` rows, pv_rows at a time.
template <int64_t D, bool ACCUMULATE, class Stride>
inline void block_values(const float* p, Stride p_stride, int64_t rows, int64_t n_keys, const float* v,
                         const float* mult, float* out, int64_t out_stride) {
  constexpr int PV_ROWS = pv_rows<D>();
  constexpr std::integral_constant<int64_t, 1> one;
  int64_t r = 0;
  for (; r + PV_ROWS <= rows; r += PV_ROWS)
    combine<PV_ROWS, D, ACCUMULATE>(p + r * p_stride, p_stride, one, n_keys, v, ACCUMULATE ? nullptr : mult + r,
                                    out + r * out_stride, out_stride);
  for (; r < rows; ++r)
    combine<1, D, ACCUMULATE>(p + r * p_stride, p_stride, one, n_keys, v, ACCUMULATE ? nullptr : mult + r,
                              out + r * out_stride, out_stride);
}

// Keys visible to query row i of n_q: all n_keys, or with `causal` those up to i + n_keys - n_q (the query rows
// are the last n_q positions of the keys' sequence; n_q <= n_keys, so every row sees at least one key).
inline int64_t visible_keys(bool causal, int64_t i, int64_t n_q, int64_t n_keys) {
  return causal ? std::min(n_keys, i + n_keys - n_q + 1) : n_keys;
}

template <int64_t D>
void attention_kernel(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, float scale, at::Tensor& out,
                      float* lse, const Dropout* drop, bool causal) {
  constexpr int64_t BLOCK = block_rows<D>();
  const int64_t batch = q.size(0), heads = q.size(1), n_q = q.size(2), n_keys = k.size(2);
  const int64_t blocks = (n_q + BLOCK - 1) / BLOCK;
  const int64_t n_pad = round_up(n_keys, W);  // a row of scores: full vectors, the last one part padding
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  const int64_t out_row = heads * D;  // out is (batch, n_q, heads, D)
  at::parallel_for(0, batch * heads * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(round_up(n_keys, TILE) * D), vp(n_keys * D), s(BLOCK * n_pad), qp(BLOCK * D);
    float row_max_of[BLOCK], row_mult[BLOCK];
    Vec vmax[BLOCK];
    int64_t packed = -1;  // the (batch, head) whose keys and values kt / vp hold
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / blocks, b = bh / heads, h = bh % heads, r0 = (task % blocks) * BLOCK;
      if (bh != packed) {
        pack_transposed<D>(k_data + b * k.stride(0) + h * k.stride(1), k.stride(2), n_keys, kt.data());
        pack_rows<D>(v_data + b * v.stride(0) + h * v.stride(1), v.stride(2), n_keys, vp.data());
        packed = bh;
      }
      const int64_t rows = std::min(BLOCK, n_q - r0);
      // Causal: the block's scores stop at its last row's last visible key (about half the work).
      const int64_t n_block = visible_keys(causal, r0 + rows - 1, n_q, n_keys);
      // Scores in log2 units: softmax by 2^x.
      pack_rows<D>(q_data + b * q.stride(0) + h * q.stride(1) + r0 * q.stride(2), q.stride(2), rows, qp.data(),
                   scale * LOG2E);
      for (int64_t r = 0; r < rows; ++r) vmax[r] = Vec(-std::numeric_limits<float>::infinity());
      // Key tile by key tile, so each tile read from L2 serves the whole block from L1. Lanes past n_block (the
      // last, partial vector) stay out of the max.
      float* sd = s.data();
      Vec* vm = vmax;
      int64_t t = 0;
      for (; t + TILE <= n_block; t += TILE)
        tile_block<D>(qp.data(), rows, kt.data() + kt_index<D>(t, 0), TILE, [sd, vm, n_pad, t](int64_t r, int64_t j, const Vec& x) {
          x.store(sd + r * n_pad + t + j);
          vm[r] = at::vec::maximum(vm[r], x);
        });
      if (t < n_block)
        tile_block<D>(qp.data(), rows, kt.data() + kt_index<D>(t, 0), n_block - t, [&](int64_t r, int64_t j, const Vec& x) {
          x.store(sd + r * n_pad + t + j);
          if (t + j + W <= n_block) vm[r] = at::vec::maximum(vm[r], x);
        });
      const int64_t full = n_block / W * W;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n_row = visible_keys(causal, r0 + r, n_q, n_keys);
        if (n_row < n_block) {  // causal, a row above the block's last: the max of its own keys only
          row_max_of[r] = row_max(sd + r * n_pad, n_row);
          continue;
        }
        float m = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return at::vec::maximum(x, y); }, vmax[r]);
        for (int64_t j = full; j < n_block; ++j) m = std::max(m, sd[r * n_pad + j]);  // the last, partial vector
        row_max_of[r] = m;
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n_row = visible_keys(causal, r0 + r, n_q, n_keys);
        float* sr = sd + r * n_pad;
        const float sum = drop ? exp_row<true>(sr, n_row, row_max_of[r], drop, row_key(*drop, bh * n_q + r0 + r))
                               : exp_row<false>(sr, n_row, row_max_of[r], nullptr, 0);
        std::fill(sr + n_row, sr + n_block, 0.f);  // causal: keys past the row's last weigh nothing below
        row_mult[r] = 1.f / sum;
        if (lse != nullptr) lse[bh * n_q + r0 + r] = row_max_of[r] + std::log2(sum);
      }
      block_values<D, false>(sd, n_pad, rows, n_block, vp.data(), row_mult,
                             out_data + b * n_q * out_row + r0 * out_row + h * D, out_row);
    }
  });
}

template <int64_t D>
void backward_kernel(const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& out, const at::Tensor& lse, float scale, const Dropout* drop, bool causal,
                     at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  constexpr int64_t BLOCK = BACKWARD_ROWS;
  constexpr int64_t KEYS = pv_rows<D>();  // keys per register tile of dK and dV; divides TILE
  constexpr std::integral_constant<int64_t, 1> one;
  constexpr std::integral_constant<int64_t, TILE> tile_row;  // a row of one key tile's weights
  const int64_t batch = q.size(0), heads = q.size(1), n_q = q.size(2), n_keys = k.size(2);
  const int64_t n_pad = round_up(n_keys, TILE);  // packed keys and values, and dK and dV, in whole tiles
  const float* grad_data = grad.data_ptr<float>();
  const float* q_data = q.data_ptr<float>();
  const float* k_data = k.data_ptr<float>();
  const float* v_data = v.data_ptr<float>();
  const float* out_data = out.data_ptr<float>();
  const float* lse_data = lse.data_ptr<float>();
  float* dq_data = dq.data_ptr<float>();
  float* dk_data = dk.data_ptr<float>();
  float* dv_data = dv.data_ptr<float>();
  const int64_t row = heads * D;  // dq is (batch, n_q, heads, D), dk and dv (batch, n_keys, heads, D)
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(n_pad * D), vt(n_pad * D), kp(n_pad * D), dk_acc(n_pad * D), dv_acc(n_pad * D),
        qp(BLOCK * D), qu(BLOCK * D), gp(BLOCK * D), dq_acc(BLOCK * D), p(BLOCK * TILE), ds(BLOCK * TILE);
    float row_lse[BLOCK], row_delta[BLOCK];
    uint32_t row_keys[BLOCK];  // dropout's per-row hash keys
    int64_t row_seen[BLOCK];   // keys each row sees (causal: fewer than all)
    const Vec lanes = Vec::arange(0.f, 1.f);
    float* pd = p.data();
    float* dsd = ds.data();
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / heads, h = bh % heads;
      const float* kb = k_data + b * k.stride(0) + h * k.stride(1);
      pack_transposed<D>(kb, k.stride(2), n_keys, kt.data());
      pack_rows<D>(kb, k.stride(2), n_keys, kp.data());
      pack_transposed<D>(v_data + b * v.stride(0) + h * v.stride(1), v.stride(2), n_keys, vt.data());
      std::fill(dk_acc.begin(), dk_acc.end(), 0.f);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.f);
      for (int64_t r0 = 0; r0 < n_q; r0 += BLOCK) {
        const int64_t rows = std::min(BLOCK, n_q - r0);
        const float* qb = q_data + b * q.stride(0) + h * q.stride(1) + r0 * q.stride(2);
        pack_rows<D>(qb, q.stride(2), rows, qp.data(), scale * LOG2E);  // scores in log2 units, as in the forward
        pack_rows<D>(qb, q.stride(2), rows, qu.data());
        pack_rows<D>(grad_data + b * grad.stride(0) + r0 * grad.stride(1) + h * grad.stride(2), grad.stride(1), rows,
                     gp.data());
        for (int64_t r = 0; r < rows; ++r) {
          row_lse[r] = lse_data[bh * n_q + r0 + r];
          row_seen[r] = visible_keys(causal, r0 + r, n_q, n_keys);
          if (drop) row_keys[r] = row_key(*drop, bh * n_q + r0 + r);
          const float* o = out_data + b * out.stride(0) + (r0 + r) * out.stride(1) + h * out.stride(2);
          Vec acc(0.f);
          for (int64_t d = 0; d < D; d += W) acc = at::vec::fmadd(Vec::loadu(gp.data() + r * D + d), Vec::loadu(o + d), acc);
          row_delta[r] = at::vec::vec_reduce_all<float>([](Vec& x, Vec& y) { return x + y; }, acc);
        }
        std::fill(dq_acc.begin(), dq_acc.end(), 0.f);
        for (int64_t r = r0 + BLOCK; r < std::min(n_q, r0 + 2 * BLOCK); ++r) {  // the next block's rows
          prefetch_row<D>(q_data + b * q.stride(0) + h * q.stride(1) + r * q.stride(2));
          prefetch_row<D>(grad_data + b * grad.stride(0) + r * grad.stride(1) + h * grad.stride(2));
          prefetch_row<D>(out_data + b * out.stride(0) + r * out.stride(1) + h * out.stride(2));
          prefetch_row<D, true>(dq_data + (b * n_q + r) * row + h * D);
        }
        // Causal: the block's keys stop at its last row's last visible one.
        const int64_t n_block = row_seen[rows - 1];
        // One key tile at a time: its weights, their gradients and its keys' rows of dK and dV stay in L1.
        for (int64_t t = 0; t < n_block; t += TILE) {
          const int64_t keys = std::min(TILE, n_block - t);
          if (t + keys <= row_seen[0])  // every row sees every key of the tile
            tile_block<D>(qp.data(), rows, kt.data() + kt_index<D>(t, 0), keys, [&](int64_t r, int64_t j, const Vec& x) {
              exp2_nonpositive(x - Vec(row_lse[r])).store(pd + r * TILE + j);
            });
          else  // causal, the tile crosses the diagonal: keys past a row's last get weight 0 (a select, as 2^x
                // of their scores may overflow)
            tile_block<D>(qp.data(), rows, kt.data() + kt_index<D>(t, 0), keys, [&](int64_t r, int64_t j, const Vec& x) {
              const Vec seen = lanes < Vec(static_cast<float>(row_seen[r] - t - j));
              Vec::blendv(Vec(0.f), exp2_nonpositive(x - Vec(row_lse[r])), seen).store(pd + r * TILE + j);
            });
          // dS = P (dP - delta) with dP the gradient of the dropped weights P Z (Z = keep_scale): Z (dO V^T); dV
          // takes the dropped weights, which replace P once dS is made.
          if (drop)
            tile_block<D>(gp.data(), rows, vt.data() + kt_index<D>(t, 0), keys, [&](int64_t r, int64_t j, const Vec& x) {
              const Vec z = keep_scales(*drop, row_keys[r], t + j), pr = Vec::loadu(pd + r * TILE + j);
              (pr * (x * z - Vec(row_delta[r]))).store(dsd + r * TILE + j);
              (pr * z).store(pd + r * TILE + j);
            });
          else
            tile_block<D>(gp.data(), rows, vt.data() + kt_index<D>(t, 0), keys, [&](int64_t r, int64_t j, const Vec& x) {
              (Vec::loadu(pd + r * TILE + j) * (x - Vec(row_delta[r]))).store(dsd + r * TILE + j);
            });
          if (keys < TILE)  // padding keys, or keys no row of the block sees: weight 0, so they add nothing to dK and dV
            for (int64_t r = 0; r < rows; ++r) {
              std::fill(pd + r * TILE + keys, pd + (r + 1) * TILE, 0.f);
              std::fill(dsd + r * TILE + keys, dsd + (r + 1) * TILE, 0.f);
            }
          block_values<D, true>(dsd, tile_row, rows, keys, kp.data() + t * D, nullptr, dq_acc.data(), D);
          for (int64_t i = 0; i < keys; i += KEYS) {
            combine<KEYS, D, true>(pd + i, one, tile_row, rows, gp.data(), nullptr, dv_acc.data() + (t + i) * D, D);
            combine<KEYS, D, true>(dsd + i, one, tile_row, rows, qu.data(), nullptr, dk_acc.data() + (t + i) * D, D);
          }
        }
        const Vec vscale(scale);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t d = 0; d < D; d += W)
            (Vec::loadu(dq_acc.data() + r * D + d) * vscale).store(dq_data + (b * n_q + r0 + r) * row + h * D + d);
      }
      const Vec vscale(scale);
      for (int64_t j = 0; j < n_keys; ++j) {
        if (j + PREFETCH_ROWS < n_keys) {
          prefetch_row<D, true>(dk_data + (b * n_keys + j + PREFETCH_ROWS) * row + h * D);
          prefetch_row<D, true>(dv_data + (b * n_keys + j + PREFETCH_ROWS) * row + h * D);
        }
        for (int64_t d = 0; d < D; d += W) {
          (Vec::loadu(dk_acc.data() + j * D + d) * vscale).store(dk_data + (b * n_keys + j) * row + h * D + d);
          Vec::loadu(dv_acc.data() + j * D + d).store(dv_data + (b * n_keys + j) * row + h * D + d);
        }
      }
    }
  });
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "cpu_attention: CPU tensors only");
  TORCH_CHECK(q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat && v.scalar_type() == at::kFloat,
              "cpu_attention: float32 only");
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "cpu_attention: (batch, heads, length, dim) inputs");
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
              "cpu_attention: q ", q.sizes(), ", k ", k.sizes(), ", v ", v.sizes(), " do not match");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "cpu_attention: last dim must be contiguous");
  TORCH_CHECK(k.size(2) > 0, "cpu_attention: no keys");
  const int64_t d = q.size(3);
  TORCH_CHECK(d == W || d == 2 * W || d == 4 * W || d == 8 * W, "cpu_attention: head dim ", d, " not in ", W, ", ",
              2 * W, ", ", 4 * W, ", ", 8 * W);
}

// The kernel instantiated for q's head dim (checked by check_inputs): f(std::integral_constant<int64_t, D>).
template <class F>
void for_head_dim(int64_t d, F&& f) {
  switch (d) {
    case W: f(std::integral_constant<int64_t, W>()); break;
    case 2 * W: f(std::integral_constant<int64_t, 2 * W>()); break;
    case 4 * W: f(std::integral_constant<int64_t, 4 * W>()); break;
    default: f(std::integral_constant<int64_t, 8 * W>()); break;
  }
}

// The dropout of probability p (none where p is 0) under `seed`.
std::optional<Dropout> make_dropout(double p, int64_t seed) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, "cpu_attention: dropout ", p, " not in [0, 1)");
  if (p == 0.0) return std::nullopt;
  return Dropout{static_cast<uint64_t>(seed), static_cast<int32_t>(std::ceil(p * (1 << 24))),
                 static_cast<float>(1.0 / (1.0 - p))};
}

void check_causal(const at::Tensor& q, const at::Tensor& k, bool causal) {
  TORCH_CHECK(!causal || q.size(2) <= k.size(2), "cpu_attention: causal needs no more queries than keys, got ",
              q.size(2), " queries and ", k.size(2), " keys");
}

at::Tensor forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, float* lse,
                   const Dropout* drop, bool causal) {
  check_inputs(q, k, v);
  check_causal(q, k, causal);
  auto out = at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options());
  for_head_dim(q.size(3), [&](auto d) {
    attention_kernel<decltype(d)::value>(q, k, v, static_cast<float>(scale), out, lse, drop, causal);
  });
  return out;
}

}  // namespace

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool causal) {
  return forward(q, k, v, scale, nullptr, nullptr, causal);
}

std::tuple<at::Tensor, at::Tensor> attention_with_lse(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                      double scale, double dropout, int64_t seed, bool causal) {
  check_inputs(q, k, v);
  const auto drop = make_dropout(dropout, seed);
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  auto out = forward(q, k, v, scale, lse.data_ptr<float>(), drop ? &*drop : nullptr, causal);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward(const at::Tensor& grad, const at::Tensor& q,
                                                                  const at::Tensor& k, const at::Tensor& v,
                                                                  const at::Tensor& out, const at::Tensor& lse,
                                                                  double scale, double dropout, int64_t seed,
                                                                  bool causal) {
  check_inputs(q, k, v);
  check_causal(q, k, causal);
  const auto drop = make_dropout(dropout, seed);
  const auto out_shape = std::vector<int64_t>{q.size(0), q.size(2), q.size(1), q.size(3)};
  TORCH_CHECK(grad.sizes() == out_shape && out.sizes() == out_shape, "cpu_attention backward: grad ", grad.sizes(),
              " and out ", out.sizes(), " must be (batch, length, heads, dim) ", at::IntArrayRef(out_shape));
  TORCH_CHECK(grad.scalar_type() == at::kFloat && out.scalar_type() == at::kFloat && lse.scalar_type() == at::kFloat &&
              grad.device().is_cpu() && out.device().is_cpu() && lse.device().is_cpu(),
              "cpu_attention backward: float32 CPU tensors only");
  TORCH_CHECK(grad.stride(3) == 1 && out.stride(3) == 1, "cpu_attention backward: last dim must be contiguous");
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({q.size(0), q.size(1), q.size(2)}) && lse.is_contiguous(),
              "cpu_attention backward: lse must be a contiguous (batch, heads, length)");
  auto dq = at::empty(out_shape, q.options());
  auto dk = at::empty({k.size(0), k.size(2), k.size(1), k.size(3)}, k.options());
  auto dv = at::empty({v.size(0), v.size(2), v.size(1), v.size(3)}, v.options());
  for_head_dim(q.size(3), [&](auto d) {
    backward_kernel<decltype(d)::value>(grad, q, k, v, out, lse, static_cast<float>(scale), drop ? &*drop : nullptr,
                                        causal, dq, dk, dv);
  });
  return {dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)};
}

// The forward's dropout factors (0 or 1 / (1 - p)) of every weight, (batch, heads, n_q, n_keys): for tests, which
// check the kernel against attention built in torch from this very mask. Whole vectors of keys as the forward's
// rows take them, then the row's last keys one by one.
at::Tensor dropout_mask(double p, int64_t seed, int64_t batch, int64_t heads, int64_t n_q, int64_t n_keys) {
  const auto drop = make_dropout(p, seed);
  auto mask = at::ones({batch, heads, n_q, n_keys}, at::kFloat);
  if (!drop) return mask;
  float* m = mask.data_ptr<float>();
  for (int64_t row = 0; row < batch * heads * n_q; ++row) {
    const uint32_t rk = row_key(*drop, row);
    int64_t j = 0;
    for (; j + W <= n_keys; j += W) keep_scales(*drop, rk, j).store(m + row * n_keys + j);
    for (; j < n_keys; ++j) m[row * n_keys + j] = keep_scale(*drop, rk, j);
  }
  return mask;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention", &attention,
        "softmax(scale q k^T) v, fp32, every key visible or causal; returns (batch, length, heads, dim)");
  m.def("attention_with_lse", &attention_with_lse,
        "attention with dropout, and each query row's log2-sum-exp of scale log2(e) q k^T (batch, heads, length)");
  m.def("attention_backward", &attention_backward,
        "gradients of q, k, v (as (batch, heads, length, dim) views of (batch, length, heads, dim) tensors)");
  m.def("dropout_mask", &dropout_mask, "the dropout factors of attention_with_lse's weights, for tests");
}
