// gqa-plan's figures against hand computation for Llama-3-8B, Llama-3-70B and
// Qwen2-7B (BF16 weights and KV; norms and biases are held in f32).
#include <cstdio>
#include <memory>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/memory_plan.h"

namespace gqa {
namespace {

MemoryPlan Plan(const std::string& config, int tp) {
  auto c = LoadModelConfig(testing::FixturePath("configs/" + config));
  EXPECT_TRUE(c.ok()) << c.status();
  auto mp = PlanMemory(*c, tp, 2, 2);
  EXPECT_TRUE(mp.ok()) << mp.status();
  return *mp;
}

constexpr int64_t k80GiB = 85899345920;

TEST(PlanTest, Llama3_8B) {
  // TP=1. Matrices: embed + lm_head 2 x 128256 x 4096, and per layer
  // q 4096x4096, k and v 1024x4096, o 4096x4096, gate/up/down 3 x 14336x4096:
  // 8,029,995,008 parameters x 2 bytes; norms (32 x 2 + 1) x 4096 x 4 bytes.
  MemoryPlan p1 = Plan("llama3_8b.json", 1);
  EXPECT_EQ(p1.ranks[0].weight_bytes, int64_t{16059990016} + 1064960);
  // KV: 2 (K, V) x 32 layers x 8 heads x 128 x 2 bytes.
  EXPECT_EQ(p1.ranks[0].kv_bytes_per_token, 131072);
  // 80 GiB x 0.9 = 77,309,411,328 bytes; minus weights 61,248,356,352; / 131072.
  const Capacity cap = PlanCapacity(p1, k80GiB, 0.9, 8192);
  EXPECT_EQ(cap.kv_tokens, 467287);
  EXPECT_EQ(cap.max_sequences, 57);

  // TP=8: 4 query heads (512 rows), 1 KV head (128), MLP 1792, vocab 16032.
  // Layer: 768 x 4096 x 2 + 4096 x 512 x 2 + 3 x 1792 x 4096 x 2 + 2 x 4096 x 4
  //      = 54,558,720; x 32 = 1,745,879,040; vocab 2 x 16032 x 4096 x 2 =
  //      262,668,288; final norm 16,384.
  MemoryPlan p8 = Plan("llama3_8b.json", 8);
  EXPECT_EQ(p8.plan.KvReplicationFactor(), 1.0);
  for (const RankMemory& r : p8.ranks) {
    EXPECT_EQ(r.weight_bytes, 2008563712);
    EXPECT_EQ(r.kv_bytes_per_token, 16384);  // 2 x 32 x 128 x 2
    EXPECT_EQ(r.shard.num_q_heads(), 4);
    EXPECT_EQ(r.shard.num_kv_heads(), 1);
  }
}

TEST(PlanTest, Llama3_70B) {
  // TP=8: 8 query heads (1024 rows), 1 KV head, MLP 3584, vocab 16032, hidden 8192.
  // Layer: 1280 x 8192 x 2 + 8192 x 1024 x 2 + 3 x 3584 x 8192 x 2 + 2 x 8192 x 4
  //      = 213,975,040; x 80 = 17,118,003,200; vocab 2 x 16032 x 8192 x 2 =
  //      525,336,576; final norm 32,768.
  MemoryPlan p = Plan("llama3_70b.json", 8);
  EXPECT_EQ(p.plan.KvReplicationFactor(), 1.0);
  for (const RankMemory& r : p.ranks) {
    EXPECT_EQ(r.weight_bytes, 17643372544);
    EXPECT_EQ(r.kv_bytes_per_token, 40960);  // 2 x 80 x 128 x 2
  }
  // TP=1 KV per token: 2 x 80 x 8 x 128 x 2.
  EXPECT_EQ(Plan("llama3_70b.json", 1).ranks[0].kv_bytes_per_token, 327680);
}

TEST(PlanTest, Qwen2_7B_Uneven) {
  // TP=8: 28 heads in groups of 7 -> ranks alternate 4 and 3 query heads,
  // each holding one KV head: 8 held / 4 = replication 2.
  MemoryPlan p = Plan("qwen2_7b.json", 8);
  EXPECT_EQ(p.plan.KvReplicationFactor(), 2.0);
  // Rank 0: q 512 rows, kv 128, MLP 2368, vocab 19008, hidden 3584, q/k/v biases.
  // Layer: 768 x 3584 x 2 + 3584 x 512 x 2 + 3 x 2368 x 3584 x 2 + 2 x 3584 x 4
  //      + 768 x 4 = 60,128,256; x 28 = 1,683,591,168; vocab 2 x 19008 x 3584 x 2
  //      = 272,498,688; final norm 14,336.
  EXPECT_EQ(p.ranks[0].weight_bytes, 1956104192);
  // Rank 1: q 384 rows: 640 x 7168 + 3584 x 384 x 2 + 50,921,472 + 28,672 + 640 x 4
  //      = 58,292,736; x 28 = 1,632,196,608; + 272,498,688 + 14,336.
  EXPECT_EQ(p.ranks[1].weight_bytes, 1904709632);
  EXPECT_EQ(p.ranks[0].kv_bytes_per_token, 14336);  // 2 x 28 x 128 x 2
  // 77,309,411,328 - 1,956,104,192 = 75,353,307,136 bytes / 14336 per token.
  const Capacity cap = PlanCapacity(p, k80GiB, 0.9, 8192);
  EXPECT_EQ(cap.kv_tokens, 5256229);
  EXPECT_EQ(cap.max_sequences, 641);
  // TP=1: all 4 KV heads: 2 x 28 x 4 x 128 x 2.
  EXPECT_EQ(Plan("qwen2_7b.json", 1).ranks[0].kv_bytes_per_token, 57344);
}

// The program's JSON contract: a top-level kv_replication_factor and a ranks array.
TEST(PlanTest, ProgramJson) {
  const std::string cmd = std::string(GQA_BIN_DIR) + "/gqa-plan --config " + testing::FixturePath("configs/qwen2_7b.json") +
                          " --tp 8 --device-memory 85899345920 --max-model-len 8192 --output json";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe.get())) out.append(buf, n);
  const nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["kv_replication_factor"], 2.0);
  ASSERT_EQ(j["ranks"].size(), 8u);
  EXPECT_EQ(j["ranks"][1]["q_heads"], nlohmann::json({4, 7}));
  EXPECT_EQ(j["ranks"][1]["kv_heads"], nlohmann::json({0, 1}));
  EXPECT_EQ(j["ranks"][0]["weight_bytes"], 1956104192);
  EXPECT_EQ(j["capacity"]["as_configured"]["max_sequences"], 641);
  EXPECT_EQ(j["capacity"]["mha"]["num_key_value_heads"], 28);
  EXPECT_EQ(j["capacity"]["mqa"]["kv_replication_factor"], 8.0);
}

}  // namespace
}  // namespace gqa
