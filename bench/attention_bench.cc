#include "bench/attention_bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_backend.h"
#include "nlohmann/json.hpp"
#include "bench/membw.h"
#include "worker/device_group.h"

namespace gqa {
namespace {

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(DeviceKind kind, int threads) {
  switch (kind) {
    case DeviceKind::kCpu: return std::unique_ptr<Backend>(new CpuBackend(threads > 0 ? threads : 1));
    case DeviceKind::kCuda: return cuda::CreateBackend(0);
    case DeviceKind::kCudaSim: return cuda_sim::CreateBackend(0);
  }
  return absl::InvalidArgumentError("unknown device");
}

// Seconds of `fn` followed by a synchronisation, `iters` times (after one
// warm-up run); returns the samples.
template <typename Fn>
absl::StatusOr<std::vector<double>> Time(Backend& b, int iters, Fn fn) {
  fn();
  RETURN_IF_ERROR(b.Synchronize());
  std::vector<double> s;
  for (int i = 0; i < iters; ++i) {
    const double t0 = MonotonicSeconds();
    fn();
    RETURN_IF_ERROR(b.Synchronize());
    s.push_back(MonotonicSeconds() - t0);
  }
  return s;
}

template <typename T>
absl::StatusOr<DeviceBuffer> Upload(Backend& dev, const std::vector<T>& host) {
  ASSIGN_OR_RETURN(DeviceBuffer d, dev.Allocate(host.size() * sizeof(T)));
  dev.CopyToDevice(d.data(), host.data(), host.size() * sizeof(T));
  return d;
}

// A K or V cache of `layout`, filled with the repeated pattern.
absl::StatusOr<DeviceBuffer> FilledCache(Backend& dev, const KvCacheLayout& layout, const std::vector<uint16_t>& pattern) {
  ASSIGN_OR_RETURN(DeviceBuffer c, dev.Allocate(layout.Bytes()));
  const size_t chunk = pattern.size() * sizeof(uint16_t);
  for (size_t off = 0; off < c.bytes(); off += chunk) {
    dev.CopyToDevice(static_cast<char*>(c.data()) + off, pattern.data(), std::min(chunk, c.bytes() - off));
  }
  return c;
}

AttentionShape Shape(int group, int kv_heads, int head_dim) {
  AttentionShape shape;
  shape.num_q_heads = group * kv_heads;
  shape.num_kv_heads = kv_heads;
  shape.group_size = group;
  shape.head_dim = head_dim;
  shape.scale = 1.0f / std::sqrt(float(head_dim));
  return shape;
}

// Device copies of one step's token arrays and queries, and its meta.
struct StepOnDevice {
  DeviceBuffer seq, pos, slot, tables, q, out;
  AttentionMeta meta;
};

absl::StatusOr<StepOnDevice> UploadStep(Backend& dev, const std::vector<int32_t>& seq, const std::vector<int32_t>& pos,
                                        const std::vector<int32_t>& slot, const std::vector<int32_t>& tables,
                                        int blocks_per_seq, const std::vector<float>& q) {
  StepOnDevice s;
  ASSIGN_OR_RETURN(s.seq, Upload(dev, seq));
  ASSIGN_OR_RETURN(s.pos, Upload(dev, pos));
  ASSIGN_OR_RETURN(s.slot, Upload(dev, slot));
  ASSIGN_OR_RETURN(s.tables, Upload(dev, tables));
  ASSIGN_OR_RETURN(s.q, Upload(dev, q));
  ASSIGN_OR_RETURN(s.out, dev.Allocate(q.size() * sizeof(float)));
  s.meta.num_tokens = int(seq.size());
  s.meta.token_seq = s.seq.as<int32_t>();
  s.meta.token_pos = s.pos.as<int32_t>();
  s.meta.slot_mapping = s.slot.as<int32_t>();
  s.meta.block_tables = s.tables.as<int32_t>();
  s.meta.max_blocks_per_seq = blocks_per_seq;
  return s;
}

}  // namespace

absl::Status RunAttentionBench(const Flags& f) {
  ASSIGN_OR_RETURN(DeviceKind kind, ParseDeviceKind(f.Get("device")));
  ASSIGN_OR_RETURN(int64_t threads, f.GetInt("threads"));
  ASSIGN_OR_RETURN(std::vector<int> contexts, f.GetIntList("attn-context"));
  ASSIGN_OR_RETURN(std::vector<int> batches, f.GetIntList("attn-batch"));
  ASSIGN_OR_RETURN(std::vector<int> groups, f.GetIntList("attn-groups"));
  ASSIGN_OR_RETURN(int64_t kv_heads, f.GetInt("kv-heads"));
  ASSIGN_OR_RETURN(int64_t head_dim, f.GetInt("head-dim"));
  ASSIGN_OR_RETURN(int64_t iters, f.GetInt("samples"));
  ASSIGN_OR_RETURN(int64_t max_gib, f.GetInt("attn-max-gib"));
  ASSIGN_OR_RETURN(int64_t probe_mib, f.GetInt("probe-mib"));
  if (iters < 1 || kv_heads < 1 || head_dim < 2 || max_gib < 1 || probe_mib < 1) {
    return absl::InvalidArgumentError("sizes must be positive");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> dev, MakeBackend(kind, int(threads)));
  const int block_size = 16;
  const DType kv_dtype = DType::kBF16;
  ASSIGN_OR_RETURN(DeviceBuffer probe_a, dev->Allocate(size_t(probe_mib) << 20));
  ASSIGN_OR_RETURN(DeviceBuffer probe_b, dev->Allocate(size_t(probe_mib) << 20));
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  // A random bf16 pattern (never NaN or infinity) that fills the caches.
  std::vector<uint16_t> pattern(size_t(8) << 20);
  for (uint16_t& x : pattern) x = gqa::FloatToBf16(normal(rng));

  nlohmann::json rows = nlohmann::json::array();
  std::printf("%s, bf16 KV cache, %lld KV heads of %lld, blocks of %d\n", dev->Name().c_str(),
              static_cast<long long>(kv_heads), static_cast<long long>(head_dim), block_size);
  std::printf("| kernel | batch | group | context | time ms (median) | GB/s or TFLOP/s | copy GB/s | fraction of copy |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (int context : contexts) {
    for (int group : groups) {
      for (int batch : batches) {
        const int blocks_per_seq = (context + block_size - 1) / block_size;
        const KvCacheLayout layout = dev->KvLayout(blocks_per_seq * batch, block_size, int(kv_heads), int(head_dim), kv_dtype);
        if (2 * layout.Bytes() > (max_gib << 30)) continue;
        ASSIGN_OR_RETURN(DeviceBuffer kc, FilledCache(*dev, layout, pattern));
        ASSIGN_OR_RETURN(DeviceBuffer vc, FilledCache(*dev, layout, pattern));
        const AttentionShape shape = Shape(group, int(kv_heads), int(head_dim));
        // Decode: every sequence's last token.
        std::vector<int32_t> seq(batch), pos(batch, context - 1), slot(batch), tables;
        for (int b = 0; b < batch; ++b) {
          seq[b] = b;
          slot[b] = (b * blocks_per_seq) * block_size + context - 1;
          for (int i = 0; i < blocks_per_seq; ++i) tables.push_back(b * blocks_per_seq + i);
        }
        std::vector<float> q(size_t(batch) * shape.num_q_heads * head_dim);
        for (float& x : q) x = normal(rng);
        ASSIGN_OR_RETURN(StepOnDevice step, UploadStep(*dev, seq, pos, slot, tables, blocks_per_seq, q));
        RETURN_IF_ERROR(dev->ReserveAttention(batch, batch, shape));
        const std::unique_ptr<AttentionPlan> plan = dev->PlanAttention(seq.data(), pos.data(), batch, shape, layout);
        ASSIGN_OR_RETURN(double copy, DeviceCopyBytesPerSecond(*dev, probe_a, probe_b, int(iters)));
        ASSIGN_OR_RETURN(std::vector<double> t, Time(*dev, int(iters), [&] {
          dev->Attention(step.q.as<float>(), step.meta, layout, kc.data(), vc.data(), shape, *plan, step.out.as<float>());
        }));
        const double bytes = 2.0 * layout.Bytes() * double(context) / double(blocks_per_seq * block_size) +
                             2.0 * double(q.size()) * sizeof(float);
        const double gbps = bytes / Median(t) / 1e9;
        std::printf("| decode | %d | %d | %d | %.3f | %.0f | %.0f | %.2f |\n", batch, group, context, 1e3 * Median(t), gbps,
                    copy / 1e9, gbps * 1e9 / copy);
        std::fflush(stdout);
        rows.push_back({{"kernel", "decode"}, {"batch", batch}, {"group_size", group}, {"context", context},
                        {"ms_median", 1e3 * Median(t)}, {"GBps", gbps}, {"copy_GBps", copy / 1e9},
                        {"fraction_of_copy", gbps * 1e9 / copy}});
      }
      // Prefill: one prompt of `context` tokens in one step, causal.
      if (int64_t(context) * group * kv_heads * head_dim * 4 * 2 > (max_gib << 30)) continue;
      const int blocks = (context + block_size - 1) / block_size;
      const KvCacheLayout layout = dev->KvLayout(blocks, block_size, int(kv_heads), int(head_dim), kv_dtype);
      ASSIGN_OR_RETURN(DeviceBuffer kc, FilledCache(*dev, layout, pattern));
      ASSIGN_OR_RETURN(DeviceBuffer vc, FilledCache(*dev, layout, pattern));
      const AttentionShape shape = Shape(group, int(kv_heads), int(head_dim));
      const int nq = shape.num_q_heads;
      std::vector<int32_t> seq(context, 0), pos(context), slot(context), tables(blocks);
      for (int i = 0; i < context; ++i) pos[i] = slot[i] = i;
      for (int i = 0; i < blocks; ++i) tables[i] = i;
      std::vector<float> q(size_t(context) * nq * head_dim);
      for (float& x : q) x = normal(rng);
      ASSIGN_OR_RETURN(StepOnDevice step, UploadStep(*dev, seq, pos, slot, tables, blocks, q));
      RETURN_IF_ERROR(dev->ReserveAttention(context, 1, shape));
      const std::unique_ptr<AttentionPlan> plan = dev->PlanAttention(seq.data(), pos.data(), context, shape, layout);
      ASSIGN_OR_RETURN(std::vector<double> t, Time(*dev, int(iters), [&] {
        dev->Attention(step.q.as<float>(), step.meta, layout, kc.data(), vc.data(), shape, *plan, step.out.as<float>());
      }));
      // Causal: half of the full Q K^T and P V products, 2 flops per MAC.
      const double flops = 2.0 * 2.0 * nq * double(head_dim) * double(context) * double(context) / 2.0;
      const double tflops = flops / Median(t) / 1e12;
      std::printf("| prefill | 1 | %d | %d | %.3f | %.2f TFLOP/s | | |\n", group, context, 1e3 * Median(t), tflops);
      std::fflush(stdout);
      rows.push_back({{"kernel", "prefill"}, {"batch", 1}, {"group_size", group}, {"context", context},
                      {"ms_median", 1e3 * Median(t)}, {"TFLOPs", tflops}});
    }
  }
  if (f.Get("output") == "json") std::printf("%s\n", rows.dump(2).c_str());
  return absl::OkStatus();
}

}  // namespace gqa
