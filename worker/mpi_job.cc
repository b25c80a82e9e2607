#include "worker/mpi_job.h"

#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "absl/strings/str_cat.h"

namespace gqa {
namespace {

constexpr int kTagHeartbeat = 1;
constexpr int kTagError = 2;
constexpr int kReportBytes = 1024;

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

absl::Status MpiError(int rc, const char* what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  return absl::InternalError(absl::StrCat("MPI ", what, " failed: ", std::string(text, size_t(len))));
}

// Every transfer of the job is cut into pieces MPI's int counts can hold.
constexpr int64_t kMaxCount = INT_MAX / 2;

}  // namespace

struct MpiJob::Comms {
  MPI_Comm coll = MPI_COMM_NULL, steps = MPI_COMM_NULL, health = MPI_COMM_NULL;
  // Health traffic, touched only by the watchdog thread.
  std::vector<MPI_Request> recv;             // one posted receive per watched peer
  std::vector<std::vector<char>> recv_buf;
  std::vector<MPI_Request> beat;             // the last heartbeat sent to each peer
  int beat_payload = 0;
};

namespace {

// The model's collectives over MPI. All-reduce sums every element over the
// ranks in rank order, starting from zero, as the in-process group does, so
// a TP run under mpirun gives the same bits as the threaded one: each rank
// sums one chunk (all-to-all of the chunks), then the sums are gathered.
class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MpiJob* job, MPI_Comm comm, int rank, int size) : job_(job), comm_(comm), rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    for (int64_t at = 0; at < count; at += kMaxCount) RETURN_IF_ERROR(AllReducePiece(data + at, std::min(kMaxCount, count - at)));
    return absl::OkStatus();
  }

  absl::Status AllGather(const float* send, int64_t count, float* recv) override {
    if (count * size_ > kMaxCount) {
      return absl::InvalidArgumentError(absl::StrCat("an all-gather of ", count, " floats per rank is too large for MPI"));
    }
    MPI_Request req;
    const int rc = MPI_Iallgather(send, int(count), MPI_FLOAT, recv, int(count), MPI_FLOAT, comm_, &req);
    if (rc != MPI_SUCCESS) return MpiError(rc, "all-gather");
    return job_->Wait(&req, "all-gather");
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    for (int64_t at = 0; at < bytes; at += kMaxCount) {
      MPI_Request req;
      const int rc = MPI_Ibcast(static_cast<char*>(data) + at, int(std::min(kMaxCount, bytes - at)), MPI_BYTE, root,
                                comm_, &req);
      if (rc != MPI_SUCCESS) return MpiError(rc, "broadcast");
      RETURN_IF_ERROR(job_->Wait(&req, "broadcast"));
    }
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    MPI_Request req;
    const int rc = MPI_Ibarrier(comm_, &req);
    if (rc != MPI_SUCCESS) return MpiError(rc, "barrier");
    return job_->Wait(&req, "barrier");
  }

 private:
  absl::Status AllReducePiece(float* data, int64_t count) {
    std::vector<int> counts(size_), displs(size_), from(size_), from_displs(size_);
    for (int r = 0; r < size_; ++r) {
      const int64_t lo = count * r / size_, hi = count * (r + 1) / size_;
      counts[r] = int(hi - lo);
      displs[r] = int(lo);
    }
    const int mine = counts[rank_];
    for (int r = 0; r < size_; ++r) {
      from[r] = mine;
      from_displs[r] = r * mine;
    }
    scratch_.resize(size_t(mine) * size_);
    MPI_Request req;
    int rc = MPI_Ialltoallv(data, counts.data(), displs.data(), MPI_FLOAT, scratch_.data(), from.data(),
                            from_displs.data(), MPI_FLOAT, comm_, &req);
    if (rc != MPI_SUCCESS) return MpiError(rc, "all-to-all");
    RETURN_IF_ERROR(job_->Wait(&req, "all-reduce"));
    float* out = data + displs[rank_];
    for (int i = 0; i < mine; ++i) {
      float s = 0.0f;
      for (int r = 0; r < size_; ++r) s += scratch_[size_t(r) * mine + i];
      out[i] = s;
    }
    rc = MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displs.data(), MPI_FLOAT, comm_, &req);
    if (rc != MPI_SUCCESS) return MpiError(rc, "all-gather");
    return job_->Wait(&req, "all-reduce");
  }

  MpiJob* job_;
  MPI_Comm comm_;
  int rank_, size_;
  std::vector<float> scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<MpiJob>> MpiJob::InitIfLaunched(int* argc, char*** argv) {
  if (!LaunchedByMpi()) return nullptr;
  int provided = 0;
  if (int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided); rc != MPI_SUCCESS) {
    return MpiError(rc, "initialisation");
  }
  if (provided < MPI_THREAD_MULTIPLE) {
    return absl::FailedPreconditionError(
        "this MPI library does not support MPI_THREAD_MULTIPLE (the heartbeat thread needs it)");
  }
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size == 1) {
    MPI_Finalize();
    return nullptr;
  }
  auto job = std::unique_ptr<MpiJob>(new MpiJob());
  job->rank_ = rank;
  job->size_ = size;
  job->comms_ = std::make_unique<Comms>();
  Comms& c = *job->comms_;
  for (MPI_Comm* comm : {&c.coll, &c.steps, &c.health}) {
    if (int rc = MPI_Comm_dup(MPI_COMM_WORLD, comm); rc != MPI_SUCCESS) return MpiError(rc, "communicator set-up");
    MPI_Comm_set_errhandler(*comm, MPI_ERRORS_RETURN);
  }
  MPI_Comm node;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_rank(node, &job->local_rank_);
    MPI_Comm_free(&node);
  }
  job->last_heard_.assign(size, Now());
  job->comm_ = std::make_unique<MpiCommunicator>(job.get(), c.coll, rank, size);
  return job;
}

