#include "worker/inprocess_communicator.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace gqa {

class InProcessGroup::Comm final : public Communicator {
 public:
  Comm(InProcessGroup* g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_->size_; }

  // Each rank sums one contiguous chunk over all ranks' buffers, in rank
  // order, and writes the sum back into every buffer: the result is
  // bit-identical on all ranks and needs no scratch memory.
  absl::Status AllReduceSum(float* data, int64_t count) override {
    g_->posted_[rank_] = data;
    RETURN_IF_ERROR(g_->Arrive());
    const int t = g_->size_;
    const int64_t lo = count * rank_ / t, hi = count * (rank_ + 1) / t;
    for (int64_t i = lo; i < hi; ++i) {
      float s = 0.0f;
      for (int r = 0; r < t; ++r) s += static_cast<float*>(g_->posted_[r])[i];
      for (int r = 0; r < t; ++r) static_cast<float*>(g_->posted_[r])[i] = s;
    }
    return g_->Arrive();
  }

  absl::Status AllGather(const float* send, int64_t count, float* recv) override {
    g_->posted_[rank_] = const_cast<float*>(send);
    RETURN_IF_ERROR(g_->Arrive());
    for (int r = 0; r < g_->size_; ++r) {
      std::memmove(recv + r * count, g_->posted_[r], size_t(count) * sizeof(float));
    }
    return g_->Arrive();  // senders keep their buffers until everyone has copied
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    g_->posted_[rank_] = data;
    RETURN_IF_ERROR(g_->Arrive());
    if (rank_ != root) std::memcpy(data, g_->posted_[root], size_t(bytes));
    return g_->Arrive();
  }

  absl::Status Barrier() override { return g_->Arrive(); }

 private:
  InProcessGroup* g_;
  int rank_;
};

InProcessGroup::InProcessGroup(int size) : size_(size), posted_(size, nullptr) {
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<Comm>(this, r));
}

InProcessGroup::~InProcessGroup() = default;

absl::Status InProcessGroup::Arrive() {
  std::unique_lock<std::mutex> lock(mu_);
  if (!abort_.ok()) return abort_;
  const uint64_t gen = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return absl::OkStatus();
  }
  cv_.wait(lock, [&] { return generation_ != gen || !abort_.ok(); });
  return generation_ != gen ? absl::OkStatus() : abort_;
}

void InProcessGroup::Abort(const absl::Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (abort_.ok()) abort_ = absl::AbortedError(absl::StrCat("tensor-parallel group aborted: ", why.message()));
  cv_.notify_all();
}

void InProcessGroup::Reset() {
  std::lock_guard<std::mutex> lock(mu_);
  abort_ = absl::OkStatus();
  arrived_ = 0;
}

}  // namespace gqa
