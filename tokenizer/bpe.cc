// BPE encoding, following Hugging Face tokenizers' BPE::merge_word and
// Word::merge_all: always apply the lowest-rank merge, leftmost first.
#include "tokenizer/bpe.h"

#include <mutex>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tokenizer/unicode.h"

namespace gqa {
namespace {

absl::StatusOr<std::string> OptString(const nlohmann::json& m, const char* key) {
  if (!m.contains(key) || m[key].is_null()) return std::string();
  if (!m[key].is_string()) return absl::InvalidArgumentError(absl::StrCat("model BPE: \"", key, "\" must be a string"));
  return m[key].get<std::string>();
}

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const nlohmann::json& m) {
  if (!m.is_object()) return absl::InvalidArgumentError("model: expected an object");
  const std::string type = m.contains("type") && m["type"].is_string() ? m["type"].get<std::string>() : "BPE";
  if (type != "BPE") {
    return absl::UnimplementedError(absl::StrCat("unsupported model type \"", type, "\" (only BPE is supported)"));
  }
  if (m.contains("dropout") && !m["dropout"].is_null()) {
    const bool zero = m["dropout"].is_number() && m["dropout"].get<double>() == 0.0;
    if (!zero) return absl::UnimplementedError("model BPE: dropout is not supported");
  }
  auto model = std::unique_ptr<BpeModel>(new BpeModel());
  if (!m.contains("vocab") || !m["vocab"].is_object()) return absl::InvalidArgumentError("model BPE: missing object \"vocab\"");
  const auto& vocab = m["vocab"];
  model->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("model BPE: vocab id of \"", it.key(), "\" is not an integer"));
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= (int64_t{1} << 30)) return absl::InvalidArgumentError(absl::StrCat("model BPE: vocab id ", id, " out of range"));
    model->vocab_[it.key()] = static_cast<TokenId>(id);
    if (static_cast<size_t>(id) >= model->id_to_token_.size()) {
      model->id_to_token_.resize(id + 1);
      model->has_id_.resize(id + 1, false);
    }
    model->id_to_token_[id] = it.key();
    model->has_id_[id] = true;
  }
  auto prefix = OptString(m, "continuing_subword_prefix");
  auto suffix = OptString(m, "end_of_word_suffix");
  auto unk = OptString(m, "unk_token");
  if (!prefix.ok()) return prefix.status();
  if (!suffix.ok()) return suffix.status();
  if (!unk.ok()) return unk.status();
  model->continuing_subword_prefix_ = *prefix;
  model->end_of_word_suffix_ = *suffix;
  if (!unk->empty()) {
    auto it = model->vocab_.find(*unk);
    if (it == model->vocab_.end()) return absl::InvalidArgumentError(absl::StrCat("model BPE: unk_token \"", *unk, "\" is not in the vocabulary"));
    model->unk_id_ = it->second;
  }
  auto flag = [&](const char* key) { return m.contains(key) && m[key].is_boolean() && m[key].get<bool>(); };
  model->fuse_unk_ = flag("fuse_unk");
  model->byte_fallback_ = flag("byte_fallback");
  model->ignore_merges_ = flag("ignore_merges");
  for (int b = 0; b < 256; ++b) model->byte_ids_[b] = model->TokenToId(absl::StrFormat("<0x%02X>", b));

  if (!m.contains("merges") || !m["merges"].is_array()) return absl::InvalidArgumentError("model BPE: missing array \"merges\"");
  const auto& merges = m["merges"];
  model->merges_.reserve(merges.size());
  const size_t plen = model->continuing_subword_prefix_.size();
  std::string merged;  // reused: a + b without b's subword prefix
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& mg = merges[rank];
    std::string_view a, b;
    if (mg.is_string()) {  // legacy "a b"
      const std::string& s = mg.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("model BPE: merge ", rank, " \"", s, "\" is not two tokens separated by one space"));
      }
      a = std::string_view(s).substr(0, sp);
      b = std::string_view(s).substr(sp + 1);
    } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
      a = mg[0].get_ref<const std::string&>();
      b = mg[1].get_ref<const std::string&>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("model BPE: merge ", rank, " is neither \"a b\" nor [a, b]"));
    }
    const TokenId ia = model->TokenToId(a), ib = model->TokenToId(b);
    if (ia < 0 || ib < 0) return absl::InvalidArgumentError(absl::StrCat("model BPE: merge ", rank, " uses a token not in the vocabulary: \"", AV(ia < 0 ? a : b), "\""));
    if (b.size() < plen) return absl::InvalidArgumentError(absl::StrCat("model BPE: merge ", rank, " is shorter than the subword prefix"));
    merged.assign(a);
    merged.append(b.substr(plen));
    const TokenId inew = model->TokenToId(merged);
    if (inew < 0) return absl::InvalidArgumentError(absl::StrCat("model BPE: merge ", rank, " produces \"", merged, "\", which is not in the vocabulary"));
    model->merges_[PairKey(ia, ib)] = MergeTarget{static_cast<uint32_t>(rank), inew};  // later duplicates win, as in HF
  }
  return model;
}

