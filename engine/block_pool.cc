#include "engine/block_pool.h"

#include <algorithm>
#include <random>

namespace gqa {
namespace {

// splitmix64's finaliser: every input bit reaches every output bit.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

BlockPool::BlockPool(int num_blocks, int block_size, bool caching)
    : num_blocks_(num_blocks), block_size_(block_size), caching_(caching), blocks_(num_blocks) {
  GQA_CHECK(num_blocks > 0 && block_size > 0, "a block pool needs blocks of at least one token");
  std::random_device rd;
  key_ = (uint64_t(rd()) << 32) ^ rd();
  plain_free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) plain_free_.push_back(b);  // low ids first
}

uint64_t BlockPool::RootHash(const std::string& salt) const {
  uint64_t h = Mix(key_ ^ 0x736f6d6570736575ull);
  for (unsigned char c : salt) h = Mix(h ^ c);
  return Mix(h ^ salt.size());
}

uint64_t BlockPool::ChainHash(uint64_t parent_hash, const int32_t* tokens) const {
  uint64_t h = Mix(parent_hash ^ key_);
  for (int i = 0; i < block_size_; ++i) h = Mix(h ^ uint32_t(tokens[i]));
  return h;
}

bool BlockPool::Follows(const Block& blk, int parent) const {
  return blk.parent == parent && (parent < 0 || blk.parent_gen == blocks_[parent].gen);
}

bool BlockPool::Holds(const Block& blk, int parent, const int32_t* tokens, const std::string& salt) const {
  return Follows(blk, parent) && std::equal(blk.tokens.begin(), blk.tokens.end(), tokens) &&
         (parent >= 0 || blk.salt == salt);
}

void BlockPool::Uncache(int b) {
  Block& blk = blocks_[b];
  if (!blk.cached) return;
  auto [lo, hi] = by_hash_.equal_range(blk.hash);
  for (auto it = lo; it != hi; ++it) {
    if (it->second == b) {
      by_hash_.erase(it);
      break;
    }
  }
  blk.cached = false;
  blk.parent = -1;
  blk.tokens.clear();
  blk.salt.clear();
}

int BlockPool::Allocate() {
  int b = -1;
  if (!plain_free_.empty()) {
    b = plain_free_.back();
    plain_free_.pop_back();
  } else if (!lru_.empty()) {
    b = lru_.front();
    lru_.pop_front();
    Uncache(b);
  } else {
    return -1;
  }
  GQA_CHECK(blocks_[b].refs == 0, "a free block is in use");
  blocks_[b].refs = 1;
  ++blocks_[b].gen;  // children cached after the block's previous content no longer follow it
  return b;
}

void BlockPool::Release(const std::vector<int32_t>& blocks) {
  // Last blocks first: they join the LRU pool first and so are evicted
  // before the shared beginnings of prompts.
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    const int b = *it;
    GQA_CHECK(b >= 0 && b < num_blocks_ && blocks_[b].refs > 0, "releasing a block that is not in use");
    Block& blk = blocks_[b];
    if (--blk.refs > 0) continue;
    if (blk.cached) {
      blk.lru = lru_.insert(lru_.end(), b);
    } else {
      plain_free_.push_back(b);
    }
  }
}

std::vector<int32_t> BlockPool::TakeCached(const std::vector<uint64_t>& hashes, const std::vector<int32_t>& tokens,
                                           const std::string& salt, int max_blocks) {
  std::vector<int32_t> found;
  if (!caching_) return found;
  const int n = std::min<int>(max_blocks, int(hashes.size()));
  for (int i = 0; i < n; ++i) {
    const int parent = i == 0 ? -1 : found.back();
    const int32_t* want = tokens.data() + int64_t{i} * block_size_;
    int hit = -1;
    auto [lo, hi] = by_hash_.equal_range(hashes[i]);
    for (auto it = lo; it != hi && hit < 0; ++it) {
      if (Holds(blocks_[it->second], parent, want, salt)) hit = it->second;
    }
    if (hit < 0) break;
    Block& blk = blocks_[hit];
    if (blk.refs++ == 0) lru_.erase(blk.lru);
    found.push_back(hit);
  }
  return found;
}

void BlockPool::Register(int b, uint64_t hash, int parent, const int32_t* tokens, const std::string& salt) {
  if (!caching_) return;
  Block& blk = blocks_[b];
  GQA_CHECK(blk.refs > 0, "registering a block nobody holds");
  if (blk.cached) return;
  auto [lo, hi] = by_hash_.equal_range(hash);
  for (auto it = lo; it != hi; ++it) {
    if (Holds(blocks_[it->second], parent, tokens, salt)) return;  // the same content is cached already
  }
  blk.cached = true;
  blk.hash = hash;
  blk.parent = parent;
  blk.parent_gen = parent >= 0 ? blocks_[parent].gen : 0;
  blk.tokens.assign(tokens, tokens + block_size_);
  if (parent < 0) blk.salt = salt;
  by_hash_.emplace(hash, b);
}

}  // namespace gqa
