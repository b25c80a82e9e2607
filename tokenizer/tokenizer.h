// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json): encode,
// decode, special tokens and the chat template. Thread-safe after loading.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/decoder.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pretokenizer.h"

namespace gqa {

class ChatTemplate;

struct EncodeOptions {
  // Apply the post-processor (e.g. Mistral's BOS), like HF add_special_tokens.
  bool add_special_tokens = false;
  // false: text such as "<|im_start|>" in the input is encoded as plain text,
  // the safe default for user input to an API. true: it becomes the special
  // token id (needed for rendered chat prompts; HF's default).
  bool parse_special_tokens = false;
  // Byte ranges [begin, end) of the input where special tokens are not
  // matched even with parse_special_tokens (e.g. chat message content).
  std::vector<std::pair<size_t, size_t>> literal_ranges;
};

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json and, if present, DIR/tokenizer_config.json;
  // compiles the chat template (an unsupported template fails here).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& dir);
  // Same from file contents; `config_json` may be empty.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                             std::string_view config_json);
  ~Tokenizer();

  // Invalid UTF-8 is InvalidArgument; ResourceExhausted if the regex engine
  // gives up (not seen in practice: long runs fall back from JIT to the heap).
  absl::StatusOr<std::vector<TokenId>> Encode(std::string_view text, const EncodeOptions& opts = {}) const;
  // Unknown ids are InvalidArgument.
  absl::StatusOr<std::string> Decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const;

  // Token string of an id (added or model vocabulary), or nullptr.
  const std::string* IdToToken(TokenId id) const;
  TokenId TokenToId(std::string_view token) const;
  bool IsSpecial(TokenId id) const;
  // The text of every special added token.
  std::vector<std::string> SpecialTokenTexts() const;
  size_t VocabSize() const;  // one past the largest id

  // From tokenizer_config.json ("" / -1 when absent).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  TokenId bos_id() const { return TokenToId(bos_token_); }
  TokenId eos_id() const { return TokenToId(eos_token_); }
  // nullptr when tokenizer_config.json has no chat_template.
  const ChatTemplate* chat_template() const { return chat_template_.get(); }
  // Renders the chat template like transformers' apply_chat_template(...,
  // tokenize=False): `vars` holds "messages" and optionally "tools",
  // "add_generation_prompt" (default false) and extra variables; bos_token and
  // eos_token come from tokenizer_config.json unless `vars` sets them.
  // FailedPrecondition when the config has no chat_template. Encode the
  // result with parse_special_tokens = true.
  absl::StatusOr<std::string> ApplyChatTemplate(const nlohmann::ordered_json& vars) const;

  const DecoderSpec& decoder() const { return *decoder_; }
  void ClearCache() { model_->ClearCache(); }

 private:
  Tokenizer() = default;
  absl::Status ParsePostProcessor(const nlohmann::json& j);
  absl::Status EncodeText(std::string_view text, bool first, bool skip_special, std::vector<TokenId>* ids) const;

  std::unique_ptr<BpeModel> model_;
  AddedVocabulary added_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<DecoderSpec> decoder_;
  // Post-processor for a single sequence: ids before and after it.
  std::vector<TokenId> post_prefix_, post_suffix_;
  std::string bos_token_, eos_token_;
  std::unique_ptr<ChatTemplate> chat_template_;
};

}  // namespace gqa
