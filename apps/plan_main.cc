// gqa-plan: how a model shards over T ranks, what each rank holds, and how
// many sequences fit in a device's memory, for the model as it is and as if
// it were MHA or MQA.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "base/flags.h"
#include "worker/memory_plan.h"

namespace gqa {
namespace {

using Json = nlohmann::json;

absl::StatusOr<int> ElementBytes(const std::string& dtype, const char* flag) {
  if (dtype == "f32" || dtype == "float32") return 4;
  if (dtype == "bf16" || dtype == "bfloat16" || dtype == "f16" || dtype == "float16") return 2;
  if (dtype == "fp8" || dtype == "f8") return 1;
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " must be f32, bf16, f16 or fp8, not '", dtype, "'"));
}

Json RanksJson(const MemoryPlan& mp) {
  Json ranks = Json::array();
  for (size_t r = 0; r < mp.ranks.size(); ++r) {
    const RankMemory& m = mp.ranks[r];
    ranks.push_back({{"rank", r},
                     {"q_heads", {m.shard.q_head_begin, m.shard.q_head_end}},
                     {"kv_heads", {m.shard.kv_head_begin, m.shard.kv_head_end}},
                     {"mlp", {m.shard.mlp_begin, m.shard.mlp_end}},
                     {"vocab", {m.shard.vocab_begin, m.shard.vocab_end}},
                     {"weight_bytes", m.weight_bytes},
                     {"kv_bytes_per_token", m.kv_bytes_per_token}});
  }
  return ranks;
}

