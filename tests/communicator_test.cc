// The in-process communicator's collectives across real threads.
#include <thread>

#include "tests/test_util.h"
#include "worker/inprocess_communicator.h"

namespace gqa {
namespace {

void RunRanks(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

TEST(InProcessCommunicatorTest, Collectives) {
  for (int n : {1, 2, 3, 8}) {
    InProcessGroup group(n);
    std::vector<std::vector<float>> reduced(n), gathered(n), broadcast(n);
    RunRanks(n, [&](int r) {
      Communicator* c = group.rank(r);
      EXPECT_EQ(c->rank(), r);
      EXPECT_EQ(c->size(), n);
      for (int rep = 0; rep < 20; ++rep) {
        std::vector<float> x(37);
        for (int i = 0; i < 37; ++i) x[i] = float(r * 100 + i + rep);
        ASSERT_OK(c->AllReduceSum(x.data(), 37));
        reduced[r] = x;
        std::vector<float> send = {float(r), float(r * 2)}, recv(2 * n);
        ASSERT_OK(c->AllGather(send.data(), 2, recv.data()));
        gathered[r] = recv;
        std::vector<float> b = {float(r), 0.5f};
        ASSERT_OK(c->Broadcast(b.data(), sizeof(float) * 2, n - 1));
        broadcast[r] = b;
        ASSERT_OK(c->Barrier());
      }
    });
    for (int r = 0; r < n; ++r) {
      for (int i = 0; i < 37; ++i) {
        float want = 0;
        for (int q = 0; q < n; ++q) want += float(q * 100 + i + 19);
        EXPECT_EQ(reduced[r][i], want);
      }
      for (int q = 0; q < n; ++q) {
        EXPECT_EQ(gathered[r][2 * q], float(q));
        EXPECT_EQ(gathered[r][2 * q + 1], float(2 * q));
      }
      EXPECT_EQ(broadcast[r][0], float(n - 1));
    }
  }
}

TEST(InProcessCommunicatorTest, AbortReleasesWaitingRanks) {
  InProcessGroup group(4);
  std::vector<absl::Status> results(4);
  RunRanks(4, [&](int r) {
    if (r == 2) {
      group.Abort(absl::InternalError("rank 2 failed"));
      return;
    }
    std::vector<float> x(5, 1.0f);
    results[r] = group.rank(r)->AllReduceSum(x.data(), 5);
  });
  for (int r : {0, 1, 3}) {
    EXPECT_TRUE(absl::IsAborted(results[r])) << results[r];
    EXPECT_THAT(std::string(results[r].message()), ::testing::HasSubstr("rank 2 failed"));
  }
  group.Reset();
  RunRanks(4, [&](int r) { EXPECT_TRUE(group.rank(r)->Barrier().ok()); });
}

}  // namespace
}  // namespace gqa
