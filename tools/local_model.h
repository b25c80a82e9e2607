// A model directory loaded for a single process on the CPU backend: what the
// command-line tools share.
#pragma once

#include <memory>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "worker/model.h"

namespace gqa {

struct LocalModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<CpuBackend> backend;
  std::unique_ptr<SingleRankCommunicator> comm;
  std::unique_ptr<Model> model;
};

// num_threads <= 0: one per hardware thread.
absl::StatusOr<LocalModel> LoadLocalModel(const std::string& dir, int num_threads);
// The same for a checkpoint already in memory.
absl::StatusOr<LocalModel> LoadLocalModel(const ModelConfig& config, std::unique_ptr<Checkpoint> ckpt,
                                          int num_threads);

}  // namespace gqa
