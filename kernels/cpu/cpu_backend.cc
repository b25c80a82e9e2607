#include "kernels/cpu/cpu_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_kernels.h"

namespace gqa {
namespace {
// Below this many multiply-adds an op runs on the calling thread: waking the
// pool costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 15;
constexpr int64_t kMatMulRowTile = 8;
}  // namespace

namespace cpu {
void RmsNormRows(const float* x, const float* weight, int dim, float eps, float* out,
                 int64_t row_begin, int64_t row_end) {
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* xr = x + r * dim;
    float* o = out + r * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += double(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(float(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) o[i] = weight[i] * (xr[i] * inv);
  }
}

}  // namespace cpu

CpuBackend::CpuBackend(int num_threads) : pool_(num_threads) {
  const char* env = std::getenv("GQA_CPU_WEIGHT_PANELS");
  weight_panels_ = env == nullptr || std::string(env) != "0";
  const char* act = std::getenv("GQA_CPU_BF16_ACTIVATIONS");
  bf16_activations_ = act == nullptr || std::string(act) != "0";
}

cpu::Bf16Activations CpuBackend::PairActivations() const {
  return cpu::PairActivationsFor(cpu::ActiveIsa(),
                                 bf16_activations_ ? cpu::Bf16Activations::kRounded : cpu::Bf16Activations::kF32);
}

std::string CpuBackend::Name() const {
  // The ISA chosen at start-up and what bf16 weights become under it.
  const cpu::Isa isa = cpu::ActiveIsa();
  const MatrixLayout layout = weight_panels_ ? cpu::WeightPanelLayout(isa, DType::kBF16) : MatrixLayout::kRowMajor;
  const char* bf16 = layout == MatrixLayout::kBf16Panels16 ? "bf16 weights in 16-row panels"
                     : layout == MatrixLayout::kRowMajor   ? "bf16 weights row-major"
                     : PairActivations() == cpu::Bf16Activations::kRounded
                         ? "bf16 weights in pair panels, activations rounded to bf16"
                         : "bf16 weights in pair panels widened to f32, activations f32";
  return absl::StrCat("cpu(", pool_.size(), " threads, ", cpu::IsaName(isa), ", ", bf16, ")");
}

absl::StatusOr<DeviceBuffer> CpuBackend::Allocate(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cpu: cannot allocate ", bytes, " bytes"));
  }
  return DeviceBuffer(p, bytes, [](void* q) { std::free(q); });
}

absl::StatusOr<DeviceBuffer> CpuBackend::ImportHost(const void* host, size_t bytes) {
  return DeviceBuffer(const_cast<void*>(host), bytes, nullptr);
}

absl::StatusOr<DeviceBuffer> CpuBackend::ImportHostMatrix(const MatrixView& host,
                                                          MatrixView* device) {
  *device = host;
  return DeviceBuffer();
}

size_t CpuBackend::MatrixBytes(const MatrixView& m) const {
  if (m.layout == MatrixLayout::kRowMajor) return Backend::MatrixBytes(m);
  return m.rows == 0 || m.cols == 0 ? 0 : cpu::PanelBytes(m.layout, m.rows, m.cols);
}

absl::StatusOr<DeviceBuffer> CpuBackend::ImportWeightMatrix(const MatrixView& host, MatrixView* device) {
  const MatrixLayout layout = cpu::WeightPanelLayout(cpu::ActiveIsa(), host.dtype);
  if (!weight_panels_ || layout == MatrixLayout::kRowMajor || host.layout != MatrixLayout::kRowMajor ||
      host.rows == 0 || host.cols == 0) {
    return ImportHostMatrix(host, device);
  }
  ASSIGN_OR_RETURN(DeviceBuffer buf, Allocate(cpu::PanelBytes(layout, host.rows, host.cols)));
  uint16_t* out = buf.as<uint16_t>();
  pool_.ParallelFor(cpu::NumPanels(host.rows),
                    [&](int64_t b, int64_t e) { cpu::PackWeightPanels(layout, host, out, b, e); });
  *device = MatrixView{out, host.dtype, host.rows, host.cols, host.cols, layout};
  return buf;
}

void CpuBackend::CopyToDevice(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::CopyToHost(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
void CpuBackend::CopyDeviceToDevice(void* dst, const void* src, size_t bytes) {
  std::memmove(dst, src, bytes);
}

void CpuBackend::ParallelIfLarge(int64_t count, int64_t work, const ThreadPool::RangeFn& fn) {
  if (work < kMinParallelWork) {
    fn(0, count);
  } else {
    pool_.ParallelFor(count, fn);
  }
}

void CpuBackend::Embedding(const MatrixView& table, int64_t first_row, const int32_t* ids, int n,
                           float* out) {
  for (int i = 0; i < n; ++i) {
    const int64_t row = ids[i] - first_row;
    float* o = out + int64_t{i} * table.cols;
    if (row >= 0 && row < table.rows) {
      cpu::LoadRow(table, row, o);
    } else {
      std::fill(o, o + table.cols, 0.0f);
    }
  }
}

void CpuBackend::RmsNorm(const float* x, const float* weight, int n, int dim, float eps,
                         float* out) {
  ParallelIfLarge(n, int64_t{n} * dim, [&](int64_t b, int64_t e) {
    cpu::RmsNormRows(x, weight, dim, eps, out, b, e);
  });
}

void CpuBackend::MatMul(const float* x, int n, const MatrixView& w, const float* bias, float* y) {
  if (w.layout == MatrixLayout::kBf16PairPanels16) {
    // bf16 pair panels (AVX-512) at every token count: activations packed
    // by all threads, then each thread multiplies its whole panels against
    // them.
    const cpu::Bf16Activations a = PairActivations();
    packed_pairs_.resize(cpu::PairPackedWords(n, w.cols, a));
    ParallelIfLarge(cpu::PairTokenTiles(n), int64_t{n} * w.cols * 8, [&](int64_t b, int64_t e) {
      cpu::PackPairTokens(x, n, w.cols, a, packed_pairs_.data(), b, e);
    });
    ParallelIfLarge(cpu::NumPanels(w.rows), int64_t{n} * w.rows * w.cols, [&](int64_t b, int64_t e) {
      cpu::PairPanelMatMul(packed_pairs_.data(), a, n, w, bias, y, b, e);
    });
    return;
  }
  if (w.layout == MatrixLayout::kBf16Panels16 && n < cpu::kPanelGemmMinTokens) {
    // bf16 panels read in place: token tiles packed by all threads, then
    // each thread multiplies its whole panels against them. (From
    // kPanelGemmMinTokens the blocked GEMM below takes the panels.)
    packed_x_.resize(cpu::PanelPackedFloats(n, w.cols));
    const int64_t tiles = cpu::PanelTokenTiles(n);
    ParallelIfLarge(tiles, int64_t{n} * w.cols, [&](int64_t b, int64_t e) {
      cpu::PackPanelTokens(x, n, w.cols, packed_x_.data(), b, e);
    });
    ParallelIfLarge(cpu::NumPanels(w.rows), int64_t{n} * w.rows * w.cols, [&](int64_t b, int64_t e) {
      cpu::PanelMatMul(packed_x_.data(), n, w, bias, y, b, e);
    });
    return;
  }
  if (cpu::UseGemm(cpu::ActiveIsa(), n, w.dtype)) {
    // Activations packed once, by all threads, then each thread multiplies
    // its rows (in whole 16-row panels) against them.
    packed_x_.resize(cpu::PackedActivationsFloats(n, w.cols));
    const int64_t x_tiles = cpu::PackedActivationTiles(n);
    ParallelIfLarge(x_tiles, int64_t{n} * w.cols, [&](int64_t b, int64_t e) {
      cpu::PackActivations(x, n, w.cols, packed_x_.data(), b, e);
    });
    const int64_t panels = cpu::NumPanels(w.rows);  // the GEMM's 16-row panels are the weight panels' rows
    pool_.ParallelFor(panels, [&](int64_t b, int64_t e) {
      cpu::GemmRows(packed_x_.data(), n, w, bias, y, b * cpu::kPanelRows, std::min(w.rows, e * cpu::kPanelRows));
    });
    return;
  }
  const int64_t tiles = (w.rows + kMatMulRowTile - 1) / kMatMulRowTile;
  ParallelIfLarge(tiles, int64_t{n} * w.rows * w.cols, [&](int64_t b, int64_t e) {
    cpu::MatMulRows(x, n, w, bias, y, b * kMatMulRowTile, std::min(w.rows, e * kMatMulRowTile));
  });
}

void CpuBackend::Rope(float* x, int n, int num_heads, int head_dim, int64_t token_stride,
                      const int32_t* positions, const float* inv_freq) {
  const int half = head_dim / 2;
  for (int t = 0; t < n; ++t) {
    const float pos = static_cast<float>(positions[t]);
    for (int i = 0; i < half; ++i) {
      // f32 angle, as Hugging Face computes it (inv_freq * position in f32).
      const float angle = inv_freq[i] * pos;
      const float c = std::cos(angle), s = std::sin(angle);
      for (int h = 0; h < num_heads; ++h) {
        float* v = x + t * token_stride + int64_t{h} * head_dim;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

void CpuBackend::SiluMul(const float* gate, const float* up, int64_t count, float* out) {
  ParallelIfLarge(count, count * 8, [&](int64_t b, int64_t e) {
    cpu::SiluMulRange(gate, up, out, b, e);
  });
}

void CpuBackend::Add(float* x, const float* y, int64_t count) {
  for (int64_t i = 0; i < count; ++i) x[i] += y[i];
}

void CpuBackend::GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) {
  for (int i = 0; i < n; ++i) {
    std::memcpy(out + int64_t{i} * dim, x + int64_t{rows[i]} * dim, sizeof(float) * dim);
  }
}

void CpuBackend::WriteKv(const float* k, const float* v, const AttentionMeta& meta,
                         const KvCacheLayout& layout, void* k_cache, void* v_cache) {
  GQA_CHECK(!layout.head_major, "the CPU backend's KV cache is token-major");
  const int64_t row = int64_t{layout.num_kv_heads} * layout.head_dim;
  for (int t = 0; t < meta.num_tokens; ++t) {
    const int64_t slot = meta.slot_mapping[t];
    if (layout.dtype == DType::kF32) {
      std::memcpy(static_cast<float*>(k_cache) + slot * row, k + t * row, sizeof(float) * row);
      std::memcpy(static_cast<float*>(v_cache) + slot * row, v + t * row, sizeof(float) * row);
    } else {
      GQA_CHECK(layout.dtype == DType::kBF16, "KV cache dtype must be f32 or bf16");
      uint16_t* kc = static_cast<uint16_t*>(k_cache) + slot * row;
      uint16_t* vc = static_cast<uint16_t*>(v_cache) + slot * row;
      for (int64_t i = 0; i < row; ++i) {
        kc[i] = gqa::FloatToBf16(k[t * row + i]);
        vc[i] = gqa::FloatToBf16(v[t * row + i]);
      }
    }
  }
}

namespace {
struct CpuAttentionPlan final : AttentionPlan {
  CpuAttentionPlan(const void* owner, int num_tokens) : AttentionPlan(owner, num_tokens) {}
  cpu::AttentionWorkList work;
};
}  // namespace

std::unique_ptr<AttentionPlan> CpuBackend::PlanAttention(const int32_t* token_seq, const int32_t* token_pos,
                                                         int num_tokens, const AttentionShape& shape,
                                                         const KvCacheLayout& layout) {
  auto plan = std::make_unique<CpuAttentionPlan>(this, num_tokens);
  plan->work = cpu::PlanAttentionWork(token_seq, token_pos, num_tokens, shape);
  return plan;
}

void CpuBackend::Attention(const float* q, const AttentionMeta& meta, const KvCacheLayout& layout,
                           const void* k_cache, const void* v_cache, const AttentionShape& shape,
                           const AttentionPlan& step_plan, float* out) {
  GQA_CHECK(!layout.head_major, "the CPU backend's KV cache is token-major");
  GQA_CHECK(step_plan.owner() == this && step_plan.num_tokens() == meta.num_tokens,
            "Attention needs this backend's plan of this step");
  const cpu::AttentionWorkList& plan = static_cast<const CpuAttentionPlan&>(step_plan).work;
  attention_partials_.resize(size_t(plan.num_partials) * cpu::PartialFloats(shape));
  pool_.ParallelFor(int64_t(plan.work.size()), [&](int64_t b, int64_t e) {
    cpu::AttentionWorkItems(q, meta, layout, k_cache, v_cache, shape, plan, out, attention_partials_.data(), b, e);
  });
  pool_.ParallelFor(int64_t(plan.merges.size()), [&](int64_t b, int64_t e) {
    cpu::MergeAttentionChunks(shape, plan, attention_partials_.data(), out, b, e);
  });
}

void CpuBackend::Sample(const float* logits, int rows, int vocab, const SamplingRow* params,
                        const PenaltyEntry* penalties, float* scratch, SampleOutput* out) {
  ParallelIfLarge(rows, int64_t{rows} * vocab * 4, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      cpu::SampleRow(logits + r * vocab, vocab, params[r], penalties, scratch + r * vocab, out + r);
    }
  });
}

}  // namespace gqa
