// The specialised GQA attention kernels (see attention.h). Every global
// access goes through GQA_LD / GQA_ST / GQA_CP_ASYNC16, which the
// interpreter counts, so the traffic tests can prove that each K/V element
// is read once per group.
#include <type_traits>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/device_utils.cuh"

namespace gqa::GQA_CUDA_NS {
namespace {

constexpr int kThreads = 128;

// Keys per shared-memory tile: K and V, double-buffered, in at most 32 KiB.
template <typename KvT, int HD>
__host__ __device__ constexpr int KeyTile() {
  constexpr int t = 32768 / (4 * int(sizeof(KvT)) * HD);
  return t > 32 ? 32 : (t < 8 ? 8 : t);
}

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(uint16_t x) { return Bf16BitsToFloat(x); }

// Loads keys [j0, j0 + nj) of KV head g into buffers k_s/v_s (row j - j0 at
// j * HD) with 16-byte asynchronous copies, then closes the copy group.
template <typename KvT, int HD>
__device__ __forceinline__ void LoadKvTile(KvT* k_s, KvT* v_s, const KvT* k_cache, const KvT* v_cache,
                                           const int32_t* table, const KvCacheLayout& layout, int g, int j0, int nj) {
  constexpr int kVec = 16 / int(sizeof(KvT));
  constexpr int kChunks = HD / kVec;
  const int bs = layout.block_size;
  for (int c = threadIdx.x; c < nj * kChunks; c += kThreads) {
    const int j = c / kChunks, d = (c % kChunks) * kVec, p = j0 + j;
    const int32_t block = GQA_LD(table + p / bs);
    const int64_t off = layout.Offset(int64_t(block) * bs + p % bs, g) + d;
    GQA_CP_ASYNC16(k_s + j * HD + d, k_cache + off);
    GQA_CP_ASYNC16(v_s + j * HD + d, v_cache + off);
  }
  AsyncCommit();
}

// Keys [k_begin, k_end) stream through shared memory in tiles of kTile,
// double-buffered: StartKvTiles loads tile 0, and AdvanceKvTiles at tile it
// prefetches tile it + 1 into the other buffer (or closes an empty group, so
// that "all but the newest group" is always this tile), waits for tile it
// and returns how many keys it holds. The caller synchronises the block
// before reading the tile, and again before the next call.
template <typename KvT, int HD, int kTile>
__device__ __forceinline__ void StartKvTiles(KvT (&k_s)[2][kTile * HD], KvT (&v_s)[2][kTile * HD], const KvT* k_cache,
                                             const KvT* v_cache, const int32_t* table, const KvCacheLayout& layout,
                                             int g, int k_begin, int k_end) {
  if (k_end > k_begin) {
    LoadKvTile<KvT, HD>(k_s[0], v_s[0], k_cache, v_cache, table, layout, g, k_begin,
                        k_end - k_begin < kTile ? k_end - k_begin : kTile);
  }
}

template <typename KvT, int HD, int kTile>
__device__ __forceinline__ int AdvanceKvTiles(KvT (&k_s)[2][kTile * HD], KvT (&v_s)[2][kTile * HD], const KvT* k_cache,
                                              const KvT* v_cache, const int32_t* table, const KvCacheLayout& layout,
                                              int g, int k_begin, int k_end, int it) {
  const int j0 = k_begin + it * kTile, next = j0 + kTile;
  if (next < k_end) {
    LoadKvTile<KvT, HD>(k_s[(it & 1) ^ 1], v_s[(it & 1) ^ 1], k_cache, v_cache, table, layout, g, next,
                        k_end - next < kTile ? k_end - next : kTile);
  } else {
    AsyncCommit();
  }
  AsyncWait<1>();
  return k_end - j0 < kTile ? k_end - j0 : kTile;
}

// Scores of one K tile: p_s[r * kTile + j] = q_s[r] . K[j] for the rows r <
// rows and keys j < nj that visible(r, j) allows, -inf elsewhere (up to
// kRowsMax rows, the shared array's size).
template <typename KvT, int HD, int kTile, int kRowsMax, typename Visible>
__device__ __forceinline__ void ScoreTile(float* p_s, const float* q_s, const KvT* kt, int rows, int nj,
                                          Visible visible) {
  for (int i = threadIdx.x; i < kRowsMax * kTile; i += kThreads) {
    const int r = i / kTile, j = i % kTile;
    float s = -INFINITY;
    if (r < rows && j < nj && visible(r, j)) {
      s = 0.0f;
      for (int d = 0; d < HD; ++d) s += q_s[r * HD + d] * ToFloat(kt[j * HD + d]);
    }
    p_s[i] = s;
  }
}

// Online-softmax step of one score row over a tile of kTile scores (nj of
// them valid): scores become probabilities, m (running max) and l (running
// sum) advance, and c receives the factor that rescales the row's earlier
// accumulator. A row that has seen no visible key yet (all -inf) keeps
// m = -inf and c = 1.
template <int kTile>
__device__ __forceinline__ void SoftmaxRowStep(float* p, float& m, float& l, float& c, int nj) {
  float mx = m;
  for (int j = 0; j < nj; ++j) mx = fmaxf(mx, p[j]);
  const float corr = mx == -INFINITY ? 1.0f : expf(m - mx);
  float sum = 0.0f;
  for (int j = 0; j < kTile; ++j) {
    const float e = (j < nj && p[j] != -INFINITY) ? expf(p[j] - mx) : 0.0f;
    p[j] = e;
    sum += e;
  }
  l = l * corr + sum;
  m = mx;
  c = corr;
}

// The accumulators this thread owns (output i = tid + a * kThreads of rows x
// HD): rescaled by their row's factor and advanced by the tile's P V.
template <typename KvT, int HD, int kTile, int kAcc>
__device__ __forceinline__ void AccumulateTile(float (&acc)[kAcc], const float* p_s, const float* c_s, const KvT* vt,
                                               int rows, int nj) {
  GQA_UNROLL
  for (int a = 0; a < kAcc; ++a) {
    const int i = threadIdx.x + a * kThreads;
    if (i < rows * HD) {
      const int r = i / HD, d = i % HD;
      float v = acc[a] * c_s[r];
      for (int j = 0; j < nj; ++j) v += p_s[r * kTile + j] * ToFloat(vt[j * HD + d]);
      acc[a] = v;
    }
  }
}

// Flash-decoding. Block (item, g, split): the query heads of local KV head g
// (at most G) of one decode token, over one split of its context. K/V tiles
// are double-buffered in shared memory and read once for the whole group.
template <typename KvT, int HD, int G>
__global__ void __launch_bounds__(kThreads)
DecodeKernel(const float* q, AttentionMeta meta, KvCacheLayout layout, const KvT* k_cache, const KvT* v_cache,
             AttentionShape shape, const DecodeItem* items, float* out, float* partial_out, float* partial_lse) {
  constexpr int kTile = KeyTile<KvT, HD>();
  constexpr int kAcc = (G * HD + kThreads - 1) / kThreads;
  __shared__ __align__(16) KvT k_s[2][kTile * HD];
  __shared__ __align__(16) KvT v_s[2][kTile * HD];
  __shared__ float q_s[G * HD];
  __shared__ float p_s[G * kTile];
  __shared__ float m_s[G], l_s[G], c_s[G];
  __shared__ int32_t hdr[5];  // token, splits, partial offset, position, sequence

  const int tid = threadIdx.x, g = blockIdx.y, split = blockIdx.z;
  if (tid == 0) {
    DecodeItem item{int32_t(blockIdx.x), 1, -1};
    if (items != nullptr) item = GQA_LD(items + blockIdx.x);
    const int32_t item_pos = GQA_LD(meta.token_pos + item.token);
    if (items == nullptr) {
      // A fixed-grid (captured) step: the splits follow from this step's
      // position, read from device memory, at most gridDim.z of them.
      item.num_splits = DecodeSplits(DecodeContext(item_pos, shape.sliding_window), int(gridDim.z));
      item.partial_offset = item.num_splits > 1 ? int32_t(blockIdx.x * gridDim.z) : -1;
    }
    hdr[0] = item.token;
    hdr[1] = item.num_splits;
    hdr[2] = item.partial_offset;
    hdr[3] = item_pos;
    hdr[4] = GQA_LD(meta.token_seq + item.token);
  }
  __syncthreads();
  const int t = hdr[0], num_splits = hdr[1], offset = hdr[2], pos = hdr[3];
  if (split >= num_splits) return;  // the whole block: this item has fewer splits
  const int32_t* table = meta.block_tables + int64_t(hdr[4]) * meta.max_blocks_per_seq;
  const int start = shape.sliding_window > 0 && pos - shape.sliding_window + 1 > 0 ? pos - shape.sliding_window + 1 : 0;
  const int h0 = shape.FirstQueryHead(g), nh = shape.EndQueryHead(g) - h0;
  // This split's keys: whole tiles, the last split taking the rest.
  const int ctx = pos + 1 - start;
  const int tiles = (ctx + kTile - 1) / kTile;
  const int tiles_per_split = (tiles + num_splits - 1) / num_splits;
  const int k0 = start + split * tiles_per_split * kTile;
  const int k1 = k0 + tiles_per_split * kTile < pos + 1 ? k0 + tiles_per_split * kTile : pos + 1;
  const int my_tiles = k1 > k0 ? (k1 - k0 + kTile - 1) / kTile : 0;

  const float* q_rows = q + (int64_t(t) * shape.num_q_heads + h0) * HD;
  for (int i = tid; i < nh * HD; i += kThreads) q_s[i] = GQA_LD(q_rows + i) * shape.scale;
  if (tid < G) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float acc[kAcc];
GQA_UNROLL
  for (int a = 0; a < kAcc; ++a) acc[a] = 0.0f;
  StartKvTiles<KvT, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k0, k1);
  __syncthreads();

