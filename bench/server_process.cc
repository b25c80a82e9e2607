// gqa-server as a child process (see server_process.h).
#include "bench/server_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "base/common.h"

namespace gqa {
namespace {

// The port after `marker` + "HOST:" in the serving line, or 0.
int PortAfter(const std::string& text, size_t from, const std::string& marker) {
  const size_t at = text.find(marker, from);
  if (at == std::string::npos) return 0;
  const size_t end = text.find_first_of(",\n", at);
  const size_t colon = text.rfind(':', end == std::string::npos ? text.size() : end);
  if (colon == std::string::npos || colon < at) return 0;
  return std::atoi(text.c_str() + colon + 1);
}

}  // namespace

absl::Status ServerProcess::Spawn(const std::string& bin, const std::vector<std::string>& args,
                                  const std::string& log_file,
                                  const std::vector<std::pair<std::string, std::string>>& env) {
  Stop();
  std::filesystem::remove(log_file);  // a previous server's ports must not be read
  pid_ = fork();
  if (pid_ < 0) return absl::InternalError("fork failed");
  if (pid_ == 0) {
    if (std::freopen(log_file.c_str(), "w", stderr) == nullptr) _exit(126);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<std::string> all = {bin, "--http-port", "0", "--grpc-port", "0"};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return absl::OkStatus();
}

absl::Status ServerProcess::Start(const std::string& bin, const std::vector<std::string>& args,
                                  const std::string& log_file, double start_timeout_s,
                                  const std::vector<std::pair<std::string, std::string>>& env) {
  RETURN_IF_ERROR(Spawn(bin, args, log_file, env));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(start_timeout_s);
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(log_file);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    // "gqa: serving 'NAME': HTTP on HOST:PORT, gRPC on HOST:PORT"
    const size_t serving = text.find("gqa: serving");
    if (serving != std::string::npos && text.find('\n', serving) != std::string::npos) {
      http_port_ = PortAfter(text, serving, "HTTP on ");
      grpc_port_ = PortAfter(text, serving, "gRPC on ");
      if (http_port_ > 0) return absl::OkStatus();
    }
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("gqa-server exited while starting; its log (", log_file, "):\n", text));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  Stop(0);
  return absl::DeadlineExceededError(absl::StrCat("gqa-server did not start in ", start_timeout_s, " s; see ", log_file));
}

void ServerProcess::Stop(double grace_s) {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace gqa
