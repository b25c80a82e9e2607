// Decode steps as CUDA graphs, on the interpreter: two executors run the
// same steps, one with graphs and one without, and every step's logits must
// be bitwise equal (so the greedy tokens are too). The batch grows and
// shrinks across buckets (1, 2, 4, 8, with padded tokens), a mixed step
// (prefill + decode) runs eagerly in between, and on the head_dim-64 model
// a long context grows past a split boundary (768 keys: 2 -> 3 splits)
// while the graphs captured before it are replayed, and steps without it
// have narrower block tables (graphs per table width).
#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tests/cuda/mini_test.h"
#include "worker/executor.h"

namespace gqa {
namespace {

struct Seq {
  std::vector<int32_t> tokens;  // prompt, then generated tokens
  int done = 0;                 // tokens whose K/V are cached
};

// Builds steps over sequences with fixed KV blocks (sequence s owns blocks
// [s * per_seq, (s + 1) * per_seq)), as the scheduler would hand them over.
class Steps {
 public:
  Steps(int block_size, int blocks_per_seq) : bs_(block_size), per_seq_(blocks_per_seq) {}

  // One entry per sequence of the step: (sequence, tokens to feed).
  StepBatch Make(const std::vector<Seq>& seqs, const std::vector<std::pair<int, int>>& parts) const {
    StepBatch b;
    int widest = 1;
    for (auto [s, count] : parts) widest = std::max(widest, (seqs[s].done + count + bs_ - 1) / bs_);
    b.max_blocks_per_seq = widest;
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto [s, count] = parts[i];
      for (int j = 0; j < widest; ++j) {
        b.block_tables.push_back(j < (seqs[s].done + count + bs_ - 1) / bs_ ? s * per_seq_ + j : -1);
      }
      for (int k = 0; k < count; ++k) {
        const int pos = seqs[s].done + k;
        b.token_ids.push_back(seqs[s].tokens[pos]);
        b.positions.push_back(pos);
        b.token_seq.push_back(int32_t(i));
        b.slot_mapping.push_back((s * per_seq_ + pos / bs_) * bs_ + pos % bs_);
      }
      b.logits_rows.push_back(b.num_tokens() - 1);
    }
    return b;
  }