  for (int it = 0; it < my_tiles; ++it) {
    const int buf = it & 1;
    const int nj = AdvanceKvTiles<KvT, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k0, k1, it);
    __syncthreads();
    const KvT* kt = k_s[buf];
    const KvT* vt = v_s[buf];
    ScoreTile<KvT, HD, kTile, G>(p_s, q_s, kt, nh, nj, [](int, int) { return true; });
    __syncthreads();
    if (tid < nh) SoftmaxRowStep<kTile>(p_s + tid * kTile, m_s[tid], l_s[tid], c_s[tid], nj);
    __syncthreads();
    AccumulateTile<KvT, HD, kTile>(acc, p_s, c_s, vt, nh, nj);
    __syncthreads();  // the next iteration's copy overwrites the other buffer
  }

GQA_UNROLL
  for (int a = 0; a < kAcc; ++a) {
    const int i = tid + a * kThreads;
    if (i >= nh * HD) continue;
    const int h = i / HD, d = i % HD;
    const float l = l_s[h];
    const float o = l > 0.0f ? acc[a] / l : 0.0f;
    if (num_splits == 1) {
      GQA_ST(out + (int64_t(t) * shape.num_q_heads + h0 + h) * HD + d, o);
    } else {
      const int64_t slot = offset + split;
      GQA_ST(partial_out + (slot * shape.num_q_heads + h0 + h) * HD + d, o);
      if (d == 0) GQA_ST(partial_lse + slot * shape.num_q_heads + h0 + h, l > 0.0f ? m_s[h] + logf(l) : -INFINITY);
    }
  }
}