const std::string* BpeModel::IdToToken(TokenId id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

TokenId BpeModel::TokenToId(std::string_view token) const {
  auto it = vocab_.find(AV(token));
  return it == vocab_.end() ? -1 : it->second;
}

void BpeModel::ClearCache() {
  std::unique_lock lock(cache_mu_);
  cache_.clear();
}

void BpeModel::EncodeWord(std::string_view word, std::vector<TokenId>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(AV(word));
    if (it != vocab_.end()) {
      ids->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mu_);
    auto it = cache_.find(AV(word));
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<TokenId> result = MergeWord(word);
  ids->insert(ids->end(), result.begin(), result.end());
  if (cacheable) {
    std::unique_lock lock(cache_mu_, std::try_to_lock);
    if (lock.owns_lock() && cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(result));
  }
}

std::vector<TokenId> BpeModel::MergeWord(std::string_view w) const {
  struct Symbol {
    TokenId id;
    int prev, next;
    uint32_t len;  // bytes; 0 once merged away
  };
  std::vector<Symbol> sym;
  sym.reserve(w.size());
  auto add = [&](TokenId id, uint32_t len) {
    const int n = static_cast<int>(sym.size());
    sym.push_back({id, n - 1, -1, len});
    if (n > 0) sym[n - 1].next = n;
  };
  std::string scratch;
  bool have_unk = false;
  uint32_t unk_len = 0;
  size_t i = 0;
  while (i < w.size()) {
    int n = Utf8CharLen(w, i);
    if (n == 0) n = 1;  // not reached: input is validated
    const bool first = i == 0, last = i + n == w.size();
    std::string_view ch = w.substr(i, n);
    std::string_view key = ch;
    if ((!first && !continuing_subword_prefix_.empty()) || (last && !end_of_word_suffix_.empty())) {
      scratch.clear();
      if (!first) scratch += continuing_subword_prefix_;
      scratch += ch;
      if (last) scratch += end_of_word_suffix_;
      key = scratch;
    }
    auto it = vocab_.find(AV(key));
    if (it != vocab_.end()) {
      if (have_unk) {
        add(unk_id_, unk_len);
        have_unk = false;
      }
      add(it->second, n);
    } else {
      bool done = false;
      if (byte_fallback_) {
        bool all = true;
        for (unsigned char c : key) all &= byte_ids_[c] >= 0;
        if (all) {
          for (unsigned char c : key) add(byte_ids_[c], 1);
          done = true;
        }
      }
      if (!done && unk_id_ >= 0) {
        if (have_unk && fuse_unk_) {
          unk_len += n;
        } else {
          if (have_unk) add(unk_id_, unk_len);
          have_unk = true;
          unk_len = n;
        }
      }
    }
    i += n;
  }
  if (have_unk) add(unk_id_, unk_len);

  struct Merge {
    int pos;
    uint32_t rank;
    TokenId new_id;
  };
  // Top of the queue: lowest rank, then lowest position.
  auto cmp = [](const Merge& a, const Merge& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  std::vector<Merge> storage;
  storage.reserve(sym.size());
  std::priority_queue<Merge, std::vector<Merge>, decltype(cmp)> queue(cmp, std::move(storage));
  for (size_t k = 0; k + 1 < sym.size(); ++k) {
    auto it = merges_.find(PairKey(sym[k].id, sym[k + 1].id));
    if (it != merges_.end()) queue.push({static_cast<int>(k), it->second.rank, it->second.new_id});
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next < 0) continue;
    const int next_pos = cur.next;
    const Symbol right = sym[next_pos];
    auto it = merges_.find(PairKey(cur.id, right.id));
    if (it == merges_.end() || it->second.new_id != top.new_id) continue;  // stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    sym[next_pos].len = 0;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      auto p = merges_.find(PairKey(sym[cur.prev].id, cur.id));
      if (p != merges_.end()) queue.push({cur.prev, p->second.rank, p->second.new_id});
    }
    if (cur.next >= 0) {
      auto p = merges_.find(PairKey(cur.id, sym[cur.next].id));
      if (p != merges_.end()) queue.push({top.pos, p->second.rank, p->second.new_id});
    }
  }
  std::vector<TokenId> out;
  for (const Symbol& s : sym)
    if (s.len != 0) out.push_back(s.id);
  return out;
}

}  // namespace gqa
