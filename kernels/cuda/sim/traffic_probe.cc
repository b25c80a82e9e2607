#include "kernels/cuda/sim/traffic_probe.h"

#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/simt/simt.h"

namespace gqa::cuda_sim {

absl::StatusOr<TrafficReport> MeasureAttentionTraffic(const TrafficCase& c) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> dev, CreateBackend(0));
  const int hd = c.head_dim, nkv = c.num_kv_heads, nq = c.group_size * nkv, bs = c.block_size;
  const int len = c.prefill ? c.context : c.context + 1;  // positions held per sequence
  const int blocks_per_seq = (len + bs - 1) / bs;
  const int num_blocks = blocks_per_seq * c.batch;
  std::vector<int32_t> tables, all_seq, all_pos, all_slot, step_seq, step_pos, step_slot;
  for (int s = 0; s < c.batch; ++s) {
    for (int b = 0; b < blocks_per_seq; ++b) tables.push_back(s * blocks_per_seq + b);
    for (int p = 0; p < len; ++p) {
      const int32_t slot = (s * blocks_per_seq + p / bs) * bs + p % bs;
      all_seq.push_back(s);
      all_pos.push_back(p);
      all_slot.push_back(slot);
      if (c.prefill || p == len - 1) {
        step_seq.push_back(s);
        step_pos.push_back(p);
        step_slot.push_back(slot);
      }
    }
  }
  const int n_all = int(all_pos.size()), n = int(step_pos.size());
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto random = [&](size_t count) {
    std::vector<float> v(count);
    for (float& x : v) x = normal(rng);
    return v;
  };
  auto upload = [&](const auto& host) -> absl::StatusOr<DeviceBuffer> {
    const size_t bytes = host.size() * sizeof(host[0]);
    ASSIGN_OR_RETURN(DeviceBuffer b, dev->Allocate(bytes));
    dev->CopyToDevice(b.data(), host.data(), bytes);
    return b;
  };
  ASSIGN_OR_RETURN(DeviceBuffer d_tab, upload(tables));
  ASSIGN_OR_RETURN(DeviceBuffer d_all_seq, upload(all_seq));
  ASSIGN_OR_RETURN(DeviceBuffer d_all_pos, upload(all_pos));
  ASSIGN_OR_RETURN(DeviceBuffer d_all_slot, upload(all_slot));
  ASSIGN_OR_RETURN(DeviceBuffer d_seq, upload(step_seq));
  ASSIGN_OR_RETURN(DeviceBuffer d_pos, upload(step_pos));
  ASSIGN_OR_RETURN(DeviceBuffer d_slot, upload(step_slot));
  ASSIGN_OR_RETURN(DeviceBuffer dk, upload(random(size_t(n_all) * nkv * hd)));
  ASSIGN_OR_RETURN(DeviceBuffer dv, upload(random(size_t(n_all) * nkv * hd)));
  ASSIGN_OR_RETURN(DeviceBuffer dq, upload(random(size_t(n) * nq * hd)));
  ASSIGN_OR_RETURN(DeviceBuffer out, dev->Allocate(size_t(n) * nq * hd * sizeof(float)));
  const KvCacheLayout layout = dev->KvLayout(num_blocks, bs, nkv, hd, c.kv_dtype);
  ASSIGN_OR_RETURN(DeviceBuffer kc, dev->Allocate(layout.Bytes()));
  ASSIGN_OR_RETURN(DeviceBuffer vc, dev->Allocate(layout.Bytes()));
  AttentionMeta meta;
  meta.block_tables = d_tab.as<int32_t>();
  meta.max_blocks_per_seq = blocks_per_seq;
  meta.num_tokens = n_all;
  meta.token_seq = d_all_seq.as<int32_t>();
  meta.token_pos = d_all_pos.as<int32_t>();
  meta.slot_mapping = d_all_slot.as<int32_t>();
  dev->WriteKv(dk.as<float>(), dv.as<float>(), meta, layout, kc.data(), vc.data());
  AttentionShape shape;
  shape.num_q_heads = nq;
  shape.num_kv_heads = nkv;
  shape.group_size = c.group_size;
  shape.head_dim = hd;
  shape.scale = 1.0f / std::sqrt(float(hd));
  if (!SpecialisedAttention(shape, layout)) {
    return absl::InvalidArgumentError(absl::StrCat("no specialised kernel for group ", c.group_size, ", head_dim ", hd));
  }
  RETURN_IF_ERROR(dev->ReserveAttention(n, c.batch, shape));
  const std::unique_ptr<AttentionPlan> plan = dev->PlanAttention(step_seq.data(), step_pos.data(), n, shape, layout);
  meta.num_tokens = n;
  meta.token_seq = d_seq.as<int32_t>();
  meta.token_pos = d_pos.as<int32_t>();
  meta.slot_mapping = d_slot.as<int32_t>();
  RETURN_IF_ERROR(dev->Synchronize());

  gqa_sim::ResetTraffic();
  gqa_sim::ClearWatches();
  gqa_sim::WatchRange(kc.data(), layout.Bytes());
  gqa_sim::WatchRange(vc.data(), layout.Bytes());
  dev->Attention(dq.as<float>(), meta, layout, kc.data(), vc.data(), shape, *plan, out.as<float>());
  RETURN_IF_ERROR(dev->Synchronize());
  const gqa_sim::Traffic t = gqa_sim::GetTraffic();
  gqa_sim::ClearWatches();

  TrafficReport r;
  const double elem = double(DTypeSize(c.kv_dtype));
  r.kv_min_bytes = 2.0 * c.batch * len * nkv * hd * elem;
  const double q_bytes = double(n) * nq * hd * 4;
  r.total_min_bytes = r.kv_min_bytes + 2 * q_bytes;  // Q read, O written
  r.kv_bytes = double(t.watched_loads.bytes);
  r.total_bytes = double(t.loads.bytes + t.stores.bytes);
  r.kv_sectors = double(t.watched_loads.sectors);
  r.kv_ideal_sectors = double(t.watched_loads.ideal_sectors);
  const AttentionSchedule sched =
      MakeAttentionSchedule(step_seq.data(), step_pos.data(), n, shape, c.kv_dtype, 2 * 132, std::max(64, 4 * c.batch));
  r.max_splits = sched.max_splits;
  return r;
}

}  // namespace gqa::cuda_sim