// Block (item, local query head): combines the item's splits by their
// log-sum-exp weights. Items of one split were written directly. With
// items == null (a fixed-grid step) the item's splits are derived from its
// position as DecodeKernel derives them.
__global__ void MergeSplitsKernel(const DecodeItem* items, const int32_t* token_pos, int sliding_window,
                                  int max_splits, int num_q_heads, int head_dim, const float* partial_out,
                                  const float* partial_lse, float* out) {
  __shared__ int32_t hdr[3];
  if (threadIdx.x == 0) {
    DecodeItem item{int32_t(blockIdx.x), 1, -1};
    if (items != nullptr) {
      item = GQA_LD(items + blockIdx.x);
    } else {
      item.num_splits = DecodeSplits(DecodeContext(GQA_LD(token_pos + blockIdx.x), sliding_window), max_splits);
      item.partial_offset = int32_t(blockIdx.x) * max_splits;
    }
    hdr[0] = item.token;
    hdr[1] = item.num_splits;
    hdr[2] = item.partial_offset;
  }
  __syncthreads();
  if (hdr[1] == 1) return;
  const int h = blockIdx.y;
  float mx = -INFINITY;
  for (int s = 0; s < hdr[1]; ++s) mx = fmaxf(mx, GQA_LD(partial_lse + int64_t(hdr[2] + s) * num_q_heads + h));
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < hdr[1]; ++s) {
      const int64_t slot = hdr[2] + s;
      const float w = expf(GQA_LD(partial_lse + slot * num_q_heads + h) - mx);
      num += w * GQA_LD(partial_out + (slot * num_q_heads + h) * head_dim + d);
      den += w;
    }
    GQA_ST(out + (int64_t(hdr[0]) * num_q_heads + h) * head_dim + d, num / den);
  }
}

