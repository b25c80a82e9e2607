// The MPI step message (worker/step_wire): what rank 0 encodes, every other
// rank decodes to the same step; bytes that are not one message are refused.
#include <cstring>

#include "tests/test_util.h"
#include "worker/step_wire.h"

namespace gqa {
namespace {

using ::testing::HasSubstr;

StepBatch TwoSequences() {
  StepBatch b;
  b.token_ids = {11, 12, 13, 7};
  b.positions = {0, 1, 2, 40};
  b.token_seq = {0, 0, 0, 1};
  b.slot_mapping = {32, 33, 34, 88};
  b.max_blocks_per_seq = 3;
  b.block_tables = {2, 9, 4, 5, 1, 0};
  b.logits_rows = {2, 3};
  return b;
}

StepSampling TwoRows() {
  StepSampling s;
  s.rows.resize(2);
  s.rows[0].temperature = 0.7f;
  s.rows[0].top_k = 40;
  s.rows[0].uniform = 0.25;
  s.rows[1].repetition_penalty = 1.3f;
  s.rows[1].penalty_begin = 0;
  s.rows[1].penalty_end = 2;
  s.penalties = {{13, 1}, {7, 0}};
  return s;
}

void ExpectSameBatch(const StepBatch& a, const StepBatch& b) {
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.positions, b.positions);
  EXPECT_EQ(a.token_seq, b.token_seq);
  EXPECT_EQ(a.slot_mapping, b.slot_mapping);
  EXPECT_EQ(a.block_tables, b.block_tables);
  EXPECT_EQ(a.max_blocks_per_seq, b.max_blocks_per_seq);
  EXPECT_EQ(a.logits_rows, b.logits_rows);
}

absl::StatusOr<StepMessage> Decode(const std::vector<char>& bytes) {
  return DecodeStepMessage(std::string_view(bytes.data(), bytes.size()));
}

TEST(StepWireTest, AStepWithSamplingComesBackWhole) {
  const StepBatch b = TwoSequences();
  const StepSampling s = TwoRows();
  const std::vector<char> bytes = EncodeStep(b, &s, /*want_logits=*/true);
  absl::StatusOr<StepMessage> m = Decode(bytes);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->kind, StepMessageKind::kStep);
  EXPECT_TRUE(m->want_logits);
  ASSERT_TRUE(m->has_sampling);
  ExpectSameBatch(m->batch, b);
  ASSERT_EQ(m->sampling.rows.size(), s.rows.size());
  EXPECT_EQ(std::memcmp(m->sampling.rows.data(), s.rows.data(), s.rows.size() * sizeof(SamplingRow)), 0);
  ASSERT_EQ(m->sampling.penalties.size(), 2u);
  EXPECT_EQ(m->sampling.penalties[0].token, 13);
  EXPECT_EQ(m->sampling.penalties[0].output_count, 1);
  // Encoding the decoded step gives the same bytes.
  EXPECT_EQ(EncodeStep(m->batch, &m->sampling, m->want_logits), bytes);
}

TEST(StepWireTest, AStepWithoutSamplingAndAnEmptyStep) {
  const StepBatch b = TwoSequences();
  absl::StatusOr<StepMessage> m = Decode(EncodeStep(b, nullptr, false));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_FALSE(m->has_sampling);
  EXPECT_FALSE(m->want_logits);
  ExpectSameBatch(m->batch, b);
  absl::StatusOr<StepMessage> empty = Decode(EncodeStep(StepBatch{}, nullptr, false));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->batch.num_tokens(), 0);
}

TEST(StepWireTest, StopIsItsOwnKind) {
  absl::StatusOr<StepMessage> m = Decode(EncodeStop());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->kind, StepMessageKind::kStop);
}

TEST(StepWireTest, EveryTruncationAndAnyTrailingByteIsRefused) {
  const StepSampling s = TwoRows();
  const std::vector<char> bytes = EncodeStep(TwoSequences(), &s, true);
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<StepMessage> m = DecodeStepMessage(std::string_view(bytes.data(), n));
    EXPECT_FALSE(m.ok()) << "a prefix of " << n << " of " << bytes.size() << " bytes was taken";
  }
  std::vector<char> longer = bytes;
  longer.push_back(0);
  EXPECT_THAT(Decode(longer).status().message(), HasSubstr("could not be decoded"));
  std::vector<char> stop = EncodeStop();
  stop.push_back(0);
  EXPECT_FALSE(Decode(stop).ok());
}

TEST(StepWireTest, BadKindsFlagsAndLengthsAreRefused) {
  const std::vector<char> good = EncodeStep(TwoSequences(), nullptr, true);
  auto with_int32_at = [&](size_t offset, int32_t v) {
    std::vector<char> b = good;
    std::memcpy(b.data() + offset, &v, sizeof v);
    return b;
  };
  EXPECT_FALSE(Decode(with_int32_at(0, 3)).ok());   // kind
  EXPECT_FALSE(Decode(with_int32_at(4, 2)).ok());   // want_logits
  EXPECT_FALSE(Decode(with_int32_at(8, -1)).ok());  // has_sampling
  EXPECT_FALSE(Decode(with_int32_at(12, -5)).ok()); // max_blocks_per_seq
  // The first vector's length: negative, and larger than the bytes left.
  for (int64_t n : {int64_t{-1}, int64_t{1} << 40, int64_t{5}}) {
    std::vector<char> b = good;
    std::memcpy(b.data() + 16, &n, sizeof n);
    EXPECT_FALSE(Decode(b).ok()) << n;
  }
}

}  // namespace
}  // namespace gqa
