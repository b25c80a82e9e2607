#include "tools/local_model.h"

#include <filesystem>
#include <thread>

namespace gqa {

absl::StatusOr<LocalModel> LoadLocalModel(const ModelConfig& config, std::unique_ptr<Checkpoint> ckpt,
                                          int num_threads) {
  if (num_threads <= 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  LocalModel m;
  m.config = config;
  m.checkpoint = std::move(ckpt);
  m.backend = std::make_unique<CpuBackend>(num_threads);
  m.comm = std::make_unique<SingleRankCommunicator>();
  ASSIGN_OR_RETURN(m.model, Model::Load(m.config, *m.checkpoint, ShardRanges::Full(m.config),
                                        m.backend.get(), m.comm.get()));
  return m;
}

absl::StatusOr<LocalModel> LoadLocalModel(const std::string& dir, int num_threads) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig((std::filesystem::path(dir) / "config.json").string()));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> ckpt, Checkpoint::OpenDirectory(dir));
  return LoadLocalModel(config, std::move(ckpt), num_threads);
}

}  // namespace gqa
