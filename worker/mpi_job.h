// One process per tensor-parallel rank, started by an MPI launcher
// (`mpirun -np T gqa-server ...`). Rank 0 runs the front-ends, scheduler and
// sampler; every other rank receives each step from rank 0 and runs its shard.
//
// MPI carries three kinds of traffic, each on its own duplicate of
// MPI_COMM_WORLD so that they never match each other's messages:
//   collectives  the model's all-reduce / all-gather / broadcast (CPU ranks;
//                GPU ranks use NCCL, whose unique id goes over MPI)
//   steps        rank 0 broadcasts every step to the others
//   health       heartbeats between rank 0 and every other rank, and error
//                reports; a watchdog thread turns a silent or failed rank
//                into a failure of the whole job
// Every wait polls its request and gives up when the job is aborted, so a
// failed rank never leaves the others blocked inside MPI.
//
// Built only when MPI is found (GQA_WITH_MPI); without it, a process started
// by mpirun with more than one rank says so and exits.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/communicator.h"

namespace gqa {

// True when this process was started by an MPI launcher (its environment
// names a world size), whether or not this build has MPI.
inline bool LaunchedByMpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  return false;
}

class MpiJob {
 public:
  // Initialises MPI (MPI_THREAD_MULTIPLE) when LaunchedByMpi(); returns null
  // when the process was not started by mpirun, or when the world has one
  // rank (nothing to distribute: the threaded executor runs as usual).
  static absl::StatusOr<std::unique_ptr<MpiJob>> InitIfLaunched(int* argc, char*** argv);
  // Stops the watchdog and finalises MPI. After a failure MPI is not
  // finalised (a dead rank cannot join); the process is expected to exit.
  ~MpiJob();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // This process's index among the ranks on its node (GPU selection).
  int local_rank() const { return local_rank_; }

  // The model's collectives between the ranks of the job (host buffers).
  Communicator* comm();

  // Rank 0 sends `bytes` to every rank; the others receive into `bytes`
  // (resized). Fails, instead of blocking, once the job is aborted.
  absl::Status BroadcastBytes(std::vector<char>* bytes);
  // The same for one integer.
  absl::Status BroadcastInt64(int64_t* value);

  // Starts the watchdog: rank 0 and every other rank exchange a heartbeat
  // every `interval_s`; a rank not heard from for `timeout_s`, or one that
  // reports an error, fails the job. `on_failure` is called once, on the
  // watchdog's thread, with the reason, after the job has been aborted.
  void StartWatch(double interval_s, double timeout_s, std::function<void(const absl::Status&)> on_failure);
  // Runs `hook` when the job fails, before the failure callback (a NCCL
  // communicator registers its abort here).
  void OnAbort(std::function<void()> hook);
  // Fails the job from this rank: aborts local waits, tells rank 0 (or, on
  // rank 0, the others), and runs the failure callback.
  void Fail(const absl::Status& why);
  // The first failure, OK while the job is healthy.
  absl::Status failure() const;
  // On rank 0: the ranks whose last heartbeat is older than `max_age_s`
  // (empty when every rank was heard from recently).
  std::vector<int> SilentRanks(double max_age_s) const;
  // Ends every process of the job at once with `code` (MPI_Abort).
  [[noreturn]] void AbortJob(int code);

  // The poll loop every MPI wait of the job uses; public for the
  // communicator. `request` points to an MPI_Request.
  absl::Status Wait(void* request, const char* what);

 private:
  MpiJob() = default;
  struct Comms;
  void WatchLoop(double interval_s, double timeout_s);
  void Trigger(const absl::Status& why, bool tell_peers);

  int rank_ = 0, size_ = 1, local_rank_ = 0;
  std::unique_ptr<Comms> comms_;
  std::unique_ptr<Communicator> comm_;

  mutable std::mutex mu_;
  absl::Status failure_;
  std::function<void(const absl::Status&)> on_failure_;
  std::vector<std::function<void()>> abort_hooks_;
  std::atomic<bool> aborted_{false};
  std::atomic<bool> stop_watch_{false};
  std::thread watch_;
  std::vector<double> last_heard_;  // per rank, seconds on the steady clock
  std::vector<std::string> pending_reports_;
};

}  // namespace gqa
