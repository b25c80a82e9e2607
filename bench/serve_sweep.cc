// gqa-bench serve-sweep: for each model variant (MHA, GQA-8 and MQA of one
// shape with random weights, or model directories given), start gqa-server
// with one KV-cache budget, run the serve levels against it, stop it; then
// one table per variant, JSON / CSV with every variant, and an overlay plot
// marking where each variant's KV cache became full.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/common.h"
#include "kernels/dtype.h"
#include "bench/serve_bench.h"
#include "bench/server_process.h"
#include "worker/synthetic_model.h"

namespace gqa {

namespace {

namespace fs = std::filesystem;

std::string SelfDir() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : self.parent_path().string();
}

// The shape of the synthetic variants: the shape flags when given, else a
// small model that a 2-core machine sweeps in minutes.
absl::StatusOr<SyntheticModelSpec> SweepShape(const Flags& f) {
  SyntheticModelSpec s;
  s.layers = 4;
  s.hidden = 512;
  s.heads = 32;
  s.head_dim = 16;
  s.intermediate = 1376;
  s.vocab = 4096;
  s.dtype = DType::kBF16;
  s.max_position = 4096;
  s.seed = 1;
  struct IntFlag { const char* name; int* dst; };
  for (IntFlag fl : {IntFlag{"layers", &s.layers}, IntFlag{"hidden", &s.hidden}, IntFlag{"heads", &s.heads},
                     IntFlag{"head-dim", &s.head_dim}, IntFlag{"intermediate", &s.intermediate},
                     IntFlag{"vocab", &s.vocab}}) {
    if (!f.Has(fl.name)) continue;
    ASSIGN_OR_RETURN(int64_t v, f.GetInt(fl.name));
    *fl.dst = static_cast<int>(v);
  }
  if (f.Has("dtype")) {
    const std::string d = f.Get("dtype");
    if (d != "f32" && d != "f16" && d != "bf16") return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16");
    s.dtype = d == "f32" ? DType::kF32 : d == "f16" ? DType::kF16 : DType::kBF16;
  }
  return s;
}

struct Variant {
  std::string name;
  std::string model_dir;
};

// The first level at which the server reported its KV cache full:
// preemptions, or requests waiting while at least 90% of the blocks were in
// use (waiting alone also happens briefly while a step's token budget is
// spent on other prompts).
int KvFullIndex(const std::vector<LevelResult>& levels) {
  for (size_t i = 0; i < levels.size(); ++i) {
    const std::optional<ServerSamples>& s = levels[i].server;
    if (!s) continue;
    if (s->preemptions > 0 || (s->waiting_max > 0 && s->kv_usage_max >= 0.9)) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace

absl::Status RunServeSweep(const Flags& f) {
  LoadOptions o;
  RETURN_IF_ERROR(LoadOptionsFromFlags(f, &o));
  WorkloadOptions wo;
  RETURN_IF_ERROR(WorkloadOptionsFromFlags(f, &wo));
  std::string work = f.Get("work-dir");
  if (work.empty()) work = absl::StrCat("/tmp/gqa-serve-sweep-", getpid());
  fs::create_directories(work);
  const std::string bin = f.Get("server-bin").empty() ? SelfDir() + "/gqa-server" : f.Get("server-bin");
  if (!fs::exists(bin)) return absl::NotFoundError(absl::StrCat("no gqa-server at ", bin, " (--server-bin)"));

  std::vector<Variant> variants;
  if (!f.Get("models").empty()) {
    for (absl::string_view d : absl::StrSplit(f.Get("models"), ',', absl::SkipWhitespace())) {
      variants.push_back({fs::path(std::string(d)).filename().string(), std::string(d)});
    }
  } else {
    ASSIGN_OR_RETURN(SyntheticModelSpec shape, SweepShape(f));
    std::vector<int> kv_heads = {shape.heads, 8, 1};
    if (!f.Get("sweep-kv-heads").empty()) {
      ASSIGN_OR_RETURN(kv_heads, f.GetIntList("sweep-kv-heads"));
    }
    for (int kv : kv_heads) {
      if (kv < 1 || shape.heads % kv != 0) {
        return absl::InvalidArgumentError(absl::StrCat("--sweep-kv-heads: ", kv, " does not divide ", shape.heads, " heads"));
      }
      SyntheticModelSpec s = shape;
      s.kv_heads = kv;
      const std::string name = kv == shape.heads ? "MHA" : kv == 1 ? "MQA" : absl::StrCat("GQA-", kv);
      const std::string dir = absl::StrCat(work, "/model-kv", kv);
      if (!fs::exists(dir + "/config.json")) {
        std::fprintf(stderr, "writing %s (%d layers, hidden %d, %d heads, %d KV heads, head_dim %d, vocab %d)\n",
                     dir.c_str(), s.layers, s.hidden, s.heads, kv, s.ResolvedHeadDim(), s.vocab);
        RETURN_IF_ERROR(WriteSyntheticModel(s, dir));
      }
      variants.push_back({name, dir});
    }
    // Random ids must stay inside the vocabulary.
    if (!f.Has("vocab-size")) wo.vocab_size = shape.vocab;
  }
  ASSIGN_OR_RETURN(Workload w, Workload::Create(wo));

  std::vector<std::string> extra;
  for (absl::string_view a : absl::StrSplit(f.Get("server-args"), ' ', absl::SkipWhitespace())) extra.emplace_back(a);
  std::vector<PlotSeries> series;
  nlohmann::json j = {{"config", LoadConfigJson(f)}, {"kv_cache_memory", f.Get("kv-cache-memory")},
                      {"server_args", f.Get("server-args")}, {"variants", nlohmann::json::array()}};
  std::string csv = CsvHeader();
  for (const Variant& v : variants) {
    std::vector<std::string> args = {"--model", v.model_dir, "--kv-cache-memory", f.Get("kv-cache-memory"),
                                     "--seed", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    ServerProcess server;
    const std::string log = absl::StrCat(work, "/server-", v.name, ".log");
    std::fprintf(stderr, "%s: starting gqa-server (log %s)\n", v.name.c_str(), log.c_str());
    RETURN_IF_ERROR(server.Start(bin, args, log));
    Endpoint e;
    e.host = "127.0.0.1";
    e.port = server.http_port();
    LoadOptions vo = o;
    vo.metrics_host = e.host;
    vo.metrics_port = e.port;
    ASSIGN_OR_RETURN(const RequestOptions ro, RequestOptionsFromFlags(f));
  std::unique_ptr<ClientFactory> clients = MakeClientFactory(e, ro);
    std::vector<LevelResult> levels = RunLoad(vo, *clients, w, v.name);
    server.Stop();
    const int full = KvFullIndex(levels);
    std::printf("== %s (%s)%s\n%s\n", v.name.c_str(), v.model_dir.c_str(),
                full >= 0 ? absl::StrCat(": KV cache full from level ", full + 1).c_str() : "",
                TableText(levels).c_str());
    nlohmann::json jv = {{"name", v.name}, {"model", v.model_dir}, {"levels", nlohmann::json::array()}};
    jv["kv_full_at"] = nullptr;
    if (full >= 0) jv["kv_full_at"] = {{levels[full].kind, levels[full].value}};
    for (const LevelResult& r : levels) {
      jv["levels"].push_back(LevelJson(r));
      csv += CsvRow(r, v.name);
    }
    j["variants"].push_back(jv);
    series.push_back({v.name, std::move(levels), full});
  }
  if (!f.Get("output-json").empty()) RETURN_IF_ERROR(WriteFile(f.Get("output-json"), j.dump(2) + "\n"));
  if (!f.Get("output-csv").empty()) RETURN_IF_ERROR(WriteFile(f.Get("output-csv"), csv));
  if (!f.Get("plot").empty()) {
    int64_t budget = 0;
    std::string budget_text = absl::StrCat(f.Get("kv-cache-memory"), " bytes");
    if (absl::SimpleAtoi(f.Get("kv-cache-memory"), &budget) && budget > 0 && budget % (1 << 20) == 0) {
      budget_text = absl::StrCat(budget >> 20, " MiB");
    }
    RETURN_IF_ERROR(PlotPng(series,
                            absl::StrCat("gqa-bench serve-sweep: ", f.Get("input-len"), " prompt + ", f.Get("output-len"),
                                         " output tokens, one KV-cache budget of ", budget_text,
                                         " (vertical dashes: that variant's KV cache full)"),
                            f.Get("plot")));
  }
  return absl::OkStatus();
}

}  // namespace gqa
