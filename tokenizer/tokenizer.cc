// Tokenizer: loading and the encode pipeline (added tokens -> normalizer ->
// pre-tokenizer -> BPE -> post-processor), as in HF tokenizers.
#include "tokenizer/tokenizer.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/unicode.h"
#include "base/json_depth.h"

namespace gqa {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// bos_token / eos_token: a string, an AddedToken object, or null.
std::string TokenField(const nlohmann::json& cfg, const char* key) {
  if (!cfg.contains(key)) return "";
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

absl::Status Annotate(const absl::Status& s, std::string_view where) {
  return absl::Status(s.code(), absl::StrCat(AV(where), ": ", s.message()));
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& dir) {
  auto tj = ReadFile(dir + "/tokenizer.json");
  if (!tj.ok()) return tj.status();
  std::string config;
  auto cj = ReadFile(dir + "/tokenizer_config.json");
  if (cj.ok()) config = std::move(*cj);
  auto tok = FromJson(*tj, config);
  if (!tok.ok()) return Annotate(tok.status(), dir);
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(std::string_view tokenizer_json,
                                                               std::string_view config_json) {
  // The parser and the walks below recurse once per level.
  if (JsonDeeperThan(tokenizer_json)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: nested deeper than ", kMaxJsonDepth, " levels"));
  }
  if (JsonDeeperThan(config_json)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json: nested deeper than ", kMaxJsonDepth, " levels"));
  }
  nlohmann::json j, cfg;
  try {
    j = nlohmann::json::parse(tokenizer_json);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json is not valid JSON: ", e.what()));
  }
  try {
    if (!config_json.empty()) cfg = nlohmann::json::parse(config_json);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer_config.json is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return absl::InvalidArgumentError("tokenizer.json: top level is not an object");
  if (!cfg.is_null() && !cfg.is_object()) return absl::InvalidArgumentError("tokenizer_config.json: top level is not an object");
  auto tok = std::unique_ptr<Tokenizer>(new Tokenizer());
  try {
    static const char* kKnown[] = {"version", "truncation", "padding", "added_tokens", "normalizer",
                                   "pre_tokenizer", "post_processor", "decoder", "model"};
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool known = false;
      for (const char* k : kKnown) known |= it.key() == k;
      if (!known) return absl::UnimplementedError(absl::StrCat("tokenizer.json: unsupported component \"", it.key(), "\""));
    }
    if (j.contains("truncation") && !j["truncation"].is_null()) {
      return absl::UnimplementedError("tokenizer.json: truncation is not supported (set it to null)");
    }
    if (!j.contains("model")) return absl::InvalidArgumentError("tokenizer.json: missing \"model\"");
    auto model = BpeModel::FromJson(j["model"]);
    if (!model.ok()) return Annotate(model.status(), "tokenizer.json");
    tok->model_ = std::move(*model);
    auto added = AddedVocabulary::FromJson(j.value("added_tokens", nlohmann::json()));
    if (!added.ok()) return Annotate(added.status(), "tokenizer.json");
    tok->added_ = std::move(*added);
    auto norm = MakeNormalizer(j.value("normalizer", nlohmann::json()));
    if (!norm.ok()) return Annotate(norm.status(), "tokenizer.json");
    tok->normalizer_ = std::move(*norm);
    auto pre = MakePreTokenizer(j.value("pre_tokenizer", nlohmann::json()));
    if (!pre.ok()) return Annotate(pre.status(), "tokenizer.json");
    tok->pre_tokenizer_ = std::move(*pre);
    auto dec = DecoderSpec::FromJson(j.value("decoder", nlohmann::json()));
    if (!dec.ok()) return Annotate(dec.status(), "tokenizer.json");
    tok->decoder_ = std::move(*dec);
    absl::Status s = tok->ParsePostProcessor(j.value("post_processor", nlohmann::json()));
    if (!s.ok()) return Annotate(s, "tokenizer.json");

    if (cfg.is_object()) {
      tok->bos_token_ = TokenField(cfg, "bos_token");
      tok->eos_token_ = TokenField(cfg, "eos_token");
      if (cfg.contains("chat_template") && !cfg["chat_template"].is_null()) {
        std::string source;
        const auto& ct = cfg["chat_template"];
        if (ct.is_string()) {
          source = ct.get<std::string>();
        } else if (ct.is_array()) {  // [{"name": ..., "template": ...}]: use "default"
          for (const auto& e : ct)
            if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
              source = e["template"].get<std::string>();
          if (source.empty()) return absl::UnimplementedError("tokenizer_config.json: chat_template list has no \"default\" entry");
        } else {
          return absl::InvalidArgumentError("tokenizer_config.json: chat_template must be a string or a list");
        }
        auto t = ChatTemplate::Compile(source);
        if (!t.ok()) return Annotate(t.status(), "tokenizer_config.json: chat_template");
        tok->chat_template_ = std::move(*t);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer file has an unexpected structure: ", e.what()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("tokenizer files could not be read: ", e.what()));
  }
  return tok;
}

absl::Status Tokenizer::ParsePostProcessor(const nlohmann::json& j) {
  if (j.is_null()) return absl::OkStatus();
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return absl::InvalidArgumentError("post_processor: expected an object with a string \"type\"");
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "ByteLevel") return absl::OkStatus();  // only changes offsets
  if (type == "Sequence") {
    if (!j.contains("processors") || !j["processors"].is_array()) return absl::InvalidArgumentError("post_processor Sequence: missing array \"processors\"");
    for (const auto& p : j["processors"]) {
      absl::Status s = ParsePostProcessor(p);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return absl::UnimplementedError(absl::StrCat("unsupported post_processor type \"", type, "\""));
  }
  if (!post_prefix_.empty() || !post_suffix_.empty()) return absl::UnimplementedError("post_processor: more than one TemplateProcessing");
  if (!j.contains("single") || !j["single"].is_array()) return absl::InvalidArgumentError("post_processor TemplateProcessing: missing array \"single\"");
  const auto& specials = j.value("special_tokens", nlohmann::json::object());
  bool seen_a = false;
  for (const auto& piece : j["single"]) {
    if (piece.contains("Sequence")) {
      if (seen_a) return absl::InvalidArgumentError("post_processor TemplateProcessing: $A twice in \"single\"");
      seen_a = true;
    } else if (piece.contains("SpecialToken") && piece["SpecialToken"].contains("id")) {
      const std::string name = piece["SpecialToken"]["id"].get<std::string>();
      if (!specials.contains(name) || !specials[name].contains("ids") || !specials[name]["ids"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat("post_processor TemplateProcessing: special token \"", name, "\" has no ids"));
      }
      for (const auto& id : specials[name]["ids"]) {
        if (!id.is_number_integer()) return absl::InvalidArgumentError("post_processor TemplateProcessing: ids must be integers");
        (seen_a ? post_suffix_ : post_prefix_).push_back(id.get<TokenId>());
      }
    } else {
      return absl::InvalidArgumentError("post_processor TemplateProcessing: unknown piece in \"single\"");
    }
  }
  return absl::OkStatus();
}

absl::Status Tokenizer::EncodeText(std::string_view text, bool first, bool skip_special,
                                   std::vector<TokenId>* ids) const {
  std::string normalized = normalizer_ ? normalizer_->Normalize(text) : std::string(text);
  std::vector<Segment> segs;
  if (added_.has_normalized()) {
    added_.Split(normalized, /*normalized=*/true, skip_special, &segs);
  } else if (!normalized.empty()) {
    segs.push_back({normalized, -1});
  }
  std::vector<std::string> words;
  for (size_t k = 0; k < segs.size(); ++k) {
    if (segs[k].id >= 0) {
      ids->push_back(segs[k].id);
      continue;
    }
    words.clear();
    words.emplace_back(segs[k].text);
    if (pre_tokenizer_) {
      if (absl::Status st = pre_tokenizer_->Apply(&words, first && k == 0); !st.ok()) return st;
    }
    for (const std::string& w : words) model_->EncodeWord(w, ids);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TokenId>> Tokenizer::Encode(std::string_view text, const EncodeOptions& opts) const {
  absl::Status valid = ValidateUtf8(text, "input text");
  if (!valid.ok()) return valid;
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  if (opts.add_special_tokens) ids.insert(ids.end(), post_prefix_.begin(), post_prefix_.end());
  std::vector<Segment> segs;
  added_.Split(text, /*normalized=*/false, /*skip_special=*/!opts.parse_special_tokens, &segs,
               opts.literal_ranges.empty() ? nullptr : &opts.literal_ranges);
  const char* begin = text.data();
  for (const Segment& s : segs) {
    if (s.id >= 0) {
      ids.push_back(s.id);
      continue;
    }
    // A piece that overlaps a literal range matches no special token at all.
    const size_t from = s.text.data() - begin, to = from + s.text.size();
    bool literal = false;
    for (const auto& [b, e] : opts.literal_ranges) literal = literal || (b < to && from < e);
    if (absl::Status st = EncodeText(s.text, s.text.data() == begin, literal, &ids);
        !st.ok()) {
      return st;
    }
  }
  if (opts.add_special_tokens) ids.insert(ids.end(), post_suffix_.begin(), post_suffix_.end());
  return ids;
}

const std::string* Tokenizer::IdToToken(TokenId id) const {
  if (const AddedToken* a = added_.ById(id)) return &a->content;
  return model_->IdToToken(id);
}

TokenId Tokenizer::TokenToId(std::string_view token) const {
  if (token.empty()) return -1;
  TokenId id = added_.IdOf(token);
  return id >= 0 ? id : model_->TokenToId(token);
}

bool Tokenizer::IsSpecial(TokenId id) const {
  const AddedToken* a = added_.ById(id);
  return a != nullptr && a->special;
}

std::vector<std::string> Tokenizer::SpecialTokenTexts() const {
  std::vector<std::string> out;
  for (const AddedToken& a : added_.tokens()) {
    if (a.special) out.push_back(a.content);
  }
  return out;
}

size_t Tokenizer::VocabSize() const {
  size_t n = model_->VocabLimit();
  for (const AddedToken& a : added_.tokens()) n = std::max(n, static_cast<size_t>(a.id) + 1);
  return n;
}

absl::StatusOr<std::string> Tokenizer::Decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (TokenId id : ids) {
    const std::string* t = IdToToken(id);
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
    if (skip_special_tokens && IsSpecial(id)) continue;
    tokens.push_back(*t);
  }
  return decoder_->Decode(std::move(tokens));
}

}  // namespace gqa

namespace gqa {

absl::StatusOr<std::string> Tokenizer::ApplyChatTemplate(const nlohmann::ordered_json& vars) const {
  if (chat_template_ == nullptr) return absl::FailedPreconditionError("tokenizer_config.json has no chat_template");
  if (!vars.is_object()) return absl::InvalidArgumentError("chat template variables must be a JSON object");
  nlohmann::ordered_json v = vars;
  if (!v.contains("add_generation_prompt")) v["add_generation_prompt"] = false;
  if (!v.contains("bos_token")) v["bos_token"] = bos_token_;
  if (!v.contains("eos_token")) v["eos_token"] = eos_token_;
  return chat_template_->Render(v);
}

}  // namespace gqa
