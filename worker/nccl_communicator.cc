#include "worker/nccl_communicator.h"

#include "absl/strings/str_cat.h"

namespace gqa {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("NCCL ", what, ": ", ncclGetErrorString(r)));
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, ": ", cudaGetErrorString(e)));
}

}  // namespace

absl::StatusOr<ncclUniqueId> NcclCommunicator::NewId() {
  ncclUniqueId id;
  RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
  return id;
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(int rank, int size, const ncclUniqueId& id,
                                                                           int device, cudaStream_t stream) {
  if (rank < 0 || rank >= size) return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", size));
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device), "cudaSetDevice"));
  ncclComm_t comm;
  RETURN_IF_ERROR(NcclStatus(ncclCommInitRank(&comm, size, id, rank), "ncclCommInitRank"));
  float* scratch = nullptr;
  if (absl::Status st = CudaStatus(cudaMalloc(&scratch, sizeof(float)), "cudaMalloc"); !st.ok()) {
    ncclCommDestroy(comm);
    return st;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(rank, size, comm, stream, scratch));
}

NcclCommunicator::~NcclCommunicator() {
  cudaFree(scratch_);
  if (!aborted_) ncclCommDestroy(comm_);  // an aborted communicator is already freed
}

absl::Status NcclCommunicator::AllReduceSum(float* data, int64_t count) {
  return NcclStatus(ncclAllReduce(data, data, size_t(count), ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
}

absl::Status NcclCommunicator::AllGather(const float* send, int64_t count, float* recv) {
  return NcclStatus(ncclAllGather(send, recv, size_t(count), ncclFloat32, comm_, stream_), "ncclAllGather");
}

absl::Status NcclCommunicator::Broadcast(void* data, int64_t bytes, int root) {
  return NcclStatus(ncclBroadcast(data, data, size_t(bytes), ncclUint8, root, comm_, stream_), "ncclBroadcast");
}

absl::Status NcclCommunicator::Barrier() {
  RETURN_IF_ERROR(AllReduceSum(scratch_, 1));
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void NcclCommunicator::Abort() {
  if (aborted_) return;
  aborted_ = true;
  ncclCommAbort(comm_);
}

}  // namespace gqa
