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

namespace gqa {
namespace {

// ---- prefix caching (engine/block_pool.h) ----

std::vector<int32_t> Range(int first, int n) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = first + i;
  return v;
}

TEST(BlockPoolTest, ALookupComparesTokensParentAndSaltNotOnlyTheHash) {
  BlockPool pool(4, 4, true);
  const std::vector<int32_t> x = Range(10, 8), y = Range(50, 8);
  const uint64_t hx0 = pool.ChainHash(pool.RootHash(""), x.data());
  const int a = pool.Allocate();
  pool.Register(a, hx0, -1, x.data(), "");
  // Another prompt presented under x's hash (as a collision would): a miss.
  EXPECT_TRUE(pool.TakeCached({hx0}, y, "", 1).empty());
  // The same tokens under another salt, with the hash of the first: a miss.
  EXPECT_TRUE(pool.TakeCached({hx0}, x, "tenant", 1).empty());
  const std::vector<int32_t> hit = pool.TakeCached({hx0}, x, "", 1);
  ASSERT_EQ(hit.size(), 1u);
  EXPECT_EQ(hit[0], a);
  pool.Release({a});
  pool.Release(hit);
  EXPECT_EQ(pool.num_free(), 4);
  EXPECT_EQ(pool.num_cached_free(), 1);
}

// A child cached after its parent's old content never follows the parent's
// new content, even when presented under its own hash.
TEST(BlockPoolTest, ChildrenOfAReusedBlockAreNotFound) {
  BlockPool pool(3, 4, true);
  const std::vector<int32_t> x = Range(10, 4), y = Range(20, 4), z = Range(30, 4);
  const uint64_t hx = pool.ChainHash(pool.RootHash(""), x.data()), hxy = pool.ChainHash(hx, y.data());
  const int p = pool.Allocate(), c = pool.Allocate();
  pool.Register(p, hx, -1, x.data(), "");
  pool.Register(c, hxy, p, y.data(), "");
  pool.Release({p});  // the parent is freed first, so it is evicted first
  pool.Release({c});
  EXPECT_EQ(pool.Allocate(), 2);  // never cached: taken before any cached block
  EXPECT_EQ(pool.Allocate(), p);  // the least recently freed cached block: x is forgotten
  const uint64_t hz = pool.ChainHash(pool.RootHash(""), z.data());
  pool.Register(p, hz, -1, z.data(), "");
  std::vector<int32_t> zy = z;
  zy.insert(zy.end(), y.begin(), y.end());
  const std::vector<int32_t> hit = pool.TakeCached({hz, hxy}, zy, "", 2);
  ASSERT_EQ(hit.size(), 1u) << "c followed x, not z";
  EXPECT_EQ(hit[0], p);
}

SchedulerConfig CachingConfig(int blocks, int block_size, int seqs, int budget) {
  SchedulerConfig c = Config(blocks, block_size, seqs, budget);
  c.enable_prefix_caching = true;
  return c;
}

TEST(SchedulerTest, ASecondRequestTakesTheCachedBlocksAndComputesTheRest) {
  Scheduler s(CachingConfig(16, 4, 8, 64));
  const std::vector<int32_t> prompt = Range(1, 10);
  ASSERT_OK(s.Add(1, prompt, 4));
  SchedulerOutput out = s.Schedule();
  Step(s, out);  // 10 tokens computed: blocks 0 and 1 full, cached
  ASSERT_OK(s.Add(2, prompt, 4));
  std::vector<int32_t> longer = prompt;
  longer.push_back(99);
  ASSERT_OK(s.Add(3, longer, 4));
  out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 3u);
  EXPECT_EQ(out.seqs[1].start, 8);   // two cached blocks
  EXPECT_EQ(out.seqs[1].count, 2);
  EXPECT_EQ(out.seqs[2].start, 8);
  EXPECT_EQ(out.seqs[2].count, 3);
  const SeqState* a = s.Find(1);
  const SeqState* b = s.Find(2);
  EXPECT_EQ(b->blocks[0], a->blocks[0]);  // shared
  EXPECT_EQ(b->blocks[1], a->blocks[1]);
  EXPECT_NE(b->blocks[2], a->blocks[2]);
  EXPECT_EQ(b->num_cached_tokens, 8);
  EXPECT_EQ(s.prefix_cache_queries(), 10 + 10 + 11);
  EXPECT_EQ(s.prefix_cache_hits(), 16);
  Step(s, out);
  for (int64_t id : {1, 2, 3}) ASSERT_TRUE(s.Remove(id));
  EXPECT_EQ(s.num_free_blocks(), 16);
}

