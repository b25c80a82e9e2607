// Stop strings for streamed generation: text deltas go in, the text that is
// safe to send comes out. Text that could still become a stop string is held;
// when one appears, the text before it is released and the stream stops.
// The stop string itself is never returned, even if it spans many tokens.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gqa {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string was found; ignore further input
    int stop_index = -1;   // which one (earliest in the text; longest on a tie)
  };
  // `delta` must be whole UTF-8 characters (as StreamDetokenizer produces).
  Result Push(std::string_view delta);
  // End of generation without a stop: releases what was held.
  std::string Finish();

 private:
  std::vector<std::string> stops_;
  size_t max_len_ = 0;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace gqa
