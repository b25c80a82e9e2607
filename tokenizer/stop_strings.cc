// StopStringMatcher: see stop_strings.h.
#include "tokenizer/stop_strings.h"

#include <algorithm>

#include "tokenizer/unicode.h"

namespace gqa {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (auto& s : stops)
    if (!s.empty()) stops_.push_back(std::move(s));
  for (const auto& s : stops_) max_len_ = std::max(max_len_, s.size());
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view delta) {
  Result r;
  if (stopped_) {
    r.stopped = true;
    return r;
  }
  held_.append(delta);
  // Earliest occurrence of any stop string in the held text. Text before the
  // held part was checked already and cannot contain the start of a match.
  size_t best = std::string::npos;
  for (size_t k = 0; k < stops_.size(); ++k) {
    const size_t pos = held_.find(stops_[k]);
    if (pos == std::string::npos) continue;
    if (pos < best || (pos == best && stops_[k].size() > stops_[r.stop_index].size())) {
      best = pos;
      r.stop_index = static_cast<int>(k);
    }
  }
  if (best != std::string::npos) {
    r.text = held_.substr(0, best);
    r.stopped = stopped_ = true;
    held_.clear();
    return r;
  }
  // Hold the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_) {
    for (size_t len = std::min(s.size() - 1, held_.size()); len > hold; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        hold = len;
        break;
      }
    }
  }
  // Never split a UTF-8 character: widen the held part to a character start.
  size_t cut = held_.size() - hold;
  while (cut > 0 && cut < held_.size() && (static_cast<unsigned char>(held_[cut]) & 0xC0) == 0x80) --cut;
  r.text = held_.substr(0, cut);
  held_.erase(0, cut);
  return r;
}

std::string StopStringMatcher::Finish() {
  if (stopped_) return "";
  return std::exchange(held_, "");
}

}  // namespace gqa