// A prefill tile's header, read once by thread 0 into shared memory for the
// block: sequence, first token, tokens (capped at max_tokens), first position.
struct TileHeader {
  int seq, first_token, num_tokens, first_pos;
};

__device__ __forceinline__ TileHeader ReadPrefillTile(const PrefillTile* tiles, int32_t (&hdr)[4], int max_tokens) {
  if (threadIdx.x == 0) {
    const PrefillTile tile = GQA_LD(tiles + blockIdx.x);
    hdr[0] = tile.seq;
    hdr[1] = tile.first_token;
    hdr[2] = tile.num_tokens;
    hdr[3] = tile.first_pos;
  }
  __syncthreads();
  return TileHeader{hdr[0], hdr[1], hdr[2] < max_tokens ? hdr[2] : max_tokens, hdr[3]};
}

// Tiled causal attention for prefill tiles. Block (tile, g): the rows are
// the tile's tokens x the query heads of local KV head g (at most
// kRows); each K/V tile of the visible context is loaded once into shared
// memory for all of them, with an online softmax per row. (f32 FMAs, not
// tensor cores.)
template <typename KvT, int HD, int G>
__global__ void __launch_bounds__(kThreads)
PrefillKernel(const float* q, AttentionMeta meta, KvCacheLayout layout, const KvT* k_cache, const KvT* v_cache,
              AttentionShape shape, const PrefillTile* prefill_tiles, float* out) {
  constexpr int kTile = KeyTile<KvT, HD>();
  constexpr int kRows = PrefillRows(HD);
  constexpr int kTokens = kRows / G;
  constexpr int kAcc = (kRows * HD + kThreads - 1) / kThreads;
  __shared__ __align__(16) KvT k_s[2][kTile * HD];
  __shared__ __align__(16) KvT v_s[2][kTile * HD];
  __shared__ float p_s[kRows * kTile];
  __shared__ float m_s[kRows], l_s[kRows], c_s[kRows];
  __shared__ int32_t hdr[4];

  const int tid = threadIdx.x, g = blockIdx.y;
  const TileHeader tile = ReadPrefillTile(prefill_tiles, hdr, kTokens);
  const int first_token = tile.first_token, n_tok = tile.num_tokens, first_pos = tile.first_pos;
  const int32_t* table = meta.block_tables + int64_t(tile.seq) * meta.max_blocks_per_seq;
  const int h0 = shape.FirstQueryHead(g), nh = shape.EndQueryHead(g) - h0;
  const int rows = n_tok * nh;
  const int last_pos = first_pos + n_tok - 1;
  const int window = shape.sliding_window;
  const int k_begin = window > 0 && first_pos - window + 1 > 0 ? first_pos - window + 1 : 0;
  const int num_tiles = (last_pos + 1 - k_begin + kTile - 1) / kTile;

  // Row r: token r / nh of the tile, head r % nh; its scaled query is staged
  // in shared memory once.
  __shared__ float q_s[kRows * HD];
  for (int i = tid; i < rows * HD; i += kThreads) {
    const int r = i / HD, d = i % HD;
    const int tok = first_token + r / nh, h = h0 + r % nh;
    q_s[i] = GQA_LD(q + (int64_t(tok) * shape.num_q_heads + h) * HD + d) * shape.scale;
  }
  if (tid < kRows) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  float acc[kAcc];
GQA_UNROLL
  for (int a = 0; a < kAcc; ++a) acc[a] = 0.0f;
  StartKvTiles<KvT, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k_begin, last_pos + 1);
  __syncthreads();
  for (int it = 0; it < num_tiles; ++it) {
    const int buf = it & 1, j0 = k_begin + it * kTile;
    const int nj = AdvanceKvTiles<KvT, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k_begin, last_pos + 1, it);
    __syncthreads();
    const KvT* kt = k_s[buf];
    const KvT* vt = v_s[buf];
    ScoreTile<KvT, HD, kTile, kRows>(p_s, q_s, kt, rows, nj, [&](int r, int j) {
      const int p = first_pos + r / nh, key = j0 + j;
      return key <= p && (window <= 0 || key > p - window);
    });
    __syncthreads();
    if (tid < rows) SoftmaxRowStep<kTile>(p_s + tid * kTile, m_s[tid], l_s[tid], c_s[tid], nj);
    __syncthreads();
    AccumulateTile<KvT, HD, kTile>(acc, p_s, c_s, vt, rows, nj);
    __syncthreads();
  }
