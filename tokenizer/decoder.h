// tokenizer.json "decoder" components (ByteLevel, Metaspace, Replace,
// ByteFallback, Fuse, Strip, Sequence) as a streaming pipeline: tokens go in
// one or more at a time, text comes out, and the concatenated output always
// equals Hugging Face's decode_chain(all tokens) joined. Decode() is just
// the stream fed everything at once.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace gqa {

// One stage of the chain; stateful per stream.
class DecoderStage {
 public:
  virtual ~DecoderStage() = default;
  // Takes token strings, returns the strings the next stage receives.
  virtual std::vector<std::string> Push(std::vector<std::string> tokens) = 0;
  // End of stream: returns whatever was held back.
  virtual std::vector<std::string> Flush() { return {}; }
};

// A decoder configuration; makes fresh streams.
class DecoderSpec {
 public:
  // Null JSON: tokens are joined with " " (HF's behaviour without a decoder).
  static absl::StatusOr<std::unique_ptr<DecoderSpec>> FromJson(const nlohmann::json& j);

  class Stream {
   public:
    // Returns final text (valid UTF-8, never a partial character).
    std::string Push(std::vector<std::string> tokens);
    std::string Finish();

   private:
    friend class DecoderSpec;
    std::vector<std::unique_ptr<DecoderStage>> stages_;
    bool join_with_space_ = false;
    bool any_ = false;
  };
  Stream NewStream() const;

  // Whole-sequence decode of token strings.
  std::string Decode(std::vector<std::string> tokens) const;

  struct StageConfig;  // parsed form of one component
  ~DecoderSpec();

 private:
  DecoderSpec() = default;
  std::vector<std::unique_ptr<StageConfig>> configs_;
  bool no_decoder_ = false;
};

}  // namespace gqa