absl::Status Run(const Flags& f) {
  std::string config_path;
  if (f.Has("model")) {
    config_path = (std::filesystem::path(f.Get("model")) / "config.json").string();
  } else if (f.Has("config")) {
    config_path = f.Get("config");
  } else {
    return absl::InvalidArgumentError("give --model DIR or --config config.json");
  }
  ASSIGN_OR_RETURN(ModelConfig c, LoadModelConfig(config_path));
  ASSIGN_OR_RETURN(int64_t tp, f.GetInt("tp"));
  if (tp < 1 || tp > 1024) return absl::InvalidArgumentError("--tp must be in 1..1024");
  // The weight dtype: --dtype, else the config's declared dtype, else bf16.
  std::string dtype = f.Get("dtype");
  if (dtype.empty()) {
    std::ifstream in(config_path);
    const Json j = Json::parse(in, nullptr, false);
    dtype = "bf16";
    for (const char* key : {"torch_dtype", "dtype"}) {
      if (j.is_object() && j.contains(key) && j[key].is_string()) dtype = j[key].get<std::string>();
    }
  }
  ASSIGN_OR_RETURN(int wbytes, ElementBytes(dtype, "dtype"));
  const std::string kv_dtype = f.Get("kv-dtype").empty() ? dtype : f.Get("kv-dtype");
  ASSIGN_OR_RETURN(int kvbytes, ElementBytes(kv_dtype, "kv-dtype"));
  ASSIGN_OR_RETURN(MemoryPlan mp, PlanMemory(c, static_cast<int>(tp), wbytes, kvbytes));

  Json out;
  out["config"] = config_path;
  out["architecture"] = std::string(ArchitectureName(c.arch));
  out["num_attention_heads"] = c.num_q_heads;
  out["num_key_value_heads"] = c.num_kv_heads;
  out["head_dim"] = c.head_dim;
  out["tp"] = tp;
  out["weight_dtype"] = dtype;
  out["kv_dtype"] = kv_dtype;
  out["kv_replication_factor"] = mp.plan.KvReplicationFactor();
  out["ranks"] = RanksJson(mp);

  const bool capacity = f.Has("device-memory") || f.Has("max-model-len");
  if (capacity) {
    if (!f.Has("device-memory") || !f.Has("max-model-len")) {
      return absl::InvalidArgumentError("--device-memory and --max-model-len go together");
    }
    ASSIGN_OR_RETURN(int64_t mem, f.GetInt("device-memory"));
    ASSIGN_OR_RETURN(int64_t len, f.GetInt("max-model-len"));
    ASSIGN_OR_RETURN(double util, f.GetDouble("memory-utilization"));
    if (mem <= 0 || len <= 0 || util <= 0 || util > 1) {
      return absl::InvalidArgumentError("--device-memory and --max-model-len must be positive, --memory-utilization in (0, 1]");
    }
    Json cap;
    cap["device_memory"] = mem;
    cap["memory_utilization"] = util;
    cap["max_model_len"] = len;
    struct Variant { const char* name; int kv_heads; };
    for (Variant v : {Variant{"as_configured", c.num_kv_heads}, Variant{"mha", c.num_q_heads}, Variant{"mqa", 1}}) {
      ModelConfig vc = c;
      vc.num_kv_heads = v.kv_heads;
      ASSIGN_OR_RETURN(MemoryPlan vp, PlanMemory(vc, static_cast<int>(tp), wbytes, kvbytes));
      const Capacity k = PlanCapacity(vp, mem, util, len);
      cap[v.name] = {{"num_key_value_heads", v.kv_heads},
                     {"kv_replication_factor", vp.plan.KvReplicationFactor()},
                     {"max_rank_weight_bytes", std::max_element(vp.ranks.begin(), vp.ranks.end(),
                                                                [](const RankMemory& a, const RankMemory& b) {
                                                                  return a.weight_bytes < b.weight_bytes;
                                                                })->weight_bytes},
                     {"kv_tokens", k.kv_tokens},
                     {"max_sequences", k.max_sequences}};
    }
    out["capacity"] = cap;
  }

  if (f.Get("output") == "json") {
    std::printf("%s\n", out.dump().c_str());
    return absl::OkStatus();
  }
  std::printf("%s: %d query heads, %d KV heads of %d, TP=%lld, weights %s, KV %s\n", config_path.c_str(),
              c.num_q_heads, c.num_kv_heads, c.head_dim, static_cast<long long>(tp), dtype.c_str(), kv_dtype.c_str());
  std::printf("kv_replication_factor: %g\n\n", mp.plan.KvReplicationFactor());
  std::printf("%4s  %-10s  %-10s  %16s  %18s\n", "rank", "q heads", "kv heads", "weight bytes", "KV bytes/token");
  for (size_t r = 0; r < mp.ranks.size(); ++r) {
    const RankMemory& m = mp.ranks[r];
    std::printf("%4zu  %-10s  %-10s  %16lld  %18lld\n", r,
                absl::StrFormat("[%d, %d)", m.shard.q_head_begin, m.shard.q_head_end).c_str(),
                absl::StrFormat("[%d, %d)", m.shard.kv_head_begin, m.shard.kv_head_end).c_str(),
                static_cast<long long>(m.weight_bytes), static_cast<long long>(m.kv_bytes_per_token));
  }
  if (capacity) {
    const Json& cap = out["capacity"];
    std::printf("\nper device: %lld bytes x %g usable; sequences of %lld tokens that fit:\n",
                static_cast<long long>(cap["device_memory"].get<int64_t>()), cap["memory_utilization"].get<double>(),
                static_cast<long long>(cap["max_model_len"].get<int64_t>()));
    for (const char* v : {"as_configured", "mha", "mqa"}) {
      std::printf("  %-14s kv heads %3d  replication %5g  KV tokens %12lld  sequences %8lld\n", v,
                  cap[v]["num_key_value_heads"].get<int>(), cap[v]["kv_replication_factor"].get<double>(),
                  static_cast<long long>(cap[v]["kv_tokens"].get<int64_t>()),
                  static_cast<long long>(cap[v]["max_sequences"].get<int64_t>()));
    }
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) {
  gqa::Flags f("gqa-plan", "Shows how a model shards over --tp ranks and what fits in a device's memory.");
  f.Add("model", "", "model directory (reads its config.json)");
  f.Add("config", "", "a config.json file (instead of --model)");
  f.Add("tp", "1", "tensor-parallel degree");
  f.Add("dtype", "", "weight dtype: f32, bf16, f16, fp8 (default: the config's dtype, else bf16)");
  f.Add("kv-dtype", "", "KV-cache dtype (default: the weight dtype)");
  f.Add("device-memory", "", "bytes of memory per device; with --max-model-len, predicts capacity");
  f.Add("max-model-len", "", "sequence length for the capacity prediction");
  f.Add("memory-utilization", "0.9", "fraction of device memory the server may use");
  f.Add("output", "text", "text or json");
  gqa::ParseFlagsOrExit(f, argc, argv);
  absl::Status st = gqa::Run(f);
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-plan: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
