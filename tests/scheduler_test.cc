// The scheduler's steps without a model: admission, token budget, block
// assignment, chunked prefill, preemption and refusal.
#include <random>
#include <set>

#include "engine/scheduler.h"
#include "tests/test_util.h"

namespace gqa {
namespace {

using ::testing::HasSubstr;

SchedulerConfig Config(int blocks, int block_size = 4, int seqs = 8, int budget = 64) {
  SchedulerConfig c;
  c.num_blocks = blocks;
  c.block_size = block_size;
  c.max_num_seqs = seqs;
  c.max_num_batched_tokens = budget;
  c.max_model_len = 1000;
  return c;
}

std::vector<int32_t> Prompt(int n) { return std::vector<int32_t>(n, 7); }

// Runs the scheduled step: commits it and appends a token to every sampling sequence.
void Step(Scheduler& s, const SchedulerOutput& out, int32_t token = 1) {
  s.Commit(out);
  for (const ScheduledSeq& q : out.seqs)
    if (q.samples) s.AppendToken(q.seq->id, token);
}

// No block is shared between sequences and each table covers its computed tokens.
void ExpectBlocksConsistent(const Scheduler& s, const std::vector<int64_t>& ids) {
  std::set<int32_t> used;
  int held = 0;
  for (int64_t id : ids) {
    const SeqState* q = s.Find(id);
    if (q == nullptr) continue;
    for (int32_t b : q->blocks) EXPECT_TRUE(used.insert(b).second) << "block " << b << " shared";
    held += int(q->blocks.size());
    EXPECT_GE(int(q->blocks.size()) * s.config().block_size, q->num_computed);
  }
  EXPECT_EQ(held + s.num_free_blocks(), s.config().num_blocks);
}

TEST(SchedulerTest, AdmitsPrefillsThenDecodes) {
  Scheduler s(Config(16));
  ASSERT_OK(s.Add(1, Prompt(5), 3));
  ASSERT_OK(s.Add(2, Prompt(2), 3));
  SchedulerOutput out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(out.seqs[0].start, 0);
  EXPECT_EQ(out.seqs[0].count, 5);
  EXPECT_TRUE(out.seqs[0].samples);
  EXPECT_EQ(out.seqs[0].seq->blocks.size(), 2u);  // 5 tokens in blocks of 4
  EXPECT_EQ(out.num_tokens, 7);
  Step(s, out);
  out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(out.seqs[0].start, 5);
  EXPECT_EQ(out.seqs[0].count, 1);
  EXPECT_EQ(out.seqs[1].start, 2);
  EXPECT_EQ(out.num_tokens, 2);
  ExpectBlocksConsistent(s, {1, 2});
}

TEST(SchedulerTest, MaxNumSeqsLimitsAdmission) {
  Scheduler s(Config(64, 4, /*seqs=*/2));
  for (int i = 1; i <= 4; ++i) ASSERT_OK(s.Add(i, Prompt(3), 2));
  SchedulerOutput out = s.Schedule();
  EXPECT_EQ(out.seqs.size(), 2u);
  EXPECT_EQ(s.num_waiting(), 2);
  Step(s, out);
  s.Remove(1);
  out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 2u);  // seq 2 decodes, seq 3 admitted
  EXPECT_EQ(out.seqs[1].seq->id, 3);
}

TEST(SchedulerTest, ChunkedPrefillKeepsDecodesGoing) {
  Scheduler s(Config(64, 4, 8, /*budget=*/6));
  ASSERT_OK(s.Add(1, Prompt(3), 10));
  Step(s, s.Schedule());  // seq 1 prefilled
  ASSERT_OK(s.Add(2, Prompt(20), 2));
  std::vector<int> chunks;
  for (int step = 0; step < 6; ++step) {
    SchedulerOutput out = s.Schedule();
    ASSERT_GE(out.seqs.size(), 1u);
    EXPECT_EQ(out.seqs[0].seq->id, 1) << "the decode runs every step";
    EXPECT_EQ(out.seqs[0].count, 1);
    EXPECT_LE(out.num_tokens, 6);
    for (const ScheduledSeq& q : out.seqs) {
      if (q.seq->id == 2 && q.seq->num_generated() == 0) {
        chunks.push_back(q.count);
        EXPECT_EQ(q.samples, q.start + q.count == 20);
      }
    }
    Step(s, out);
  }
  EXPECT_EQ(chunks, (std::vector<int>{5, 5, 5, 5}));
  EXPECT_EQ(s.Find(2)->num_generated(), 3);  // sampled after the last chunk, then two decodes
}

TEST(SchedulerTest, PreemptsNewestWhenBlocksRunOut) {
  // 4 blocks of 2 tokens; two sequences of 3-token prompts take 2 blocks each.
  Scheduler s(Config(4, 2));
  ASSERT_OK(s.Add(1, Prompt(3), 4));
  ASSERT_OK(s.Add(2, Prompt(3), 4));
  Step(s, s.Schedule());  // both prefilled: 4 tokens computed of 3? (3 each, 2 blocks each)
  EXPECT_EQ(s.num_free_blocks(), 0);
  // Next decode: positions 3 need no new block (slot 3 is in block 1); then position 4 needs a third block.
  Step(s, s.Schedule());
  SchedulerOutput out = s.Schedule();
  ASSERT_EQ(out.preempted, (std::vector<int64_t>{2}));
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].seq->id, 1);
  const SeqState* two = s.Find(2);
  EXPECT_EQ(two->num_computed, 0);
  EXPECT_TRUE(two->blocks.empty());
  EXPECT_EQ(two->num_generated(), 2);  // its tokens are kept and recomputed later
  EXPECT_EQ(s.num_preemptions(), 1);
  ExpectBlocksConsistent(s, {1, 2});
  Step(s, out);
  // Once 1 finishes, 2 is readmitted with prompt + generated tokens as its prefill.
  s.Remove(1);
  out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].seq->id, 2);
  EXPECT_EQ(out.seqs[0].start, 0);
  EXPECT_EQ(out.seqs[0].count, 5);
  EXPECT_TRUE(out.seqs[0].samples);
}

