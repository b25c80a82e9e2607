// A gqa-server child process on free ports: started with --http-port 0
// --grpc-port 0, its ports read from its log; stopped with SIGTERM (drain),
// then SIGKILL. The one way gqa-bench serve-sweep and the tests start a
// server.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace gqa {

class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { Stop(); }

  // Runs `bin` with `args` (after the port flags), stderr to `log_file` and
  // `env` added to its environment, and returns at once (for a server that
  // is expected not to come up).
  absl::Status Spawn(const std::string& bin, const std::vector<std::string>& args, const std::string& log_file,
                     const std::vector<std::pair<std::string, std::string>>& env = {});
  // Spawn, then waits until it serves (at most `start_timeout_s`).
  absl::Status Start(const std::string& bin, const std::vector<std::string>& args, const std::string& log_file,
                     double start_timeout_s = 300,
                     const std::vector<std::pair<std::string, std::string>>& env = {});
  // SIGTERM, then SIGKILL after `grace_s`; nothing when not running.
  void Stop(double grace_s = 30);

  // The running child, handed to the caller (who signals and reaps it);
  // this object forgets it.
  pid_t Release() {
    const pid_t pid = pid_;
    pid_ = -1;
    return pid;
  }

  int http_port() const { return http_port_; }
  int grpc_port() const { return grpc_port_; }

 private:
  pid_t pid_ = -1;
  int http_port_ = 0, grpc_port_ = 0;
};

}  // namespace gqa
