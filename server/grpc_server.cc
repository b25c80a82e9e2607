#include "server/grpc_server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/unknown_field_set.h>

#include <deque>

#include "absl/strings/str_cat.h"
#include "base/utf8.h"
#include "gqa/v1/gqa.grpc.pb.h"

namespace gqa {
namespace {

namespace pb = google::protobuf;

// Nested messages and groups a request may hold: the parser recurses once
// per level (as JSON bodies are held to their own 64).
constexpr int kMaxMessageDepth = 64;

// Parses `bytes` into `out` (a message or an unknown-field set) with the
// recursion limit above.
template <typename T>
bool ParseLimited(const std::string& bytes, T* out) {
  pb::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()), static_cast<int>(bytes.size()));
  in.SetRecursionLimit(kMaxMessageDepth);
  return out->ParseFromCodedStream(&in);
}

// The string field (dotted path) of `bytes` that is not UTF-8, or "".
std::string NonUtf8Field(const std::string& bytes, const pb::Descriptor& d, const std::string& prefix) {
  pb::UnknownFieldSet fields;
  if (!ParseLimited(bytes, &fields)) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const pb::UnknownField& u = fields.field(i);
    const pb::FieldDescriptor* f = d.FindFieldByNumber(u.number());
    if (f == nullptr || u.type() != pb::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    if (f->type() == pb::FieldDescriptor::TYPE_STRING && !IsUtf8(u.length_delimited())) return prefix + f->name();
    if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      const std::string inner = NonUtf8Field(u.length_delimited(), *f->message_type(), prefix + f->name() + ".");
      if (!inner.empty()) return inner;
    }
  }
  return "";
}

// Parses a request from the wire; a message that does not decode is
// INVALID_ARGUMENT saying why (the library would answer UNIMPLEMENTED).
template <typename Msg>
absl::Status DecodeBytes(const std::string& bytes, Msg* out) {
  // Checked first: the parser would log an error line for each such request.
  const std::string field = NonUtf8Field(bytes, *Msg::descriptor(), "");
  if (!field.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("field '", field, "' is not valid UTF-8 (string fields must be)"));
  }
  if (ParseLimited(bytes, out)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("the request is not a valid protobuf encoding of ", Msg::descriptor()->full_name(),
                   " (or nests messages deeper than ", kMaxMessageDepth, " levels)"));
}

template <typename Msg>
absl::Status Decode(const grpc::ByteBuffer& in, Msg* out) {
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return absl::InvalidArgumentError("the request message cannot be read");
  std::string bytes;
  for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return DecodeBytes(bytes, out);
}

template <typename Msg>
void Encode(const Msg& m, grpc::ByteBuffer* out) {
  const std::string bytes = m.SerializeAsString();
  grpc::Slice slice(bytes);
  *out = grpc::ByteBuffer(&slice, 1);
}

grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  // absl and gRPC share the canonical code numbers.
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kAborted: return v1::FINISH_REASON_ABORTED;
    default: return v1::FINISH_REASON_UNSPECIFIED;
  }
}

absl::StatusOr<ApiRequest> FromProto(const v1::GenerateRequest& p, int max_model_len) {
  ApiRequest r;
  r.request_id = p.request_id();
  if (p.has_text()) {
    r.prompt_text = p.text();
  } else if (p.has_token_ids()) {
    r.prompt_ids.assign(p.token_ids().ids().begin(), p.token_ids().ids().end());
  } else {
    return absl::InvalidArgumentError("the request has no prompt (text or token_ids)");
  }
  r.add_special_tokens = !p.has_add_special_tokens() || p.add_special_tokens();
  const uint32_t max_tokens = p.max_tokens() == 0 ? 16 : p.max_tokens();
  if (max_tokens > uint32_t(max_model_len)) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens ", max_tokens, " exceeds the maximum model length ", max_model_len));
  }
  r.gen.max_tokens = static_cast<int>(max_tokens);
  const v1::SamplingParams& s = p.sampling();
  SamplingParams& o = r.gen.sampling;
  o.temperature = s.has_temperature() ? s.temperature() : 1.0;
  o.top_k = s.top_k();
  o.top_p = s.has_top_p() ? s.top_p() : 1.0;
  o.min_p = s.min_p();
  if (s.has_seed()) o.seed = s.seed();
  o.presence_penalty = s.presence_penalty();
  o.frequency_penalty = s.frequency_penalty();
  o.repetition_penalty = s.has_repetition_penalty() ? s.repetition_penalty() : 1.0;
  o.logprobs = s.logprobs();
  for (const std::string& stop : p.stop()) {
    if (stop.empty()) return absl::InvalidArgumentError("stop strings must not be empty");
    r.stop.push_back(stop);
  }
  r.gen.stop_token_ids.assign(p.stop_token_ids().begin(), p.stop_token_ids().end());
  r.gen.ignore_eos = p.ignore_eos();
  r.gen.cache_salt = p.cache_salt();
  return r;
}