 private:
  int bs_, per_seq_;
};

struct Case {
  std::string model;
  int tp = 1;
  DType kv_dtype = DType::kF32;
  std::vector<int> prompt_lengths;  // sequence 0 first
  int decode_steps = 0;
};

std::unique_ptr<Executor> Open(const Case& c, bool graphs, int blocks) {
  ExecutorOptions eo;
  eo.device = DeviceKind::kCudaSim;
  eo.tp = c.tp;
  eo.threads_per_rank = 1;
  eo.block_size = 16;
  eo.num_kv_blocks = blocks;
  eo.kv_dtype = c.kv_dtype;
  eo.max_step_tokens = 256;
  eo.max_step_seqs = 8;
  eo.cuda_graphs = graphs;
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Open(c.model, eo);
  if (!ex.ok()) {
    mini_test::Fail(__FILE__, __LINE__, std::string(ex.status().message()));
    throw mini_test::Failed{};
  }
  return std::move(*ex);
}

// Runs the step on both executors; the logits must be bitwise equal.
// Appends the greedy token of every part and advances the sequences.
void RunBoth(Executor& graphs, Executor& eager, const StepBatch& b, std::vector<Seq>& seqs,
             const std::vector<std::pair<int, int>>& parts, const std::string& what) {
  StepSampling sampling;
  sampling.rows.resize(b.logits_rows.size());  // greedy
  std::vector<SampleOutput> out_g, out_e;
  std::vector<float> logits_g, logits_e;
  REQUIRE_OK(graphs.Step(b, sampling, &out_g, &logits_g));
  REQUIRE_OK(eager.Step(b, sampling, &out_e, &logits_e));
  REQUIRE(logits_g.size() == logits_e.size() && out_g.size() == parts.size() && out_e.size() == parts.size());
  CHECK_MSG(std::memcmp(logits_g.data(), logits_e.data(), logits_g.size() * sizeof(float)) == 0,
            what << ": logits differ with graphs");
  for (size_t i = 0; i < parts.size(); ++i) {
    CHECK_MSG(out_g[i].token == out_e[i].token, what << ": token of part " << i);
    Seq& s = seqs[parts[i].first];
    s.done += parts[i].second;
    if (s.done == int(s.tokens.size())) s.tokens.push_back(out_e[i].token);
  }
}

void RunCase(const Case& c) {
  const int per_seq = 64;  // blocks of 16 tokens: 1024 positions
  const int num_seqs = int(c.prompt_lengths.size());
  std::unique_ptr<Executor> graphs = Open(c, true, per_seq * num_seqs);
  std::unique_ptr<Executor> eager = Open(c, false, per_seq * num_seqs);
  const int vocab = graphs->config().vocab_size;
  std::vector<Seq> seqs(num_seqs);
  for (int s = 0; s < num_seqs; ++s) {
    for (int i = 0; i < c.prompt_lengths[s]; ++i) seqs[s].tokens.push_back((s * 131 + i * 37 + 5) % vocab);
  }
  Steps steps(16, per_seq);
  // Prefill every sequence but the last, in chunks of at most 256 tokens.
  for (int s = 0; s + 1 < num_seqs; ++s) {
    while (seqs[s].done < c.prompt_lengths[s]) {
      const int count = std::min(256, c.prompt_lengths[s] - seqs[s].done);
      const std::vector<std::pair<int, int>> parts = {{s, count}};
      RunBoth(*graphs, *eager, steps.Make(seqs, parts), seqs, parts, "prefill");
    }
  }
  // Decode: the batch grows and shrinks across buckets (sizes 1..7 of the
  // first num_seqs - 1 sequences). Every fifth step leaves sequence 0 out,
  // so that the block tables are narrower (another graph on the long model).
  const int sizes[] = {1, 3, 2, 5, 1, 4, 7, 2, 6, 3, 1, 5};
  for (int step = 0; step < c.decode_steps; ++step) {
    std::vector<std::pair<int, int>> parts;
    const int first = step % 5 == 4 ? 1 : 0;
    const int k = std::min(num_seqs - 1 - first, sizes[step % 12]);
    for (int s = first; s < first + k; ++s) parts.push_back({s, 1});
    if (step == c.decode_steps / 2) {
      // A mixed step (the last sequence's prompt beside decode tokens) runs
      // op by op; the graphs are replayed again afterwards.
      const int last = num_seqs - 1;
      parts.push_back({last, int(seqs[last].tokens.size())});
    }
    RunBoth(*graphs, *eager, steps.Make(seqs, parts), seqs, parts, "decode step " + std::to_string(step));
  }
  for (int r = 0; r < c.tp; ++r) {
    const Model::GraphStats& g = graphs->model(r).graph_stats();
    const Model::GraphStats& e = eager->model(r).graph_stats();
    CHECK_MSG(g.captured >= 4 && g.replayed >= c.decode_steps / 2 && g.failed_captures == 0,
              "rank " << r << ": " << g.captured << " captured, " << g.replayed << " replayed, " << g.failed_captures
                      << " failed");
    CHECK(e.captured == 0 && e.replayed == 0);
  }
  std::printf("  %s tp %d: sequence 0 at %d tokens, %lld graphs, %lld replayed steps\n", c.model.c_str(), c.tp,
              seqs[0].done, (long long)graphs->model(0).graph_stats().captured,
              (long long)graphs->model(0).graph_stats().replayed);
}

TEST_CASE(GoldenModelGraphsEqualEagerTp1) {
  RunCase({GQA_GOLDEN_DIR "/llama_bf16", 1, DType::kF32, {9, 5, 17, 3, 11, 7, 2, 6}, 30});
}
TEST_CASE(GoldenModelGraphsEqualEagerTp2) {
  RunCase({GQA_GOLDEN_DIR "/llama_gqa", 2, DType::kF32, {9, 5, 17, 3, 11, 7, 2, 6}, 30});
}
// Sequence 0 starts at 760 tokens and decodes past 768 keys, where its
// context splits three ways instead of two, while graphs captured before
// are replayed: the split count must come from device memory.
TEST_CASE(SpecialisedAttentionGraphsEqualEagerAcrossSplitsTp1) {
  RunCase({GQA_LLAMA_HD64_DIR, 1, DType::kF32, {760, 5, 17, 3, 11, 7, 2, 6}, 24});
}
TEST_CASE(SpecialisedAttentionGraphsEqualEagerAcrossSplitsTp2Bf16Kv) {
  RunCase({GQA_LLAMA_HD64_DIR, 2, DType::kBF16, {760, 5, 17, 3, 11, 7, 2, 6}, 24});
}

}  // namespace
}  // namespace gqa

int main(int argc, char** argv) { return mini_test::RunAll(argc, argv); }