TEST(SchedulerTest, RefusesWhatCanNeverFit) {
  Scheduler s(Config(4, 4));  // 16 token slots
  EXPECT_THAT(std::string(s.Add(1, Prompt(10), 8).message()), HasSubstr("KV blocks"));
  ASSERT_OK(s.Add(2, Prompt(10), 7));  // 16 slots: the last token needs none
  EXPECT_THAT(std::string(s.Add(3, {}, 4).message()), HasSubstr("empty"));
  EXPECT_THAT(std::string(s.Add(4, Prompt(3), 0).message()), HasSubstr("max_tokens"));
  EXPECT_THAT(std::string(s.Add(5, Prompt(990), 20).message()), HasSubstr("maximum model length"));
  EXPECT_FALSE(s.Add(2, Prompt(1), 1).ok());  // duplicate id
  EXPECT_EQ(s.num_waiting(), 1);
}

TEST(SchedulerTest, RemoveFreesBlocksInAnyState) {
  Scheduler s(Config(32, 4, 8, 8));
  ASSERT_OK(s.Add(1, Prompt(20), 4));  // prefilling in chunks of 8
  ASSERT_OK(s.Add(2, Prompt(2), 4));
  Step(s, s.Schedule());
  ASSERT_TRUE(s.Find(1)->prefilling());
  EXPECT_TRUE(s.Remove(1));  // mid-prefill
  Step(s, s.Schedule());
  EXPECT_TRUE(s.Remove(2));  // mid-decode
  EXPECT_FALSE(s.Remove(2));
  EXPECT_EQ(s.num_free_blocks(), 32);
  EXPECT_EQ(s.num_running() + s.num_waiting(), 0);
}

// A long random workload: invariants hold at every step and everything ends.
TEST(SchedulerTest, RandomWorkloadKeepsInvariants) {
  std::mt19937 rng(5);
  Scheduler s(Config(24, 4, 6, 16));
  std::vector<int64_t> ids;
  int64_t next = 1, finished = 0;
  for (int step = 0; step < 3000 && finished < 200; ++step) {
    if (next <= 200 && rng() % 2) {
      const int len = 1 + rng() % 30, gen = 1 + rng() % 20;
      if (s.Add(next, Prompt(len), gen).ok()) ids.push_back(next);
      ++next;
    }
    SchedulerOutput out = s.Schedule();
    EXPECT_LE(out.num_tokens, 16);
    EXPECT_LE(s.num_running(), 6);
    Step(s, out, int32_t(rng() % 50));
    for (const ScheduledSeq& q : out.seqs) {
      if (q.samples && q.seq->num_generated() >= q.seq->max_new_tokens) {
        s.Remove(q.seq->id);
        ++finished;
      }
    }
    ExpectBlocksConsistent(s, ids);
  }
  EXPECT_EQ(s.num_running() + s.num_waiting(), 0);
  EXPECT_EQ(s.num_free_blocks(), 24);
  EXPECT_GT(s.num_preemptions(), 0);
}

}  // namespace
}  // namespace gqa
