// The NCCL communicator with one rank on a GPU: collectives move the right
// bytes. Skips, saying why, where no CUDA device is present.
#include <cuda_runtime.h>

#include "tests/test_util.h"
#include "worker/nccl_communicator.h"

namespace gqa {
namespace {

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      GTEST_SKIP() << "no CUDA device (" << (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices")
                   << "): the NCCL communicator runs only on a GPU machine";
    }
  }
};

TEST_F(NcclTest, SingleRankCollectives) {
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  auto id = NcclCommunicator::NewId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto comm = NcclCommunicator::Create(0, 1, *id, 0, stream);
  ASSERT_TRUE(comm.ok()) << comm.status();

  std::vector<float> host = {1.5f, -2.0f, 3.25f, 7.0f, 0.0f};
  float *d_a = nullptr, *d_b = nullptr;
  ASSERT_EQ(cudaMalloc(&d_a, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_b, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_a, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);

  ASSERT_OK((*comm)->AllReduceSum(d_a, int64_t(host.size())));
  ASSERT_OK((*comm)->AllGather(d_a, int64_t(host.size()), d_b));
  ASSERT_OK((*comm)->Broadcast(d_b, int64_t(host.size() * sizeof(float)), 0));
  ASSERT_OK((*comm)->Barrier());
  std::vector<float> out(host.size());
  ASSERT_EQ(cudaMemcpy(out.data(), d_b, out.size() * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(out, host);  // one rank: the sum is the input, the gather a copy
  cudaFree(d_a);
  cudaFree(d_b);
  comm->reset();
  cudaStreamDestroy(stream);
}

}  // namespace
}  // namespace gqa