MpiJob::~MpiJob() {
  stop_watch_ = true;
  if (watch_.joinable()) watch_.join();
  if (!failure().ok() || comms_ == nullptr) return;
  Comms& c = *comms_;
  for (MPI_Request& r : c.recv) {
    if (r == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
  for (MPI_Request& r : c.beat) {
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  }
  // Every rank reaches here only after rank 0's stop message: a barrier,
  // then MPI's own shutdown.
  MPI_Request req;
  if (MPI_Ibarrier(c.health, &req) == MPI_SUCCESS && Wait(&req, "shutdown").ok()) {
    for (MPI_Comm* comm : {&c.coll, &c.steps, &c.health}) MPI_Comm_free(comm);
    MPI_Finalize();
  }
}

Communicator* MpiJob::comm() { return comm_.get(); }

absl::Status MpiJob::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

absl::Status MpiJob::Wait(void* request, const char* what) {
  auto* req = static_cast<MPI_Request*>(request);
  const auto start = std::chrono::steady_clock::now();
  for (int spins = 0;; ++spins) {
    int done = 0;
    if (int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE); rc != MPI_SUCCESS) {
      const absl::Status st = MpiError(rc, what);
      Fail(st);
      return st;
    }
    if (done) return absl::OkStatus();
    if (aborted_.load(std::memory_order_relaxed)) {
      // The request is left behind: a failed job is not finalised.
      const absl::Status why = failure();
      return absl::AbortedError(absl::StrCat("tensor-parallel job aborted during ", what, ": ", why.message()));
    }
    // Spin briefly (a step's collectives follow each other closely), then
    // yield, then sleep: an idle rank waiting for the next step costs
    // nothing.
    if (spins < 256) continue;
    if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2)) {
      std::this_thread::yield();
    } else {
      const timespec pause{0, 100 * 1000};
      nanosleep(&pause, nullptr);
    }
  }
}

absl::Status MpiJob::BroadcastBytes(std::vector<char>* bytes) {
  int64_t n = int64_t(bytes->size());
  RETURN_IF_ERROR(BroadcastInt64(&n));
  if (n < 0) return absl::InternalError("negative broadcast size");
  bytes->resize(size_t(n));
  for (int64_t at = 0; at < n; at += kMaxCount) {
    MPI_Request req;
    const int rc = MPI_Ibcast(bytes->data() + at, int(std::min(kMaxCount, n - at)), MPI_BYTE, 0, comms_->steps, &req);
    if (rc != MPI_SUCCESS) return MpiError(rc, "step broadcast");
    RETURN_IF_ERROR(Wait(&req, "step broadcast"));
  }
  return absl::OkStatus();
}

absl::Status MpiJob::BroadcastInt64(int64_t* value) {
  MPI_Request req;
  const int rc = MPI_Ibcast(value, 1, MPI_INT64_T, 0, comms_->steps, &req);
  if (rc != MPI_SUCCESS) return MpiError(rc, "broadcast");
  return Wait(&req, "step broadcast");
}

