// Every op of the CUDA backend against the CPU backend, on fresh random
// inputs with odd sizes, outputs poisoned (NaN) before each run so that an
// element the kernel never writes fails. Built twice: against the SIMT
// interpreter (GQA_TEST_CUDA_SIM), where every case also runs under several
// thread schedules and must give bitwise-identical outputs (a race shows up
// as a difference), and against a real GPU, where it skips without one.
//
// Error bounds (CUDA vs CPU, both f32 arithmetic in different orders):
//   embedding, gather, write_kv: exact
//   add, silu_mul, rms_norm, rope: 2e-6 x (1 + |want|) (expf/sinf/cosf and
//     sums differ by a few ulp)
//   matmul: f32 weights 1e-5 x sum|x w|; f16/bf16 weights: the GPU rounds
//     the activations to the weight type (cuBLASLt's contract), so
//     2^-11 (f16) / 2^-8 (bf16) x sum|x w| plus 1e-5 x sum|x w|
//   attention: 2e-5 x (1 + |want|) (online vs two-pass softmax); prefill on
//     tensor cores (bf16 cache, head_dim 64/128), whose Q and P are rounded
//     to bf16: 1e-2 x (1 + |want|) elementwise and 5e-3 normwise
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/cuda/mini_test.h"

#if defined(GQA_TEST_CUDA_SIM)
#include "kernels/simt/simt.h"
#include "kernels/cuda/sim/traffic_probe.h"
#define DEVICE_NS cuda_sim
#else
#define DEVICE_NS cuda
#endif

namespace gqa {
namespace {

Backend& Device() {
  static absl::StatusOr<std::unique_ptr<Backend>> dev = DEVICE_NS::CreateBackend(0);
  if (!dev.ok()) SKIP(std::string(dev.status().message()));
  return **dev;
}

// A second backend on the same device that never reserves attention
// buffers: its plans always choose the generic attention kernel.
Backend& GenericDevice() {
  static absl::StatusOr<std::unique_ptr<Backend>> dev = DEVICE_NS::CreateBackend(0);
  if (!dev.ok()) SKIP(std::string(dev.status().message()));
  return **dev;
}

CpuBackend& Cpu() {
  static CpuBackend cpu(1);
  return cpu;
}

std::mt19937_64& Rng() {
  static std::mt19937_64 rng(20261124);
  return rng;
}

std::vector<float> Random(size_t n, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(Rng());
  return v;
}

int RandInt(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(Rng()); }

// A device copy of host data.
template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  absl::StatusOr<DeviceBuffer> b = Device().Allocate(host.size() * sizeof(T));
  REQUIRE(b.ok());
  Device().CopyToDevice(b->data(), host.data(), host.size() * sizeof(T));
  return std::move(*b);
}

// Device memory filled with 0xff bytes (NaN as f32).
DeviceBuffer Poisoned(size_t bytes) {
  absl::StatusOr<DeviceBuffer> b = Device().Allocate(bytes);
  REQUIRE(b.ok());
  std::vector<uint8_t> nan(bytes, 0xff);
  Device().CopyToDevice(b->data(), nan.data(), bytes);
  return std::move(*b);
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& b, size_t count) {
  std::vector<T> out(count);
  Device().CopyToHost(out.data(), b.data(), count * sizeof(T));
  const absl::Status st = Device().Synchronize();
  CHECK_MSG(st.ok(), st.message());
  return out;
}

// Runs `run` (which returns the op's output bytes) once per thread schedule
// of the interpreter and checks that every schedule gives the same bits.
// On a GPU it runs once.
template <typename Fn>
auto UnderSchedules(const std::string& what, Fn run) {
  auto first = run();
#if defined(GQA_TEST_CUDA_SIM)
  using gqa_sim::Schedule;
  const std::pair<Schedule, uint64_t> schedules[] = {
      {Schedule::kReverse, 1}, {Schedule::kShuffled, 7}, {Schedule::kShuffled, 8}, {Schedule::kWarpsReversed, 1}};
  for (const auto& [s, seed] : schedules) {
    gqa_sim::SetSchedule(s, seed);
    auto again = run();
    CHECK_MSG(again.size() == first.size() &&
                  std::memcmp(again.data(), first.data(), first.size() * sizeof(first[0])) == 0,
              what << ": output differs under schedule " << gqa_sim::ScheduleName(s) << " (a race)");
  }
  gqa_sim::SetSchedule(Schedule::kForward, 1);
#endif
  return first;
}

// got vs want: |got - want| <= tol * scale[i] elementwise; NaN fails.
void ExpectClose(const std::vector<float>& got, const std::vector<float>& want, const std::vector<double>& scale,
                 double tol, const std::string& what) {
  REQUIRE(got.size() == want.size());
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double e = std::abs(double(got[i]) - double(want[i])) / scale[i];
    if (!(e <= worst)) {  // NaN lands here and stays the worst
      worst = e;
      at = i;
      if (std::isnan(e)) break;
    }
  }
  CHECK_MSG(worst <= tol, what << ": worst error " << worst << " x scale at " << at << ": got " << got[at]
                               << ", want " << want[at] << " (bound " << tol << ")");
}

