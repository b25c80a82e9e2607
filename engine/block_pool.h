// The KV cache's blocks as the scheduler hands them out, with automatic
// prefix caching: a full block whose K/V are computed is registered under a
// hash chained over its parent block's hash, its token ids and the request's
// cache salt. A later sequence with the same prefix takes the same blocks
// (reference-counted) instead of computing them again. A block whose last
// user leaves keeps its hash in an LRU pool and is evicted only when a new
// block is needed and no never-cached block is free. Every lookup compares
// the stored token ids and parent too, so a hash collision can only miss.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/common.h"

namespace gqa {

class BlockPool {
 public:
  BlockPool(int num_blocks, int block_size, bool caching);

  int num_blocks() const { return num_blocks_; }
  int block_size() const { return block_size_; }
  bool caching() const { return caching_; }
  // Blocks a new sequence could get: never used or emptied, plus cached
  // blocks nobody uses (evicted on demand).
  int num_free() const { return static_cast<int>(plain_free_.size() + lru_.size()); }
  // Blocks held by at least one sequence.
  int num_used() const { return num_blocks_ - num_free(); }
  // Blocks nobody uses that still hold a cached prefix.
  int num_cached_free() const { return static_cast<int>(lru_.size()); }

  // A block for new K/V (reference count 1), or -1 when none is free. A
  // never-cached block first, else the least recently freed cached one
  // (its hash is forgotten).
  int Allocate();
  // The blocks of a sequence that no longer needs them; a block whose count
  // reaches 0 becomes free (cached blocks into the LRU pool, the sequence's
  // last blocks evicted first).
  void Release(const std::vector<int32_t>& blocks);

  // The hash of a full block: its parent's hash (or, for a sequence's first
  // block, the salt's), chained with its block_size token ids.
  uint64_t RootHash(const std::string& salt) const;
  uint64_t ChainHash(uint64_t parent_hash, const int32_t* tokens) const;

  // The longest run of cached blocks that starts a sequence with these
  // tokens and salt, at most max_blocks: each block found is taken (its
  // reference count raised). hashes[i] is block i's chained hash.
  std::vector<int32_t> TakeCached(const std::vector<uint64_t>& hashes, const std::vector<int32_t>& tokens,
                                  const std::string& salt, int max_blocks);
  // Registers a full block whose K/V are now computed, under `hash`: its
  // parent block (-1 for a sequence's first), its tokens, and for a first
  // block the salt. Nothing happens when caching is off, the block is
  // registered already, or another block holds the same content (that one
  // stays the cached one).
  void Register(int block, uint64_t hash, int parent, const int32_t* tokens, const std::string& salt);

 private:
  struct Block {
    int refs = 0;
    bool cached = false;
    uint64_t hash = 0;
    int parent = -1;
    uint64_t gen = 0;                            // raised at every allocation of the block
    uint64_t parent_gen = 0;                     // the parent's allocation this block follows
    std::vector<int32_t> tokens;                 // block_size ids when cached
    std::string salt;                            // a cached first block's
    std::list<int>::iterator lru;                // valid while free and cached
  };
  void Uncache(int block);
  // Whether blk was cached after `parent`'s present content (-1: a first block).
  bool Follows(const Block& blk, int parent) const;
  // Whether blk, cached, holds `tokens` after `parent` (and for a first
  // block under `salt`).
  bool Holds(const Block& blk, int parent, const int32_t* tokens, const std::string& salt) const;

  int num_blocks_;
  int block_size_;
  bool caching_;
  uint64_t key_;                                 // keys the hashes (random per pool)
  std::vector<Block> blocks_;
  std::vector<int> plain_free_;                  // free and not cached; low ids handed out first
  std::list<int> lru_;                           // free and cached, least recently freed first
  std::unordered_multimap<uint64_t, int> by_hash_;
};

}  // namespace gqa