// The status of a call whose request ended: errors map to their codes; an
// abort caused by the client (deadline or cancel) says which.
grpc::Status FinalStatus(const FinalResult& f, grpc::CallbackServerContext* ctx) {
  if (f.reason == FinishReason::kError) return ToGrpc(f.error);
  if (f.reason == FinishReason::kAborted && ctx->IsCancelled()) {
    return std::chrono::system_clock::now() >= ctx->deadline()
               ? grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the deadline passed; generation was aborted")
               : grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled; generation was aborted");
  }
  return grpc::Status::OK;
}

template <typename Msg>
void AddTokens(const std::vector<SampledToken>& tokens, bool with_logprobs, Msg* m) {
  for (const SampledToken& t : tokens) {
    m->add_token_ids(t.token);
    if (!with_logprobs) continue;
    v1::TokenLogprob* lp = m->add_logprobs();
    lp->set_token_id(t.token);
    lp->set_logprob(t.logprob);
    for (const auto& [id, l] : t.top_logprobs) {
      v1::TopLogprob* top = lp->add_top_logprobs();
      top->set_token_id(id);
      top->set_logprob(l);
    }
  }
}

}  // namespace

// Every method takes and returns raw bytes, so that a request that does not
// decode gets INVALID_ARGUMENT with a reason.
using RawService = v1::Generation::WithRawCallbackMethod_Generate<v1::Generation::WithRawCallbackMethod_GenerateStream<
    v1::Generation::WithRawCallbackMethod_Tokenize<v1::Generation::WithRawCallbackMethod_Detokenize<
        v1::Generation::WithRawCallbackMethod_GetModelInfo<v1::Generation::Service>>>>>;

class GrpcServer::Service final : public RawService {
 public:
  Service(Frontend* fe, std::string api_key) : fe_(fe), api_key_(std::move(api_key)) {}

