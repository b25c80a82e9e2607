// The shard plan, exhaustively over H, K, T: ownership, held KV heads,
// balance and minimal replication among balanced splits.
#include <functional>

#include "tests/test_util.h"
#include "worker/shard_plan.h"

namespace gqa {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// The fewest KV heads held by any split of H heads into T contiguous ranges
// of floor(H/T) or ceil(H/T) heads, by brute force over where the larger
// ranges go.
int BruteForceMinHeld(int H, int K, int T) {
  const int g = H / K, lo = H / T, extra = H % T;
  int best = 1 << 30;
  std::function<void(int, int, int, int)> go = [&](int r, int big_left, int start, int held) {
    if (r == T) {
      if (big_left == 0) best = std::min(best, held);
      return;
    }
    if (big_left > 0) go(r + 1, big_left - 1, start + lo + 1, held + KvHeadsTouched(start, start + lo + 1, g));
    if (T - r > big_left) go(r + 1, big_left, start + lo, held + KvHeadsTouched(start, start + lo, g));
  };
  go(0, extra, 0, 0);
  return best;
}

TEST(ShardPlanTest, ExhaustiveUpTo64HeadsAnd8Ranks) {
  int checked = 0;
  for (int H = 1; H <= 64; ++H) {
    for (int K = 1; K <= H; ++K) {
      if (H % K != 0) continue;
      const int g = H / K;
      for (int T = 1; T <= std::min(8, H); ++T) {
        const int inter = 37 * T + 5, vocab = 101 + T;
        auto plan = MakeShardPlan(H, K, T, inter, vocab);
        ASSERT_TRUE(plan.ok()) << plan.status();
        ASSERT_EQ(int(plan->ranks.size()), T);
        std::vector<int> owner(H, -1);
        int q_next = 0, mlp_next = 0, vocab_next = 0;
        for (int r = 0; r < T; ++r) {
          const RankShard& s = plan->ranks[r];
          // Contiguous, in order, balanced.
          ASSERT_EQ(s.q_head_begin, q_next);
          ASSERT_TRUE(s.num_q_heads() == H / T || s.num_q_heads() == (H + T - 1) / T) << H << " " << K << " " << T;
          for (int q = s.q_head_begin; q < s.q_head_end; ++q) {
            ASSERT_EQ(owner[q], -1);
            owner[q] = r;
          }
          q_next = s.q_head_end;
          // Exactly the KV heads its query heads read.
          std::vector<bool> read(K, false);
          for (int q = s.q_head_begin; q < s.q_head_end; ++q) read[q / g] = true;
          for (int k = 0; k < K; ++k) {
            ASSERT_EQ(read[k], k >= s.kv_head_begin && k < s.kv_head_end) << H << " " << K << " " << T << " rank " << r;
          }
          ASSERT_EQ(s.mlp_begin, mlp_next);
          ASSERT_GE(s.mlp_size(), inter / T);
          mlp_next = s.mlp_end;
          ASSERT_EQ(s.vocab_begin, vocab_next);
          ASSERT_GE(s.vocab_size(), vocab / T);
          vocab_next = s.vocab_end;
        }
        ASSERT_EQ(q_next, H);
        ASSERT_EQ(mlp_next, inter);
        ASSERT_EQ(vocab_next, vocab);
        ASSERT_EQ(plan->KvHeadsHeld(), BruteForceMinHeld(H, K, T)) << H << " " << K << " " << T;
        if (K % T == 0) ASSERT_EQ(plan->KvReplicationFactor(), 1.0);
        if (T % K == 0 && H % T == 0) ASSERT_EQ(plan->KvReplicationFactor(), double(T) / K);
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 1000);
}

TEST(ShardPlanTest, NamedLayouts) {
  // Qwen2-7B on 8 devices: 28 query heads in 4 groups of 7.
  auto qwen = MakeShardPlan(28, 4, 8, 18944, 152064);
  ASSERT_TRUE(qwen.ok());
  EXPECT_EQ(qwen->KvHeadsHeld(), 8);
  EXPECT_EQ(qwen->KvReplicationFactor(), 2.0);
  for (const RankShard& s : qwen->ranks) EXPECT_EQ(s.num_kv_heads(), 1);
  // Llama-2-70B at TP=16: 64 heads, 8 groups: each KV head on 2 ranks.
  auto llama70 = MakeShardPlan(64, 8, 16, 28672, 32000);
  ASSERT_TRUE(llama70.ok());
  EXPECT_EQ(llama70->KvReplicationFactor(), 2.0);
  // MQA at TP=8: the single KV head is on every rank.
  auto mqa = MakeShardPlan(32, 1, 8, 1024, 1000);
  ASSERT_TRUE(mqa.ok());
  EXPECT_EQ(mqa->KvReplicationFactor(), 8.0);
  // Llama-3-8B at TP=8: partitioned.
  auto llama8 = MakeShardPlan(32, 8, 8, 14336, 128256);
  ASSERT_TRUE(llama8.ok());
  EXPECT_EQ(llama8->KvReplicationFactor(), 1.0);
}

TEST(ShardPlanTest, InvalidLayoutsNameTheNumbers) {
  auto too_many = MakeShardPlan(4, 2, 8, 100, 100);
  ASSERT_FALSE(too_many.ok());
  EXPECT_THAT(std::string(too_many.status().message()), AllOf(HasSubstr("H=4"), HasSubstr("K=2"), HasSubstr("T=8")));
  auto bad_groups = MakeShardPlan(6, 4, 2, 100, 100);
  ASSERT_FALSE(bad_groups.ok());
  EXPECT_THAT(std::string(bad_groups.status().message()), AllOf(HasSubstr("H=6"), HasSubstr("K=4"), HasSubstr("T=2")));
  EXPECT_FALSE(MakeShardPlan(8, 2, 0, 100, 100).ok());
  auto small_mlp = MakeShardPlan(8, 2, 4, 3, 100);
  ASSERT_FALSE(small_mlp.ok());
  EXPECT_THAT(std::string(small_mlp.status().message()), AllOf(HasSubstr("3"), HasSubstr("T=4")));
}

}  // namespace
}  // namespace gqa