void MpiJob::StartWatch(double interval_s, double timeout_s, std::function<void(const absl::Status&)> on_failure) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_failure_ = std::move(on_failure);
    last_heard_.assign(size_, Now());
  }
  Comms& c = *comms_;
  c.recv.assign(size_, MPI_REQUEST_NULL);
  c.beat.assign(size_, MPI_REQUEST_NULL);
  c.recv_buf.assign(size_, std::vector<char>(kReportBytes));
  watch_ = std::thread([this, interval_s, timeout_s] { WatchLoop(interval_s, timeout_s); });
}

void MpiJob::WatchLoop(double interval_s, double timeout_s) {
  Comms& c = *comms_;
  // Rank 0 watches every rank; the others watch rank 0.
  std::vector<int> peers;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && (rank_ == 0 || r == 0)) peers.push_back(r);
  }
  auto post = [&](int r) {
    MPI_Irecv(c.recv_buf[r].data(), kReportBytes, MPI_CHAR, r, MPI_ANY_TAG, c.health, &c.recv[r]);
  };
  for (int r : peers) post(r);
  while (!stop_watch_ && !aborted_) {
    const double now = Now();
    for (int r : peers) {
      int done = 0;
      MPI_Status status;
      if (MPI_Test(&c.recv[r], &done, &status) != MPI_SUCCESS || !done) continue;
      if (status.MPI_TAG == kTagError) {
        int len = 0;
        MPI_Get_count(&status, MPI_CHAR, &len);
        const std::string text(c.recv_buf[r].data(), size_t(std::max(0, std::min(len, kReportBytes))));
        Trigger(absl::UnavailableError(absl::StrCat("rank ", r, " failed: ", text)), /*tell_peers=*/rank_ == 0);
        return;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        last_heard_[r] = now;
      }
      post(r);
    }
    for (int r : peers) {
      double heard;
      {
        std::lock_guard<std::mutex> lock(mu_);
        heard = last_heard_[r];
      }
      if (now - heard > timeout_s) {
        Trigger(absl::UnavailableError(absl::StrCat("rank ", r, " has not been heard from for ", int(now - heard),
                                                    " s: its process exited or hangs")),
                /*tell_peers=*/rank_ == 0);
        return;
      }
      int done = 1;
      if (c.beat[r] != MPI_REQUEST_NULL) MPI_Test(&c.beat[r], &done, MPI_STATUS_IGNORE);
      if (done) MPI_Isend(&c.beat_payload, 1, MPI_CHAR, r, kTagHeartbeat, c.health, &c.beat[r]);
    }
    const auto pause = std::chrono::duration<double>(interval_s);
    std::this_thread::sleep_for(pause);
  }
}

void MpiJob::OnAbort(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  abort_hooks_.push_back(std::move(hook));
}

void MpiJob::Fail(const absl::Status& why) { Trigger(why, /*tell_peers=*/true); }

void MpiJob::Trigger(const absl::Status& why, bool tell_peers) {
  std::function<void(const absl::Status&)> callback;
  std::vector<std::function<void()>> hooks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!failure_.ok()) return;
    failure_ = why.ok() ? absl::UnknownError("unknown failure") : why;
    callback = on_failure_;
    hooks = abort_hooks_;
  }
  aborted_ = true;
  for (const auto& hook : hooks) hook();
  if (tell_peers && comms_ != nullptr) {
    // Best effort and bounded: a peer that is gone cannot receive it.
    std::string text(why.message());
    if (text.size() > size_t(kReportBytes)) text.resize(kReportBytes);
    std::vector<MPI_Request> sent;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_ || (rank_ != 0 && r != 0)) continue;
      MPI_Request req;
      if (MPI_Issend(text.data(), int(text.size()), MPI_CHAR, r, kTagError, comms_->health, &req) == MPI_SUCCESS) {
        sent.push_back(req);
      }
    }
    const double deadline = Now() + 0.5;
    for (MPI_Request& req : sent) {
      int done = 0;
      while (Now() < deadline && MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
  }
  if (callback) callback(failure());
}

std::vector<int> MpiJob::SilentRanks(double max_age_s) const {
  std::vector<int> silent;
  const double now = Now();
  std::lock_guard<std::mutex> lock(mu_);
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && (rank_ == 0 || r == 0) && now - last_heard_[r] > max_age_s) silent.push_back(r);
  }
  return silent;
}

void MpiJob::AbortJob(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace gqa
