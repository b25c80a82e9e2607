#include "worker/shard_plan.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace gqa {

int KvHeadsTouched(int begin, int end, int g) {
  if (end <= begin) return 0;
  return (end + g - 1) / g - begin / g;
}

int ShardPlan::KvHeadsHeld() const {
  int n = 0;
  for (const RankShard& r : ranks) n += r.num_kv_heads();
  return n;
}

absl::StatusOr<ShardPlan> MakeShardPlan(int H, int K, int T, int intermediate, int vocab) {
  const std::string layout = absl::StrCat("H=", H, " query heads, K=", K, " KV heads, T=", T, " ranks");
  if (H <= 0 || K <= 0 || T <= 0) return absl::InvalidArgumentError(absl::StrCat(layout, ": all must be positive"));
  if (H % K != 0) return absl::InvalidArgumentError(absl::StrCat(layout, ": K must divide H"));
  if (T > H) {
    return absl::InvalidArgumentError(absl::StrCat(layout, ": more ranks than query heads; use T <= ", H));
  }
  if (intermediate < T) {
    return absl::InvalidArgumentError(absl::StrCat("intermediate size ", intermediate, " cannot be split over T=", T, " ranks"));
  }
  if (vocab < T) return absl::InvalidArgumentError(absl::StrCat("vocabulary ", vocab, " cannot be split over T=", T, " ranks"));

  const int g = H / K, lo = H / T, extra = H % T;  // `extra` ranks get lo + 1 heads
  // cost[r][c]: fewest KV heads held by ranks r.. when c ranks before r got
  // lo + 1 heads (so rank r starts at head r * lo + c).
  constexpr int kInf = std::numeric_limits<int>::max() / 2;
  std::vector<std::vector<int>> cost(T + 1, std::vector<int>(extra + 1, kInf));
  std::vector<std::vector<bool>> take_big(T + 1, std::vector<bool>(extra + 1, false));
  cost[T][extra] = 0;
  for (int r = T - 1; r >= 0; --r) {
    for (int c = std::max(0, extra - (T - r)); c <= std::min(extra, r); ++c) {
      const int start = r * lo + c;
      int best = kInf;
      bool big = false;
      if (c < extra && cost[r + 1][c + 1] < kInf) {
        best = KvHeadsTouched(start, start + lo + 1, g) + cost[r + 1][c + 1];
        big = true;
      }
      if (cost[r + 1][c] < kInf) {
        const int small = KvHeadsTouched(start, start + lo, g) + cost[r + 1][c];
        if (small < best) {  // ties: the larger range first, like an even split
          best = small;
          big = false;
        }
      }
      cost[r][c] = best;
      take_big[r][c] = big;
    }
  }
  ShardPlan plan;
  plan.num_q_heads = H;
  plan.num_kv_heads = K;
  plan.num_ranks = T;
  for (int r = 0, c = 0, start = 0; r < T; ++r) {
    RankShard s;
    const int size = take_big[r][c] ? lo + 1 : lo;
    c += take_big[r][c] ? 1 : 0;
    s.q_head_begin = start;
    s.q_head_end = start + size;
    start += size;
    s.kv_head_begin = s.q_head_begin / g;
    s.kv_head_end = (s.q_head_end + g - 1) / g;
    s.mlp_begin = int(int64_t{intermediate} * r / T);
    s.mlp_end = int(int64_t{intermediate} * (r + 1) / T);
    s.vocab_begin = int(int64_t{vocab} * r / T);
    s.vocab_end = int(int64_t{vocab} * (r + 1) / T);
    plan.ranks.push_back(s);
  }
  return plan;
}

}  // namespace gqa
