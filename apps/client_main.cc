// gqa-client: a small gRPC client for gqa.v1 (the README's example).
#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <cstdio>

#include "gqa/v1/gqa.grpc.pb.h"
#include "base/flags.h"

int main(int argc, char** argv) {
  gqa::Flags f("gqa-client", "Sends one request to a gqa-server over gRPC and prints the reply.");
  f.Add("server", "127.0.0.1:50051", "gRPC address");
  f.Add("prompt", "", "text prompt (needs a model with a tokenizer)");
  f.Add("prompt-ids", "", "comma-separated token ids (instead of --prompt)");
  f.Add("max-tokens", "32", "tokens to generate");
  f.Add("temperature", "0", "sampling temperature; 0 is greedy");
  f.AddBool("stream", "use GenerateStream and print text as it arrives");
  f.AddBool("info", "print GetModelInfo instead of generating");
  f.Add("api-key", "", "sent as metadata 'authorization: Bearer KEY'");
  f.Add("timeout", "60", "deadline in seconds");
  gqa::ParseFlagsOrExit(f, argc, argv);

  // Numbers that do not parse are usage errors, not silent defaults.
  const absl::StatusOr<int64_t> max_tokens = f.GetInt("max-tokens");
  const absl::StatusOr<double> temperature = f.GetDouble("temperature");
  const absl::StatusOr<double> timeout_s = f.GetDouble("timeout");
  for (const absl::Status& st : {max_tokens.status(), temperature.status(), timeout_s.status()}) {
    if (!st.ok()) {
      std::fprintf(stderr, "gqa-client: %s\n", std::string(st.message()).c_str());
      return 2;
    }
  }
  if (*max_tokens < 0 || *max_tokens > UINT32_MAX || *temperature < 0 || !(*timeout_s > 0)) {
    std::fprintf(stderr, "gqa-client: --max-tokens must be >= 0, --temperature >= 0, --timeout > 0\n");
    return 2;
  }
  auto channel = grpc::CreateChannel(f.Get("server"), grpc::InsecureChannelCredentials());
  auto stub = gqa::v1::Generation::NewStub(channel);
  grpc::ClientContext ctx;
  const double timeout = *timeout_s;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(int64_t(timeout * 1000)));
  if (f.Has("api-key")) ctx.AddMetadata("authorization", "Bearer " + f.Get("api-key"));
  if (f.GetBool("info")) {
    gqa::v1::ModelInfo info;
    grpc::Status st = stub->GetModelInfo(&ctx, gqa::v1::GetModelInfoRequest(), &info);
    if (!st.ok()) {
      std::fprintf(stderr, "gqa-client: %s\n", st.error_message().c_str());
      return 1;
    }
    std::printf("%s\n", info.Utf8DebugString().c_str());  // text as UTF-8, not octal escapes
    return 0;
  }
  gqa::v1::GenerateRequest req;
  if (f.Has("prompt-ids")) {
    auto ids = f.GetIntList("prompt-ids");
    if (!ids.ok()) {
      std::fprintf(stderr, "gqa-client: %s\n", std::string(ids.status().message()).c_str());
      return 2;
    }
    for (int id : *ids) req.mutable_token_ids()->add_ids(id);
  } else {
    req.set_text(f.Get("prompt"));
  }
  req.set_max_tokens(static_cast<uint32_t>(*max_tokens));
  req.mutable_sampling()->set_temperature(static_cast<float>(*temperature));
  grpc::Status st;
  if (f.GetBool("stream")) {
    auto reader = stub->GenerateStream(&ctx, req);
    gqa::v1::GenerateStreamResponse m;
    while (reader->Read(&m)) {
      std::fputs(m.text().c_str(), stdout);
      std::fflush(stdout);
      if (m.finish_reason() != gqa::v1::FINISH_REASON_UNSPECIFIED) {
        std::printf("\n[finish_reason=%s, completion_tokens=%u]\n", gqa::v1::FinishReason_Name(m.finish_reason()).c_str(),
                    m.usage().completion_tokens());
      }
    }
    st = reader->Finish();
  } else {
    gqa::v1::GenerateResponse resp;
    st = stub->Generate(&ctx, req, &resp);
    if (st.ok()) std::printf("%s\n", resp.Utf8DebugString().c_str());
  }
  if (!st.ok()) {
    std::fprintf(stderr, "gqa-client: %s (code %d)\n", st.error_message().c_str(), int(st.error_code()));
    return 1;
  }
  return 0;
}