std::vector<double> RelativeScale(const std::vector<float>& want) {
  std::vector<double> s(want.size());
  for (size_t i = 0; i < want.size(); ++i) s[i] = 1.0 + std::abs(want[i]);
  return s;
}

// Weights stored as `dtype` bytes.
std::vector<uint8_t> Store(const std::vector<float>& v, DType dtype) {
  std::vector<uint8_t> bytes(v.size() * DTypeSize(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    if (dtype == DType::kF32) {
      std::memcpy(bytes.data() + 4 * i, &v[i], 4);
    } else {
      const uint16_t h = dtype == DType::kBF16 ? gqa::FloatToBf16(v[i]) : gqa::FloatToF16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

const DType kWeightTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

TEST_CASE(Embedding) {
  for (DType dt : kWeightTypes) {
    const int rows = 37, cols = 129, n = 11;
    const int64_t first_row = 100;  // a vocabulary slice [100, 137)
    const std::vector<uint8_t> table = Store(Random(size_t(rows) * cols), dt);
    std::vector<int32_t> ids(n);
    for (int32_t& id : ids) id = RandInt(80, 150);  // some outside the slice
    std::vector<float> want(size_t(n) * cols);
    Cpu().Embedding(MatrixView{table.data(), dt, rows, cols, cols}, first_row, ids.data(), n, want.data());
    DeviceBuffer d_table = Upload(table), d_ids = Upload(ids);
    const auto got = UnderSchedules("embedding", [&] {
      DeviceBuffer out = Poisoned(want.size() * 4);
      Device().Embedding(MatrixView{d_table.data(), dt, rows, cols, cols}, first_row, d_ids.as<int32_t>(), n,
                         out.as<float>());
      return Download<float>(out, want.size());
    });
    ExpectClose(got, want, RelativeScale(want), 0.0, absl::StrCat("embedding ", DTypeName(dt)));
  }
}

TEST_CASE(RmsNorm) {
  for (int dim : {1, 37, 300, 1000}) {
    const int n = 5;
    const std::vector<float> x = Random(size_t(n) * dim, 3.0f), w = Random(dim);
    std::vector<float> want(x.size());
    Cpu().RmsNorm(x.data(), w.data(), n, dim, 1e-5f, want.data());
    DeviceBuffer dx = Upload(x), dw = Upload(w);
    const auto got = UnderSchedules("rms_norm", [&] {
      DeviceBuffer out = Poisoned(x.size() * 4);
      Device().RmsNorm(dx.as<float>(), dw.as<float>(), n, dim, 1e-5f, out.as<float>());
      return Download<float>(out, x.size());
    });
    ExpectClose(got, want, RelativeScale(want), 2e-6, absl::StrCat("rms_norm dim ", dim));
  }
}

TEST_CASE(MatMul) {
  struct Shape { int n, rows, cols, col_begin, stride; bool bias; };
  const Shape shapes[] = {{1, 33, 64, 0, 64, false}, {3, 130, 129, 0, 129, true}, {17, 7, 7, 0, 7, true},
                          {5, 48, 40, 24, 96, false}};  // the last: a column slice of a wider matrix
  for (DType dt : kWeightTypes) {
    for (const Shape& s : shapes) {
      const std::vector<float> wv = Random(size_t(s.rows) * s.stride, 0.2f);
      const std::vector<uint8_t> w = Store(wv, dt);
      const std::vector<float> x = Random(size_t(s.n) * s.cols), bias = Random(s.rows);
      const MatrixView host_w = MatrixView{w.data(), dt, s.rows, s.stride, s.stride}.ColSlice(s.col_begin, s.cols);
      std::vector<float> want(size_t(s.n) * s.rows);
      Cpu().MatMul(x.data(), s.n, host_w, s.bias ? bias.data() : nullptr, want.data());
      // Scale of each output: sum |x w| (+ |bias|).
      std::vector<double> scale(want.size());
      for (int t = 0; t < s.n; ++t) {
        for (int r = 0; r < s.rows; ++r) {
          double a = s.bias ? std::abs(bias[r]) : 0.0;
          for (int c = 0; c < s.cols; ++c) a += std::abs(x[t * s.cols + c] * gqa::LoadElement(host_w.data, dt, int64_t{r} * s.stride + c));
          scale[size_t(t) * s.rows + r] = a + 1e-30;
        }
      }
      MatrixView dev_w;
      absl::StatusOr<DeviceBuffer> dw = Device().ImportHostMatrix(host_w, &dev_w);
      REQUIRE(dw.ok());
      DeviceBuffer dx = Upload(x), db = Upload(bias);
      const auto got = UnderSchedules("matmul", [&] {
        DeviceBuffer out = Poisoned(want.size() * 4);
        Device().MatMul(dx.as<float>(), s.n, dev_w, s.bias ? db.as<float>() : nullptr, out.as<float>());
        return Download<float>(out, want.size());
      });
      const double tol = 1e-5 + (dt == DType::kBF16 ? 1.0 / 256 : dt == DType::kF16 ? 1.0 / 2048 : 0.0);
      ExpectClose(got, want, scale, tol,
                  absl::StrCat("matmul ", DTypeName(dt), " n=", s.n, " ", s.rows, "x", s.cols));
    }
  }
}

TEST_CASE(Rope) {
  for (int hd : {8, 64, 128}) {
    const int n = 6, heads = 3;
    const int64_t stride = heads * hd + 16;  // rows wider than the rotated heads
    std::vector<float> x = Random(size_t(n) * stride);
    std::vector<int32_t> pos(n);
    for (int32_t& p : pos) p = RandInt(0, 4000);
    std::vector<float> inv(hd / 2);
    for (int i = 0; i < hd / 2; ++i) inv[i] = float(std::pow(10000.0, -2.0 * i / hd));
    std::vector<float> want = x;
    Cpu().Rope(want.data(), n, heads, hd, stride, pos.data(), inv.data());
    DeviceBuffer dpos = Upload(pos), dinv = Upload(inv);
    const auto got = UnderSchedules("rope", [&] {
      DeviceBuffer dx = Upload(x);
      Device().Rope(dx.as<float>(), n, heads, hd, stride, dpos.as<int32_t>(), dinv.as<float>());
      return Download<float>(dx, x.size());
    });
    ExpectClose(got, want, RelativeScale(want), 2e-6, absl::StrCat("rope head_dim ", hd));
  }
}

TEST_CASE(ElementwiseAndGather) {
  const int64_t count = 4099;
  const std::vector<float> g = Random(count, 4.0f), u = Random(count), y = Random(count);
  std::vector<float> silu(count), sum = u;
  Cpu().SiluMul(g.data(), u.data(), count, silu.data());
  Cpu().Add(sum.data(), y.data(), count);
  DeviceBuffer dg = Upload(g), du = Upload(u), dy = Upload(y);
  const auto got_silu = UnderSchedules("silu_mul", [&] {
    DeviceBuffer out = Poisoned(count * 4);
    Device().SiluMul(dg.as<float>(), du.as<float>(), count, out.as<float>());
    return Download<float>(out, count);
  });
  ExpectClose(got_silu, silu, RelativeScale(silu), 2e-6, "silu_mul");
  const auto got_sum = UnderSchedules("add", [&] {
    DeviceBuffer dx = Upload(u);
    Device().Add(dx.as<float>(), dy.as<float>(), count);
    return Download<float>(dx, count);
  });
  ExpectClose(got_sum, sum, RelativeScale(sum), 2e-6, "add");

  const int rows = 9, dim = 301;
  const std::vector<float> x = Random(size_t(rows) * dim);
  const std::vector<int32_t> pick = {8, 0, 3, 3};
  std::vector<float> want(pick.size() * dim);
  Cpu().GatherRows(x.data(), pick.data(), int(pick.size()), dim, want.data());
  DeviceBuffer dx = Upload(x), dp = Upload(pick);
  const auto got = UnderSchedules("gather_rows", [&] {
    DeviceBuffer out = Poisoned(want.size() * 4);
    Device().GatherRows(dx.as<float>(), dp.as<int32_t>(), int(pick.size()), dim, out.as<float>());
    return Download<float>(out, want.size());
  });
  ExpectClose(got, want, RelativeScale(want), 0.0, "gather_rows");
}

// ---- KV write and paged GQA attention ----

struct AttnCase {
  int num_q_heads, num_kv_heads, group_size, q_head_offset, head_dim, block_size, window;
  DType kv_dtype;
};

std::string Name(const AttnCase& c) {
  return absl::StrCat("q", c.num_q_heads, " kv", c.num_kv_heads, " g", c.group_size, " off", c.q_head_offset, " d",
                      c.head_dim, " bs", c.block_size, " w", c.window, " ", DTypeName(c.kv_dtype));
}

// Sequences of the given lengths in shuffled blocks (a few left unused in
// between); the step holds positions [first_in_step[s], lens[s]) of each.
// Both backends write every position's K/V into their own cache layout, and
// the CPU's attention over the step is the reference.
struct AttentionScenario {
  AttentionShape shape;
  KvCacheLayout cpu_layout, dev_layout;
  std::vector<int32_t> tables, all_seq, all_pos, all_slot, step_seq, step_pos, step_slot;
  int max_blocks = 0;
  std::vector<float> q, want;
  std::vector<uint8_t> cpu_k, cpu_v;
  DeviceBuffer d_all_seq, d_all_pos, d_all_slot, d_seq, d_pos, d_slot, d_tab, dk, dv, dq, dkc, dvc;

  AttentionMeta Meta(const int32_t* seq, const int32_t* pos, const int32_t* slot, const int32_t* tab, int count) const {
    AttentionMeta m;
    m.num_tokens = count;
    m.token_seq = seq;
    m.token_pos = pos;
    m.slot_mapping = slot;
    m.block_tables = tab;
    m.max_blocks_per_seq = max_blocks;
    return m;
  }
  int steps() const { return int(step_pos.size()); }
  AttentionMeta DeviceStepMeta() const {
    return Meta(d_seq.as<int32_t>(), d_pos.as<int32_t>(), d_slot.as<int32_t>(), d_tab.as<int32_t>(), steps());
  }
};

std::unique_ptr<AttentionScenario> MakeScenario(const AttnCase& c, const std::vector<int>& lens,
                                                const std::vector<int>& first_in_step) {
  auto sc = std::make_unique<AttentionScenario>();
  const int bs = c.block_size, num_seqs = int(lens.size());
  sc->max_blocks = (*std::max_element(lens.begin(), lens.end()) + bs - 1) / bs;
  int total_blocks = 3;
  for (int len : lens) total_blocks += (len + bs - 1) / bs;
  std::vector<int32_t> ids(total_blocks);
  for (int i = 0; i < total_blocks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), Rng());
  sc->tables.assign(size_t(num_seqs) * sc->max_blocks, -1);
  int next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int b = 0; b < (lens[s] + bs - 1) / bs; ++b) sc->tables[s * sc->max_blocks + b] = ids[next++];
  }
  for (int s = 0; s < num_seqs; ++s) {
    for (int p = 0; p < lens[s]; ++p) {
      const int32_t slot = sc->tables[s * sc->max_blocks + p / bs] * bs + p % bs;
      sc->all_seq.push_back(s);
      sc->all_pos.push_back(p);
      sc->all_slot.push_back(slot);
      if (p >= first_in_step[s]) {
        sc->step_seq.push_back(s);
        sc->step_pos.push_back(p);
        sc->step_slot.push_back(slot);
      }
    }
  }
  const int n_all = int(sc->all_pos.size()), n = sc->steps(), hd = c.head_dim;
  const std::vector<float> k = Random(size_t(n_all) * c.num_kv_heads * hd), v = Random(size_t(n_all) * c.num_kv_heads * hd);
  sc->q = Random(size_t(n) * c.num_q_heads * hd);
  AttentionShape& shape = sc->shape;
  shape.num_q_heads = c.num_q_heads;
  shape.num_kv_heads = c.num_kv_heads;
  shape.group_size = c.group_size;
  shape.q_head_offset = c.q_head_offset;
  shape.head_dim = hd;
  shape.scale = 1.0f / std::sqrt(float(hd));
  shape.sliding_window = c.window;

  sc->cpu_layout = Cpu().KvLayout(total_blocks, bs, c.num_kv_heads, hd, c.kv_dtype);
  sc->cpu_k.resize(sc->cpu_layout.Bytes());
  sc->cpu_v.resize(sc->cpu_layout.Bytes());
  Cpu().WriteKv(k.data(), v.data(),
                sc->Meta(sc->all_seq.data(), sc->all_pos.data(), sc->all_slot.data(), sc->tables.data(), n_all),
                sc->cpu_layout, sc->cpu_k.data(), sc->cpu_v.data());
  sc->want.resize(sc->q.size());
  const std::unique_ptr<AttentionPlan> cpu_plan =
      Cpu().PlanAttention(sc->step_seq.data(), sc->step_pos.data(), n, shape, sc->cpu_layout);
  Cpu().Attention(sc->q.data(), sc->Meta(sc->step_seq.data(), sc->step_pos.data(), sc->step_slot.data(), sc->tables.data(), n),
                  sc->cpu_layout, sc->cpu_k.data(), sc->cpu_v.data(), shape, *cpu_plan, sc->want.data());

  sc->dev_layout = Device().KvLayout(total_blocks, bs, c.num_kv_heads, hd, c.kv_dtype);
  sc->d_all_seq = Upload(sc->all_seq);
  sc->d_all_pos = Upload(sc->all_pos);
  sc->d_all_slot = Upload(sc->all_slot);
  sc->d_seq = Upload(sc->step_seq);
  sc->d_pos = Upload(sc->step_pos);
  sc->d_slot = Upload(sc->step_slot);
  sc->d_tab = Upload(sc->tables);
  sc->dk = Upload(k);
  sc->dv = Upload(v);
  sc->dq = Upload(sc->q);
  sc->dkc = Poisoned(sc->dev_layout.Bytes());
  sc->dvc = Poisoned(sc->dev_layout.Bytes());
  Device().WriteKv(sc->dk.as<float>(), sc->dv.as<float>(),
                   sc->Meta(sc->d_all_seq.as<int32_t>(), sc->d_all_pos.as<int32_t>(), sc->d_all_slot.as<int32_t>(),
                            sc->d_tab.as<int32_t>(), n_all),
                   sc->dev_layout, sc->dkc.data(), sc->dvc.data());
  return sc;
}

// The step's attention on `dev` (Device() or GenericDevice()) with its plan
// from the same backend.
std::vector<float> DeviceAttention(const AttentionScenario& sc, Backend& dev, const std::string& what) {
  REQUIRE_OK(Device().Synchronize());  // the cache and inputs, written on Device()'s stream
  const std::unique_ptr<AttentionPlan> plan =
      dev.PlanAttention(sc.step_seq.data(), sc.step_pos.data(), sc.steps(), sc.shape, sc.dev_layout);
  return UnderSchedules(what, [&] {
    DeviceBuffer out = Poisoned(sc.q.size() * 4);
    REQUIRE_OK(Device().Synchronize());
    dev.Attention(sc.dq.as<float>(), sc.DeviceStepMeta(), sc.dev_layout, sc.dkc.data(), sc.dvc.data(), sc.shape,
                  *plan, out.as<float>());
    REQUIRE_OK(dev.Synchronize());
    return Download<float>(out, sc.q.size());
  });
}

// Three sequences of 1, 54 and 97 tokens; the step holds the first's only
// token, a 5-token chunk at the end of the second (chunked prefill) and the
// third's last token (decode). The generic kernel (no plan).
void RunAttentionCase(const AttnCase& c) {
  const std::unique_ptr<AttentionScenario> sc = MakeScenario(c, {1, 54, 97}, {0, 49, 96});
  // The written cache holds exactly the CPU's values, element by element.
  const size_t esize = DTypeSize(c.kv_dtype), hd = size_t(c.head_dim);
  const auto got_k = Download<uint8_t>(sc->dkc, sc->dev_layout.Bytes());
  const auto got_v = Download<uint8_t>(sc->dvc, sc->dev_layout.Bytes());
  int mismatches = 0;
  for (size_t t = 0; t < sc->all_slot.size(); ++t) {
    for (int h = 0; h < c.num_kv_heads; ++h) {
      const size_t cpu_off = size_t(sc->cpu_layout.Offset(sc->all_slot[t], h)) * esize;
      const size_t dev_off = size_t(sc->dev_layout.Offset(sc->all_slot[t], h)) * esize;
      mismatches += std::memcmp(sc->cpu_k.data() + cpu_off, got_k.data() + dev_off, hd * esize) != 0;
      mismatches += std::memcmp(sc->cpu_v.data() + cpu_off, got_v.data() + dev_off, hd * esize) != 0;
    }
  }
  CHECK_MSG(mismatches == 0, "write_kv " << Name(c) << ": " << mismatches << " rows differ from the CPU's");
  const auto got = DeviceAttention(*sc, GenericDevice(), "attention " + Name(c));
  ExpectClose(got, sc->want, RelativeScale(sc->want), 2e-5, "attention " + Name(c));
}

TEST_CASE(AttentionGroupSizes) {
  // q heads, kv heads, group size, offset of local q head 0 in its group.
  const AttnCase cases[] = {
      {4, 4, 1, 0, 64, 16, 0, DType::kF32},    // MHA
      {4, 2, 2, 0, 128, 32, 0, DType::kF32},   // GQA-2
      {8, 2, 4, 0, 64, 16, 0, DType::kBF16},   // GQA-4, bf16 cache
      {7, 1, 7, 0, 128, 16, 0, DType::kF32},   // GQA-7 (Qwen2-7B's group)
      {5, 2, 7, 3, 64, 32, 0, DType::kF32},    // a shard straddling two groups of 7
      {16, 2, 8, 0, 128, 16, 0, DType::kBF16}, // GQA-8
      {8, 1, 8, 0, 64, 32, 20, DType::kF32},   // GQA-8 with a sliding window
      {16, 1, 16, 0, 64, 16, 0, DType::kF32},  // a group wider than one pass of the kernel
      {1, 1, 8, 5, 128, 16, 0, DType::kF32},   // one query head of a group (TP 8 of an 8-head group)
      {2, 1, 4, 0, 40, 16, 7, DType::kBF16},   // head_dim not a power of two
  };
  for (const AttnCase& c : cases) RunAttentionCase(c);
}

// ---- the specialised kernels: planned decode (flash-decoding) and prefill ----

// Four sequences in one step: a decode token at position 1299 (its context
// split several ways), a decode token at position 0, a 37-token chunk that
// continues a 263-token prefix (chunked prefill) and a fresh 20-token prompt.
void RunPlannedCase(const AttnCase& c) {
  const std::unique_ptr<AttentionScenario> sc = MakeScenario(c, {1300, 1, 300, 20}, {1299, 0, 263, 0});
  REQUIRE_OK(Device().ReserveAttention(sc->steps(), 4, sc->shape));
  const auto got = DeviceAttention(*sc, Device(), "planned attention " + Name(c));
  const std::vector<float>& want = sc->want;
  const int hd = c.head_dim;
  // The first two step tokens are decode items, the rest prefill tiles.
  const size_t decode_values = size_t(2) * c.num_q_heads * hd;
  const std::vector<float> got_d(got.begin(), got.begin() + decode_values), want_d(want.begin(), want.begin() + decode_values);
  const std::vector<float> got_p(got.begin() + decode_values, got.end()), want_p(want.begin() + decode_values, want.end());
  ExpectClose(got_d, want_d, RelativeScale(want_d), 2e-5, "planned decode " + Name(c));
  if (c.kv_dtype == DType::kBF16 && (hd == 64 || hd == 128)) {
    // Tensor cores: Q and P rounded to bf16 (8 significant bits).
    ExpectClose(got_p, want_p, RelativeScale(want_p), 1e-2, "tensor-core prefill " + Name(c));
    double err = 0, norm = 0;
    for (size_t i = 0; i < got_p.size(); ++i) {
      err += (double(got_p[i]) - want_p[i]) * (double(got_p[i]) - want_p[i]);
      norm += double(want_p[i]) * want_p[i];
    }
    CHECK_MSG(std::sqrt(err / norm) <= 5e-3, "tensor-core prefill " << Name(c) << ": relative error " << std::sqrt(err / norm));
  } else {
    ExpectClose(got_p, want_p, RelativeScale(want_p), 2e-5, "planned prefill " + Name(c));
  }
}

TEST_CASE(PlannedAttentionGroupSizes) {
  const AttnCase cases[] = {
      {4, 4, 1, 0, 64, 16, 0, DType::kF32},     // MHA
      {4, 2, 2, 0, 128, 32, 0, DType::kBF16},   // GQA-2
      {8, 2, 4, 0, 128, 16, 0, DType::kF32},    // GQA-4
      {7, 1, 7, 0, 64, 16, 0, DType::kBF16},    // GQA-7, compiled as 8
      {5, 2, 7, 3, 128, 32, 0, DType::kF32},    // a shard straddling two groups of 7
      {8, 1, 8, 0, 128, 16, 0, DType::kBF16},   // GQA-8
      {16, 2, 8, 0, 64, 32, 100, DType::kF32},  // GQA-8, sliding window
      {4, 1, 4, 0, 256, 16, 0, DType::kBF16},   // head_dim 256
  };
  for (const AttnCase& c : cases) RunPlannedCase(c);
}

#if defined(GQA_TEST_CUDA_SIM)
// Counted by the interpreter, not timed: decode reads each K/V element once
// for all query heads of its group (a kernel that reloads K/V per query head
// would read group_size times as much), total traffic stays near the
// minimum, and K/V loads are coalesced.
TEST_CASE(DecodeTrafficIsMinimal) {
  for (DType dt : {DType::kBF16, DType::kF32}) {
    for (int group : {1, 4, 8}) {
      for (int batch : {1, 4}) {
        cuda_sim::TrafficCase c;
        c.group_size = group;
        c.num_kv_heads = 2;
        c.batch = batch;
        c.context = 1024;
        c.kv_dtype = dt;
        c.block_size = batch == 1 ? 16 : 32;
        absl::StatusOr<cuda_sim::TrafficReport> r = cuda_sim::MeasureAttentionTraffic(c);
        REQUIRE_OK(r.status());
        const std::string what = absl::StrCat(DTypeName(dt), " group ", group, " batch ", batch, " (", r->max_splits, " splits)");
        CHECK_MSG(r->kv_bytes_ratio() >= 1.0 && r->kv_bytes_ratio() <= 1.03, what << ": K/V bytes x" << r->kv_bytes_ratio());
        CHECK_MSG(r->total_bytes_ratio() <= 1.10, what << ": total bytes x" << r->total_bytes_ratio());
        CHECK_MSG(r->sectors_per_request_ratio() <= 1.10, what << ": sectors per request x" << r->sectors_per_request_ratio());
      }
    }
  }
}

TEST_CASE(TooLargeHeadDimIsAnErrorNotACrash) {
  AttentionShape shape;
  shape.num_q_heads = 1;
  shape.num_kv_heads = 1;
  shape.head_dim = 512;
  AttentionMeta meta;
  const std::unique_ptr<AttentionPlan> plan = Device().PlanAttention(nullptr, nullptr, 0, shape, KvCacheLayout{});
  Device().Attention(nullptr, meta, KvCacheLayout{}, nullptr, nullptr, shape, *plan, nullptr);
  const absl::Status st = Device().Synchronize();
  CHECK_MSG(!st.ok() && std::string(st.message()).find("head_dim") != std::string::npos, st.message());
  CHECK(Device().Synchronize().ok());  // the error was reported once
}
#endif

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) { return mini_test::RunAll(argc, argv); }