  grpc::Status Authorize(grpc::CallbackServerContext* ctx) const {
    if (api_key_.empty()) return grpc::Status::OK;
    const auto& md = ctx->client_metadata();
    auto it = md.find("authorization");
    if (it == md.end() || !BearerMatches(absl::string_view(it->second.data(), it->second.size()), api_key_)) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing or invalid API key (metadata 'authorization: Bearer <key>')");
    }
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* Generate(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                     grpc::ByteBuffer* out) override {
    class Reactor final : public grpc::ServerUnaryReactor {
     public:
      Reactor(Frontend* fe, grpc::CallbackServerContext* ctx) : fe_(fe), ctx_(ctx) {}
      void Begin(absl::StatusOr<ApiRequest> r, grpc::ByteBuffer* out) {
        if (!r.ok()) return Finish(ToGrpc(r.status()));
        const bool logprobs = r->gen.sampling.logprobs > 0;
        absl::StatusOr<int64_t> id = fe_->Start(std::move(*r), nullptr, [this, out, logprobs](const FinalResult& f) {
          v1::GenerateResponse resp;
          resp.set_text(f.text);
          AddTokens(f.tokens, logprobs, &resp);
          resp.set_finish_reason(ToProto(f.reason));
          resp.mutable_usage()->set_prompt_tokens(f.prompt_tokens);
          resp.mutable_usage()->set_completion_tokens(f.completion_tokens);
          resp.mutable_usage()->set_cached_tokens(f.cached_tokens);
          Encode(resp, out);
          Finish(FinalStatus(f, ctx_));
        });
        if (!id.ok()) return Finish(ToGrpc(id.status()));
        std::lock_guard<std::mutex> lock(mu_);
        id_ = *id;
        if (cancelled_) fe_->Cancel(id_);
      }
      void OnCancel() override {
        std::lock_guard<std::mutex> lock(mu_);
        cancelled_ = true;
        if (id_ >= 0) fe_->Cancel(id_);
      }
      void OnDone() override { delete this; }

     private:
      Frontend* fe_;
      grpc::CallbackServerContext* ctx_;
      std::mutex mu_;
      int64_t id_ = -1;
      bool cancelled_ = false;
    };
    auto* reactor = new Reactor(fe_, ctx);
    if (grpc::Status auth = Authorize(ctx); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    reactor->Begin(Parse(*raw), out);
    return reactor;
  }

  // Decodes and converts a generation request.
  absl::StatusOr<ApiRequest> Parse(const grpc::ByteBuffer& raw) const {
    v1::GenerateRequest req;
    if (absl::Status st = Decode(raw, &req); !st.ok()) return st;
    return FromProto(req, fe_->info().max_model_len);
  }

  grpc::ServerWriteReactor<grpc::ByteBuffer>* GenerateStream(grpc::CallbackServerContext* ctx,
                                                             const grpc::ByteBuffer* raw) override {
    class Reactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
     public:
      Reactor(Frontend* fe, grpc::CallbackServerContext* ctx) : fe_(fe), ctx_(ctx) {}
      void Begin(absl::StatusOr<ApiRequest> r) {
        if (!r.ok()) return Finish(ToGrpc(r.status()));
        const bool logprobs = r->gen.sampling.logprobs > 0;
        absl::StatusOr<int64_t> id = fe_->Start(
            std::move(*r),
            [this, logprobs](const StreamDelta& d) {
              v1::GenerateStreamResponse m;
              m.set_text(d.text);
              AddTokens(d.tokens, logprobs, &m);
              Enqueue(m, std::nullopt);
            },
            [this](const FinalResult& f) {
              v1::GenerateStreamResponse m;
              m.set_finish_reason(ToProto(f.reason));
              m.mutable_usage()->set_prompt_tokens(f.prompt_tokens);
              m.mutable_usage()->set_completion_tokens(f.completion_tokens);
              m.mutable_usage()->set_cached_tokens(f.cached_tokens);
              Enqueue(m, FinalStatus(f, ctx_));
            });
        if (!id.ok()) return Finish(ToGrpc(id.status()));
        std::lock_guard<std::mutex> lock(mu_);
        id_ = *id;
        if (cancelled_) fe_->Cancel(id_);
      }
      void OnWriteDone(bool ok) override {
        std::lock_guard<std::mutex> lock(mu_);
        writing_ = false;
        if (!ok) {  // the stream broke: stop writing, abort the request
          broken_ = true;
          if (id_ >= 0) fe_->Cancel(id_);
        }
        Pump();
      }
      void OnCancel() override {
        std::lock_guard<std::mutex> lock(mu_);
        cancelled_ = true;
        if (id_ >= 0) fe_->Cancel(id_);
      }
      void OnDone() override { delete this; }

     private:
      // Queues a message (and, for the last one, the final status).
      void Enqueue(const v1::GenerateStreamResponse& m, std::optional<grpc::Status> final_status) {
        grpc::ByteBuffer bytes;
        Encode(m, &bytes);
        std::lock_guard<std::mutex> lock(mu_);
        queue_.push_back(std::move(bytes));
        if (final_status) final_ = *final_status;
        Pump();
      }
      // One write in flight at a time; Finish after the last.
      void Pump() {
        if (writing_ || finished_) return;
        if (broken_ || (final_ && !final_->ok())) {
          if (final_) {
            finished_ = true;
            Finish(*final_);
          }
          return;
        }
        if (!queue_.empty()) {
          current_ = std::move(queue_.front());
          queue_.pop_front();
          writing_ = true;
          StartWrite(&current_);
          return;
        }
        if (final_) {
          finished_ = true;
          Finish(*final_);
        }
      }

      Frontend* fe_;
      grpc::CallbackServerContext* ctx_;
      std::mutex mu_;
      std::deque<grpc::ByteBuffer> queue_;
      grpc::ByteBuffer current_;
      std::optional<grpc::Status> final_;
      bool writing_ = false, finished_ = false, broken_ = false, cancelled_ = false;
      int64_t id_ = -1;
    };
    auto* reactor = new Reactor(fe_, ctx);
    if (grpc::Status auth = Authorize(ctx); !auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    reactor->Begin(Parse(*raw));
    return reactor;
  }

  // A unary call answered at once: authorization, decoding, then `fill`'s status.
  template <typename Req, typename Resp>
  grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw, grpc::ByteBuffer* out,
                                   const std::function<absl::Status(const Req&, Resp*)>& fill) {
    auto* reactor = ctx->DefaultReactor();
    grpc::Status auth = Authorize(ctx);
    if (!auth.ok()) {
      reactor->Finish(auth);
      return reactor;
    }
    Req req;
    Resp resp;
    absl::Status st = Decode(*raw, &req);
    if (st.ok()) st = fill(req, &resp);
    if (st.ok()) Encode(resp, out);
    reactor->Finish(ToGrpc(st));
    return reactor;
  }

  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                     grpc::ByteBuffer* out) override {
    return Answer<v1::TokenizeRequest, v1::TokenizeResponse>(
        ctx, raw, out, [&](const v1::TokenizeRequest& req, v1::TokenizeResponse* resp) {
          absl::StatusOr<std::vector<int32_t>> ids =
              fe_->Tokenize(req.text(), !req.has_add_special_tokens() || req.add_special_tokens());
          if (ids.ok()) {
            for (int32_t id : *ids) resp->add_token_ids(id);
          }
          return ids.status();
        });
  }

  grpc::ServerUnaryReactor* Detokenize(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                       grpc::ByteBuffer* out) override {
    return Answer<v1::DetokenizeRequest, v1::DetokenizeResponse>(
        ctx, raw, out, [&](const v1::DetokenizeRequest& req, v1::DetokenizeResponse* resp) {
          absl::StatusOr<std::string> text = fe_->Detokenize({req.token_ids().begin(), req.token_ids().end()});
          if (text.ok()) resp->set_text(*text);
          return text.status();
        });
  }

  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* raw,
                                         grpc::ByteBuffer* out) override {
    return Answer<v1::GetModelInfoRequest, v1::ModelInfo>(
        ctx, raw, out, [&](const v1::GetModelInfoRequest&, v1::ModelInfo* resp) {
          const ModelInfo& i = fe_->info();
          resp->set_name(i.name);
          resp->set_architecture(i.architecture);
          resp->set_num_attention_heads(i.num_q_heads);
          resp->set_num_key_value_heads(i.num_kv_heads);
          resp->set_head_dim(i.head_dim);
          resp->set_num_layers(i.num_layers);
          resp->set_vocab_size(i.vocab_size);
          resp->set_tensor_parallel_size(i.tp);
          resp->set_kv_replication_factor(i.kv_replication_factor);
          resp->set_max_model_len(i.max_model_len);
          resp->set_has_tokenizer(i.has_tokenizer);
          return absl::OkStatus();
        });
  }

 private:
  Frontend* fe_;
  std::string api_key_;
};

absl::StatusOr<ApiRequest> DecodeGenerateRequest(const std::string& bytes, int max_model_len) {
  v1::GenerateRequest req;
  RETURN_IF_ERROR(DecodeBytes(bytes, &req));
  return FromProto(req, max_model_len);
}

GrpcServer::GrpcServer(const GrpcOptions& options, Frontend* frontend)
    : options_(options), frontend_(frontend), service_(std::make_unique<Service>(frontend, options.api_key)) {}

GrpcServer::~GrpcServer() { Shutdown(); }

absl::Status GrpcServer::Start() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(options_.host, ":", options_.port), grpc::InsecureServerCredentials(), &port_);
  // gRPC sets SO_REUSEPORT by default: a second server would share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot bind gRPC on ", options_.host, ":", options_.port, " (is another server using the port?)"));
  }
  server_->GetHealthCheckService()->SetServingStatus(true);
  return absl::OkStatus();
}

void GrpcServer::SetNotServing() {
  if (server_) server_->GetHealthCheckService()->SetServingStatus(false);
}

void GrpcServer::Shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server_->Wait();
  server_.reset();
}

}  // namespace gqa