GQA_UNROLL
  for (int a = 0; a < kAcc; ++a) {
    const int i = tid + a * kThreads;
    if (i >= rows * HD) continue;
    const int r = i / HD, d = i % HD;
    const int tok = first_token + r / nh, h = h0 + r % nh;
    GQA_ST(out + (int64_t(tok) * shape.num_q_heads + h) * HD + d, acc[a] / l_s[r]);
  }
}


// Prefill on tensor cores (bf16 cache, head_dim 64 or 128). Block (tile, g):
// 64 query rows (the tile's tokens x the query heads of local KV head g),
// 16 per warp. S = Q K^T and O += P V run as mma.sync m16n8k16 with bf16
// inputs (Q and P rounded to bf16) and f32 accumulation, FlashAttention-2's
// online softmax on the accumulator fragments, K/V tiles of 32 keys
// double-buffered in shared memory and read once for all 64 rows.
template <int HD, int G>
__global__ void __launch_bounds__(kThreads)
PrefillMmaKernel(const float* q, AttentionMeta meta, KvCacheLayout layout, const uint16_t* k_cache,
                 const uint16_t* v_cache, AttentionShape shape, const PrefillTile* prefill_tiles, float* out) {
  constexpr int kTile = 32;
  constexpr int kTokens = kMmaPrefillRows / G;
  constexpr int kKSteps = HD / 16;  // k-steps of Q K^T
  constexpr int kOChunks = HD / 8;  // 8-column chunks of O
  static_assert(KeyTile<uint16_t, HD>() == kTile, "a 32-key bf16 tile");
  __shared__ __align__(16) uint16_t k_s[2][kTile * HD];
  __shared__ __align__(16) uint16_t v_s[2][kTile * HD];
  __shared__ int32_t hdr[4];

  const int tid = threadIdx.x, g = blockIdx.y;
  const TileHeader tile = ReadPrefillTile(prefill_tiles, hdr, kTokens);
  const int first_token = tile.first_token, n_tok = tile.num_tokens, first_pos = tile.first_pos;
  const int32_t* table = meta.block_tables + int64_t(tile.seq) * meta.max_blocks_per_seq;
  const int h0 = shape.FirstQueryHead(g), nh = shape.EndQueryHead(g) - h0;
  const int rows = n_tok * nh, last_pos = first_pos + n_tok - 1, window = shape.sliding_window;
  const int k_begin = window > 0 && first_pos - window + 1 > 0 ? first_pos - window + 1 : 0;
  const int num_tiles = (last_pos + 1 - k_begin + kTile - 1) / kTile;

  // This lane's two rows (g8 and g8 + 8 of its warp's 16) and their positions.
  const int lane = tid % 32, g8 = lane / 4, t4 = lane % 4;
  const int row[2] = {(tid / 32) * 16 + g8, (tid / 32) * 16 + g8 + 8};
  int pos[2];
  for (int i = 0; i < 2; ++i) pos[i] = first_pos + row[i] / nh;
  auto q_at = [&](int r, int c) -> float {
    if (r >= rows) return 0.0f;
    const int tok = first_token + r / nh, h = h0 + r % nh;
    return GQA_LD(q + (int64_t(tok) * shape.num_q_heads + h) * HD + c) * shape.scale;
  };
  uint32_t qa[kKSteps][4];
  GQA_UNROLL
  for (int kk = 0; kk < kKSteps; ++kk) {
    const int c = kk * 16 + 2 * t4;
    qa[kk][0] = PackBf16x2(q_at(row[0], c), q_at(row[0], c + 1));
    qa[kk][1] = PackBf16x2(q_at(row[1], c), q_at(row[1], c + 1));
    qa[kk][2] = PackBf16x2(q_at(row[0], c + 8), q_at(row[0], c + 9));
    qa[kk][3] = PackBf16x2(q_at(row[1], c + 8), q_at(row[1], c + 9));
  }
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[kOChunks][4];
  GQA_UNROLL
  for (int dn = 0; dn < kOChunks; ++dn) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.0f;

  StartKvTiles<uint16_t, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k_begin, last_pos + 1);
  __syncthreads();
  for (int it = 0; it < num_tiles; ++it) {
    const int buf = it & 1, j0 = k_begin + it * kTile;
    const int nj =
        AdvanceKvTiles<uint16_t, HD, kTile>(k_s, v_s, k_cache, v_cache, table, layout, g, k_begin, last_pos + 1, it);
    // Rows of a short last tile were not loaded: V must be zero there, since
    // P's zeros times stale shared memory could be NaN.
    for (int i = nj * HD + tid; i < kTile * HD; i += kThreads) v_s[buf][i] = 0;
    __syncthreads();
    const uint16_t* kt = k_s[buf];
    const uint16_t* vt = v_s[buf];

    float s[4][4];
    GQA_UNROLL
    for (int n = 0; n < 4; ++n) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      const uint16_t* key_row = kt + (n * 8 + g8) * HD;
      GQA_UNROLL
      for (int kk = 0; kk < kKSteps; ++kk) {
        const uint32_t b[2] = {uint32_t(key_row[kk * 16 + 2 * t4]) | uint32_t(key_row[kk * 16 + 2 * t4 + 1]) << 16,
                               uint32_t(key_row[kk * 16 + 8 + 2 * t4]) | uint32_t(key_row[kk * 16 + 9 + 2 * t4]) << 16};
        MmaBf16(s[n], qa[kk], b, s[n]);
      }
    }
    // Mask, then the online softmax of this lane's two rows; the four lanes
    // of a row (t4 = 0..3) combine their maxima and sums by shuffles.
    float mx[2] = {-INFINITY, -INFINITY};
    GQA_UNROLL
    for (int n = 0; n < 4; ++n) {
      GQA_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2, key = j0 + n * 8 + 2 * t4 + (i & 1);
        const bool visible = row[r] < rows && key - j0 < nj && key <= pos[r] && (window <= 0 || key > pos[r] - window);
        if (!visible) s[n][i] = -INFINITY;
        mx[r] = fmaxf(mx[r], s[n][i]);
      }
    }
    float corr[2], sum[2] = {0.0f, 0.0f};
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mn = fmaxf(m[r], mx[r]);
      corr[r] = mn == -INFINITY ? 1.0f : expf(m[r] - mn);
      m[r] = mn;
    }
    GQA_UNROLL
    for (int n = 0; n < 4; ++n) {
      GQA_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int r = i / 2;
        s[n][i] = s[n][i] == -INFINITY ? 0.0f : expf(s[n][i] - m[r]);
        sum[r] += s[n][i];
      }
    }
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      l[r] = l[r] * corr[r] + sum[r];
    }
    GQA_UNROLL
    for (int dn = 0; dn < kOChunks; ++dn) {
      o[dn][0] *= corr[0];
      o[dn][1] *= corr[0];
      o[dn][2] *= corr[1];
      o[dn][3] *= corr[1];
    }
    // P (16 x 32 per warp) as A fragments: the accumulator layout of two
    // 8-key chunks is the A layout of one 16-key step.
    uint32_t pa[2][4];
    GQA_UNROLL
    for (int kk = 0; kk < 2; ++kk) {
      pa[kk][0] = PackBf16x2(s[2 * kk][0], s[2 * kk][1]);
      pa[kk][1] = PackBf16x2(s[2 * kk][2], s[2 * kk][3]);
      pa[kk][2] = PackBf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pa[kk][3] = PackBf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
    GQA_UNROLL
    for (int dn = 0; dn < kOChunks; ++dn) {
      const int col = dn * 8 + g8;
      GQA_UNROLL
      for (int kk = 0; kk < 2; ++kk) {
        const int k0 = kk * 16 + 2 * t4;
        const uint32_t b[2] = {uint32_t(vt[k0 * HD + col]) | uint32_t(vt[(k0 + 1) * HD + col]) << 16,
                               uint32_t(vt[(k0 + 8) * HD + col]) | uint32_t(vt[(k0 + 9) * HD + col]) << 16};
        MmaBf16(o[dn], pa[kk], b, o[dn]);
      }
    }
    __syncthreads();  // the next iteration's copy overwrites the other buffer
  }
  GQA_UNROLL
  for (int dn = 0; dn < kOChunks; ++dn) {
    GQA_UNROLL
    for (int i = 0; i < 4; ++i) {
      const int r = i / 2;
      if (row[r] >= rows) continue;
      const int tok = first_token + row[r] / nh, h = h0 + row[r] % nh;
      GQA_ST(out + (int64_t(tok) * shape.num_q_heads + h) * HD + dn * 8 + 2 * t4 + (i & 1), o[dn][i] / l[r]);
    }
  }
}

