// The gqa.v1.Generation gRPC service on the callback API (a
// ServerWriteReactor per stream, one write in flight), plus the standard
// health service and server reflection. Deadlines and cancellations abort
// the request in the engine.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "server/frontend.h"

namespace grpc {
class Server;
}

namespace gqa {

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 50051;     // 0: pick a free port (tests)
  std::string api_key;  // empty: no authentication; else metadata "authorization: Bearer <key>"
  int max_message_bytes = 8 << 20;
};

// A gqa.v1.GenerateRequest as it arrives on the wire, checked as the
// service checks it (UTF-8 of every string field, nesting depth, a prompt,
// max_tokens) and turned into an ApiRequest. Public for the fuzzer.
absl::StatusOr<ApiRequest> DecodeGenerateRequest(const std::string& bytes, int max_model_len);

class GrpcServer {
 public:
  GrpcServer(const GrpcOptions& options, Frontend* frontend);
  ~GrpcServer();
  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting calls and cancels the ones still open.
  void Shutdown();
  // Health reports NOT_SERVING from now on.
  void SetNotServing();

 private:
  class Service;
  GrpcOptions options_;
  Frontend* frontend_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace gqa
