// One GPU per rank with NCCL between them (built with the CUDA toolkit).
// Every rank initialises on its own thread at the same time, since
// ncclCommInitRank waits for the whole group; after an abort the
// communicators are created anew with a fresh unique id.
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_backend.h"
#include "worker/device_group.h"
#include "worker/nccl_communicator.h"

namespace gqa {
namespace {

class NcclDeviceGroup final : public DeviceGroup {
 public:
  NcclDeviceGroup(int size, int visible, const ncclUniqueId& id)
      : DeviceGroup(DeviceKind::kCuda, size), visible_(visible), id_(id), backends_(size), nccl_(size) {
    for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<RankComm>(this, r));
  }
  ~NcclDeviceGroup() override {
    for (int r = 0; r < size(); ++r) {
      if (backends_[r] != nullptr) (void)backends_[r]->MakeCurrent();
      nccl_[r].reset();
    }
  }

  // Every rank makes its backend first; NCCL is initialised only once all of
  // them have one, since a rank that fails before ncclCommInitRank would
  // leave the others waiting in it for good.
  absl::Status InitRank(int rank) override {
    absl::StatusOr<std::unique_ptr<Backend>> b = cuda::CreateBackend(rank % visible_);
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (b.ok()) {
        backends_[rank] = std::move(*b);
      } else {
        start_failed_ = true;
      }
      ++started_;
      start_cv_.notify_all();
      start_cv_.wait(lock, [&] { return started_ == size(); });
      if (!b.ok()) return b.status();
      if (start_failed_) return absl::AbortedError("another rank's device failed to start");
    }
    return Connect(rank);
  }
  Backend* backend(int rank) override { return backends_[rank].get(); }
  Communicator* comm(int rank) override { return comms_[rank].get(); }

  void Abort(const absl::Status& why) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (abort_.ok()) abort_ = absl::AbortedError(absl::StrCat("tensor-parallel group aborted: ", why.message()));
    for (auto& c : nccl_) {
      if (c != nullptr) c->Abort();
    }
  }

  absl::Status Reset() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (abort_.ok()) return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(id_, NcclCommunicator::NewId());
    std::vector<absl::Status> results(size());
    std::vector<std::thread> threads;
    for (int r = 0; r < size(); ++r) {
      threads.emplace_back([this, r, &results] {
        absl::Status st = backends_[r]->MakeCurrent();
        if (st.ok()) st = backends_[r]->Synchronize();  // drain what the abort left
        nccl_[r].reset();
        results[r] = st.ok() ? Connect(r) : st;
      });
    }
    for (std::thread& t : threads) t.join();
    for (const absl::Status& st : results) RETURN_IF_ERROR(st);
    std::lock_guard<std::mutex> lock(mu_);
    abort_ = absl::OkStatus();
    generation_.fetch_add(1);  // graphs that captured the old communicators are stale
    return absl::OkStatus();
  }

 private:
  // Forwards to the rank's current NCCL communicator, so that a model keeps
  // one Communicator pointer across Reset().
  class RankComm final : public Communicator {
   public:
    RankComm(NcclDeviceGroup* g, int r) : g_(g), r_(r) {}
    int rank() const override { return r_; }
    int size() const override { return g_->size(); }
    absl::Status AllReduceSum(float* data, int64_t count) override {
      RETURN_IF_ERROR(g_->Aborted());
      return g_->nccl_[r_]->AllReduceSum(data, count);
    }
    absl::Status AllGather(const float* send, int64_t count, float* recv) override {
      RETURN_IF_ERROR(g_->Aborted());
      return g_->nccl_[r_]->AllGather(send, count, recv);
    }
    absl::Status Broadcast(void* data, int64_t bytes, int root) override {
      RETURN_IF_ERROR(g_->Aborted());
      return g_->nccl_[r_]->Broadcast(data, bytes, root);
    }
    absl::Status Barrier() override {
      RETURN_IF_ERROR(g_->Aborted());
      return g_->nccl_[r_]->Barrier();
    }
    uint64_t generation() const override { return g_->generation_.load(); }

   private:
    NcclDeviceGroup* g_;
    int r_;
  };

  absl::Status Aborted() {
    std::lock_guard<std::mutex> lock(mu_);
    return abort_;
  }

  absl::Status Connect(int rank) {
    Backend* b = backends_[rank].get();
    ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> c,
                     NcclCommunicator::Create(rank, size(), id_, rank % visible_,
                                              static_cast<cudaStream_t>(b->NativeStream())));
    std::lock_guard<std::mutex> lock(mu_);
    nccl_[rank] = std::move(c);
    return absl::OkStatus();
  }

  int visible_;
  ncclUniqueId id_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::vector<std::unique_ptr<NcclCommunicator>> nccl_;
  std::vector<std::unique_ptr<RankComm>> comms_;
  std::mutex mu_;
  std::atomic<uint64_t> generation_{0};
  absl::Status abort_;
  std::condition_variable start_cv_;
  int started_ = 0;
  bool start_failed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceGroup>> CreateNcclDeviceGroup(int size) {
  ASSIGN_OR_RETURN(int visible, cuda::DeviceCount());
  if (visible == 0) return absl::FailedPreconditionError("--device cuda: no CUDA device is visible");
  if (size > visible) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device cuda --tp ", size, " needs ", size, " GPUs; ", visible, " visible"));
  }
  ASSIGN_OR_RETURN(ncclUniqueId id, NcclCommunicator::NewId());
  return std::unique_ptr<DeviceGroup>(new NcclDeviceGroup(size, visible, id));
}

}  // namespace gqa