template <typename KvT, int HD, int G>
cudaError_t LaunchFor(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout, const void* k_cache,
                      const void* v_cache, const AttentionShape& shape, const AttentionRun& run, float* out,
                      cudaStream_t s) {
  const KvT* kc = static_cast<const KvT*>(k_cache);
  const KvT* vc = static_cast<const KvT*>(v_cache);
  if (run.num_decode > 0) {
    cudaError_t e = gqa_cuda::Launch(DecodeKernel<KvT, HD, G>, dim3(run.num_decode, shape.num_kv_heads, run.max_splits),
                                     dim3(kThreads), s, q, meta, layout, kc, vc, shape, run.decode, out,
                                     run.partial_out, run.partial_lse);
    if (e != cudaSuccess) return e;
    if (run.max_splits > 1) {
      e = gqa_cuda::Launch(MergeSplitsKernel, dim3(run.num_decode, shape.num_q_heads), dim3(HD < 128 ? HD : 128), s,
                           run.decode, meta.token_pos, shape.sliding_window, run.max_splits, shape.num_q_heads, HD,
                           run.partial_out, run.partial_lse, out);
      if (e != cudaSuccess) return e;
    }
  }
  if (run.num_prefill > 0) {
    if constexpr (std::is_same_v<KvT, uint16_t> && HD <= 128) {
      return gqa_cuda::Launch(PrefillMmaKernel<HD, G>, dim3(run.num_prefill, shape.num_kv_heads), dim3(kThreads), s, q,
                              meta, layout, kc, vc, shape, run.prefill, out);
    }
    return gqa_cuda::Launch(PrefillKernel<KvT, HD, G>, dim3(run.num_prefill, shape.num_kv_heads), dim3(kThreads), s, q,
                            meta, layout, kc, vc, shape, run.prefill, out);
  }
  return cudaSuccess;
}