TEST(SchedulerTest, AWhollyCachedPromptStillComputesItsLastToken) {
  Scheduler s(CachingConfig(16, 4, 8, 64));
  ASSERT_OK(s.Add(1, Range(1, 12), 2));
  Step(s, s.Schedule());
  ASSERT_TRUE(s.Remove(1));
  ASSERT_OK(s.Add(2, Range(1, 12), 2));
  const SchedulerOutput out = s.Schedule();
  ASSERT_EQ(out.seqs.size(), 1u);
  EXPECT_EQ(out.seqs[0].start, 8);  // blocks 0 and 1; block 2 holds the last token
  EXPECT_EQ(out.seqs[0].count, 4);
  EXPECT_TRUE(out.seqs[0].samples);
}

// Random traffic over shared prefixes with a shadow of the cache's contents:
// every slot remembers the tokens that led to the K/V written there (what a
// real cache holds is a function of them), and whenever a sequence runs, the
// slots of its cached and computed positions must hold its own prefix.
// Blocks run short, so sequences are preempted and cached blocks evicted.
TEST(SchedulerTest, PrefixCacheNeverHandsOutTheWrongKv) {
  for (int block_size : {1, 3, 4}) {
    std::mt19937 rng(41 + block_size);
    const int blocks = 24 / block_size + 3;
    Scheduler s(CachingConfig(blocks, block_size, 6, 9));
    std::vector<std::vector<int32_t>> slot_prefix(size_t(blocks) * block_size);
    const std::vector<std::vector<int32_t>> bases = {Range(1, 9), Range(1, 5), Range(40, 11)};
    std::vector<int64_t> live;
    int64_t next_id = 1;
    int64_t hits_seen = 0;
    for (int step = 0; step < 400; ++step) {
      if (live.size() < 6 && rng() % 2 == 0) {
        std::vector<int32_t> p = bases[rng() % bases.size()];
        const int extra = int(rng() % 4);
        for (int j = 0; j < extra; ++j) p.push_back(int32_t(rng() % 3));
        const std::string salt = rng() % 4 == 0 ? "other" : "";
        if (s.Add(next_id, p, 1 + int(rng() % 8), salt).ok()) live.push_back(next_id);
        ++next_id;
      }
      const SchedulerOutput out = s.Schedule();
      for (const ScheduledSeq& q : out.seqs) {
        const SeqState& seq = *q.seq;
        // What the step reads: positions [0, start + count) of this sequence.
        for (int p = 0; p < q.start; ++p) {
          const int slot = seq.blocks[p / block_size] * block_size + p % block_size;
          const std::vector<int32_t> want(seq.tokens.begin(), seq.tokens.begin() + p + 1);
          ASSERT_EQ(slot_prefix[slot], want) << "block size " << block_size << ", step " << step << ", seq "
                                             << seq.id << ", position " << p;
        }
      }
      for (const ScheduledSeq& q : out.seqs) {
        const SeqState& seq = *q.seq;
        for (int p = q.start; p < q.start + q.count; ++p) {
          const int slot = seq.blocks[p / block_size] * block_size + p % block_size;
          slot_prefix[slot].assign(seq.tokens.begin(), seq.tokens.begin() + p + 1);
        }
      }
      Step(s, out, int32_t(rng() % 3));
      for (size_t i = 0; i < live.size();) {
        const SeqState* q = s.Find(live[i]);
        if (q->num_generated() >= q->max_new_tokens || rng() % 40 == 0) {
          ASSERT_TRUE(s.Remove(live[i]));
          live.erase(live.begin() + i);
        } else {
          ++i;
        }
      }
      hits_seen = s.prefix_cache_hits();
    }
    for (int64_t id : live) ASSERT_TRUE(s.Remove(id));
    EXPECT_EQ(s.num_free_blocks(), blocks);
    EXPECT_GT(hits_seen, 0) << "block size " << block_size;
    EXPECT_GT(s.num_preemptions(), 0) << "block size " << block_size;
  }
}

}  // namespace
}  // namespace gqa