// The largest number of query heads of this rank that read one KV head.
int LocalGroup(const AttentionShape& shape) {
  int g = 0;
  for (int kv = 0; kv < shape.num_kv_heads; ++kv) {
    const int n = shape.EndQueryHead(kv) - shape.FirstQueryHead(kv);
    g = n > g ? n : g;
  }
  return g;
}

template <typename KvT, int HD>
cudaError_t DispatchGroup(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout, const void* k_cache,
                          const void* v_cache, const AttentionShape& shape, const AttentionRun& run, float* out,
                          cudaStream_t s) {
  const int g = LocalGroup(shape);
  if (g <= 1) return LaunchFor<KvT, HD, 1>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  if (g <= 2) return LaunchFor<KvT, HD, 2>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  if (g <= 4) return LaunchFor<KvT, HD, 4>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  if (g <= 8) return LaunchFor<KvT, HD, 8>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  return cudaErrorInvalidValue;
}

template <typename KvT>
cudaError_t DispatchHeadDim(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                            const void* k_cache, const void* v_cache, const AttentionShape& shape,
                            const AttentionRun& run, float* out, cudaStream_t s) {
  switch (shape.head_dim) {
    case 64: return DispatchGroup<KvT, 64>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
    case 128: return DispatchGroup<KvT, 128>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
    case 256: return DispatchGroup<KvT, 256>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

bool SpecialisedAttention(const AttentionShape& shape, const KvCacheLayout& layout) {
  const int hd = shape.head_dim;
  return layout.head_major && (hd == 64 || hd == 128 || hd == 256) && LocalGroup(shape) <= 8 &&
         (layout.dtype == DType::kF32 || layout.dtype == DType::kBF16);
}

cudaError_t LaunchPlannedAttention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                                   const void* k_cache, const void* v_cache, const AttentionShape& shape,
                                   const AttentionRun& run, float* out, cudaStream_t s) {
  if (!SpecialisedAttention(shape, layout)) return cudaErrorInvalidValue;
  if (layout.dtype == DType::kBF16) {
    return DispatchHeadDim<uint16_t>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
  }
  return DispatchHeadDim<float>(q, meta, layout, k_cache, v_cache, shape, run, out, s);
}

}  // namespace gqa::GQA_CUDA_NS
