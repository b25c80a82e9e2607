#include "worker/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gqa {

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const ModelConfig& config, const Checkpoint& ckpt,
                                                   const ShardPlan& plan, Backend* backend,
                                                   Communicator* comm, WeightLoadCounter* counter) {
  if (plan.num_ranks != comm->size() || plan.num_q_heads != config.num_q_heads ||
      plan.num_kv_heads != config.num_kv_heads) {
    return absl::InvalidArgumentError("shard plan does not match the model or the communicator");
  }
  auto m = std::unique_ptr<Model>(new Model(config, plan, backend, comm));
  ASSIGN_OR_RETURN(m->weights_, LoadWeights(config, ckpt, m->shard_, comm->rank() == 0, backend, counter));
  const std::vector<float> inv = RopeInverseFrequencies(config);
  ASSIGN_OR_RETURN(m->inv_freq_, backend->Allocate(inv.size() * sizeof(float)));
  backend->CopyToDevice(m->inv_freq_.data(), inv.data(), inv.size() * sizeof(float));
  RETURN_IF_ERROR(backend->Synchronize());
  return m;
}

int Model::MaxVocabSlice() const {
  int s = 0;
  for (const RankShard& r : plan_.ranks) s = std::max(s, r.vocab_size());
  return s;
}

KvCacheLayout Model::CacheLayout(int num_blocks, int block_size, DType dtype) const {
  return backend_->KvLayout(num_blocks, block_size, shard_.num_kv_heads(), config_.head_dim, dtype);
}

AttentionShape Model::Shape() const {
  AttentionShape s;
  s.num_q_heads = shard_.num_q_heads();
  s.num_kv_heads = shard_.num_kv_heads();
  s.group_size = config_.group_size();
  s.q_head_offset = shard_.q_head_begin - shard_.kv_head_begin * config_.group_size();
  s.head_dim = config_.head_dim;
  s.scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  s.sliding_window = config_.sliding_window;
  return s;
}

namespace {

// Ints of the step upload that hold n values of T (a multiple of 8 bytes).
template <typename T>
size_t IntsOf(size_t n) {
  static_assert(sizeof(T) % 8 == 0, "kept 8-byte aligned in the step upload");
  return n * sizeof(T) / sizeof(int32_t);
}

template <typename T>
void AppendBytes(const std::vector<T>& v, std::vector<int32_t>* ints) {
  const size_t at = ints->size();
  ints->resize(at + IntsOf<T>(v.size()));
  if (!v.empty()) std::memcpy(ints->data() + at, v.data(), v.size() * sizeof(T));
}

}  // namespace

absl::Status Model::Validate(const StepBatch& b, const KvCache& cache, const StepSampling* sampling) const {
  const int n = b.num_tokens();
  const KvCacheLayout& layout = cache.layout();
  if (n == 0) return absl::InvalidArgumentError("step has no tokens");
  if (b.positions.size() != size_t(n) || b.token_seq.size() != size_t(n) || b.slot_mapping.size() != size_t(n)) {
    return absl::InvalidArgumentError("step arrays differ in length");
  }
  if (b.max_blocks_per_seq <= 0 || b.block_tables.size() % b.max_blocks_per_seq != 0) {
    return absl::InvalidArgumentError("block tables are not [num_seqs, max_blocks_per_seq]");
  }
  if (layout.num_kv_heads != shard_.num_kv_heads() || layout.head_dim != config_.head_dim) {
    return absl::InvalidArgumentError("KV cache layout does not match this model shard");
  }
  const int64_t num_slots = int64_t{layout.num_blocks} * layout.block_size;
  for (int32_t blk : b.block_tables) {
    if (blk < -1 || blk >= layout.num_blocks) return absl::InvalidArgumentError(absl::StrCat("block id ", blk, " out of range"));
  }
  for (int t = 0; t < n; ++t) {
    if (b.token_ids[t] < 0 || b.token_ids[t] >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", b.token_ids[t], " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
    const int pos = b.positions[t];
    if (pos < 0 || pos >= config_.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("position ", pos, " is outside [0, max_position_embeddings=",
                                                     config_.max_position_embeddings, ")"));
    }
    if (b.token_seq[t] < 0 || b.token_seq[t] >= b.num_seqs()) return absl::InvalidArgumentError("token sequence index out of range");
    if (pos / layout.block_size >= b.max_blocks_per_seq) return absl::InvalidArgumentError("position beyond the block table");
    // Every position the token attends to must have a block.
    const int32_t* table = b.block_tables.data() + int64_t{b.token_seq[t]} * b.max_blocks_per_seq;
    for (int j = 0; j <= pos / layout.block_size; ++j) {
      if (table[j] < 0) return absl::InvalidArgumentError(absl::StrCat("position ", pos, " has no KV block"));
    }
    if (b.slot_mapping[t] < 0 || b.slot_mapping[t] >= num_slots) return absl::InvalidArgumentError("KV slot out of range");
  }
  if (b.logits_rows.size() > size_t(n)) return absl::InvalidArgumentError("more logits rows than tokens");
  for (int32_t r : b.logits_rows) {
    if (r < 0 || r >= n) return absl::InvalidArgumentError("logits row out of range");
  }
  const int m = static_cast<int>(b.logits_rows.size());
  if (n > ws_.tokens || m > ws_.logits || b.num_seqs() > ws_.seqs || b.max_blocks_per_seq > ws_.blocks_per_seq) {
    return absl::InvalidArgumentError(absl::StrCat(
        "step of ", n, " tokens, ", b.num_seqs(), " sequences, ", m, " logits rows and ", b.max_blocks_per_seq,
        " blocks per sequence exceeds the workspace (", ws_.tokens, " tokens, ", ws_.seqs, " sequences, ", ws_.logits,
        " rows, ", ws_.blocks_per_seq, " blocks)"));
  }
  if (sampling == nullptr) return absl::OkStatus();
  if (sampling->rows.size() != b.logits_rows.size()) {
    return absl::InvalidArgumentError(absl::StrCat(sampling->rows.size(), " sampling rows for ", b.logits_rows.size(),
                                                   " logits rows"));
  }
  if (sampling->penalties.size() > size_t(ws_.penalties)) {
    return absl::InvalidArgumentError(absl::StrCat("step has ", sampling->penalties.size(),
                                                   " penalty entries; the workspace holds ", ws_.penalties,
                                                   " (ExecutorOptions::max_step_penalty_entries)"));
  }
  for (const SamplingRow& r : sampling->rows) {
    if (r.penalty_begin < 0 || r.penalty_begin > r.penalty_end || size_t(r.penalty_end) > sampling->penalties.size()) {
      return absl::InvalidArgumentError("sampling row's penalty entries out of range");
    }
    if (r.num_top_logprobs < 0 || r.num_top_logprobs > kMaxTopLogprobs) {
      return absl::InvalidArgumentError(absl::StrCat("num_top_logprobs must be in [0, ", kMaxTopLogprobs, "]"));
    }
    if (!(r.uniform >= 0 && r.uniform < 1)) return absl::InvalidArgumentError("uniform must be in [0, 1)");
  }
  return absl::OkStatus();
}

absl::Status Model::ReserveWorkspace(int n, int seqs, int blocks_per_seq, int max_penalties) {
  if (n < 1 || seqs < 1 || blocks_per_seq < 1 || max_penalties < 0) {
    return absl::InvalidArgumentError("empty workspace limits");
  }
  if (config_.vocab_size > (1 << sampling::kMaxVocabBits)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling supports vocabularies of up to 2^",
                                                   sampling::kMaxVocabBits, " tokens, not ", config_.vocab_size));
  }
  const int m = std::min(n, seqs);  // logits rows: at most one per token
  const bool root = comm_->rank() == 0;
  size_t meta_ints = 5 * size_t(n) + size_t(seqs) * blocks_per_seq + size_t(m);
  if (root) meta_ints += 1 + IntsOf<SamplingRow>(m) + IntsOf<PenaltyEntry>(max_penalties);
  ASSIGN_OR_RETURN(ws_.meta, backend_->Allocate(meta_ints * sizeof(int32_t)));
  const int64_t hidden = config_.hidden_size, hd = config_.head_dim;
  auto alloc = [&](DeviceBuffer& b, int64_t floats) -> absl::Status {
    ASSIGN_OR_RETURN(b, backend_->Allocate(size_t(floats) * sizeof(float)));
    return absl::OkStatus();
  };
  const int64_t mlp = shard_.mlp_end - shard_.mlp_begin;
  RETURN_IF_ERROR(alloc(ws_.hidden, n * hidden));
  RETURN_IF_ERROR(alloc(ws_.normed, n * hidden));
  RETURN_IF_ERROR(alloc(ws_.proj, n * hidden));
  RETURN_IF_ERROR(alloc(ws_.q, n * shard_.num_q_heads() * hd));
  RETURN_IF_ERROR(alloc(ws_.attn, n * shard_.num_q_heads() * hd));
  RETURN_IF_ERROR(alloc(ws_.k, n * shard_.num_kv_heads() * hd));
  RETURN_IF_ERROR(alloc(ws_.v, n * shard_.num_kv_heads() * hd));
  RETURN_IF_ERROR(alloc(ws_.gate, n * mlp));
  RETURN_IF_ERROR(alloc(ws_.up, n * mlp));
  const size_t slice = size_t(m) * MaxVocabSlice();
  RETURN_IF_ERROR(alloc(ws_.last, int64_t{m} * hidden));
  RETURN_IF_ERROR(alloc(ws_.logits_out, int64_t(slice)));
  RETURN_IF_ERROR(alloc(ws_.logits_all, int64_t(slice) * comm_->size()));
  if (root) {
    if (comm_->size() > 1) RETURN_IF_ERROR(alloc(ws_.rows, int64_t{m} * config_.vocab_size));
    ASSIGN_OR_RETURN(ws_.samples, backend_->Allocate(size_t(m) * sizeof(SampleOutput)));
  }
  RETURN_IF_ERROR(alloc(ws_.flag, 1));
  ws_.tokens = n;
  ws_.penalties = max_penalties;
  ws_.logits = m;
  ws_.seqs = seqs;
  ws_.blocks_per_seq = blocks_per_seq;
  ws_.meta_ints = meta_ints;
  RETURN_IF_ERROR(backend_->ReserveAttention(n, seqs, Shape()));
  return backend_->Synchronize();
}

void Model::EnableDecodeGraphs(int max_batch) {
  graph_max_batch_ = 0;
  if (max_batch <= 0 || backend_->graphs() == nullptr) return;
  // A bucket must fit the workspace: its tokens, its logits rows and its
  // block tables (one row per token).
  const int limit = std::min({max_batch, ws_.tokens, ws_.logits, ws_.seqs});
  int b = 1;
  while (b * 2 <= limit) b *= 2;
  graph_max_batch_ = limit >= 1 ? b : 0;
}

int Model::GraphBucket(const StepBatch& b) const {
  const int n = b.num_tokens();
  if (graph_max_batch_ == 0 || n > graph_max_batch_) return 0;
  // Lone tokens only: tokens of one sequence adjacent at consecutive
  // positions form a prefill run (kernels/cuda/attention_plan.cc).
  for (int t = 1; t < n; ++t) {
    if (b.token_seq[t] == b.token_seq[t - 1] && b.positions[t] == b.positions[t - 1] + 1) return 0;
  }
  int bucket = 1;
  while (bucket < n) bucket *= 2;
  if (b.num_seqs() > bucket) return 0;
  return bucket;
}

int Model::GraphTableWidth(int blocks_per_seq) const {
  // A power of two (at least 16), so that a few graphs cover contexts as
  // they grow while the upload stays within twice the tables' size.
  int w = 16;
  while (w < blocks_per_seq) w *= 2;
  return std::min(w, ws_.blocks_per_seq);
}

Model::StepDims Model::PackStep(const StepBatch& b, const StepSampling* sampling, int bucket,
                                std::vector<int32_t>* meta) const {
  const bool root = comm_->rank() == 0;
  const int n = b.num_tokens();
  const int m = static_cast<int>(b.logits_rows.size());
  StepDims d;
  meta->clear();
  if (bucket == 0) {
    d.tokens = n;
    d.logits_rows = m;
    d.blocks_per_seq = b.max_blocks_per_seq;
    meta->reserve(5 * n + b.block_tables.size() + m);
    for (const auto* v : {&b.token_ids, &b.positions, &b.token_seq, &b.slot_mapping}) {
      meta->insert(meta->end(), v->begin(), v->end());
    }
    d.tables_at = meta->size();
    meta->insert(meta->end(), b.block_tables.begin(), b.block_tables.end());
    d.logits_rows_at = meta->size();
    meta->insert(meta->end(), b.logits_rows.begin(), b.logits_rows.end());
  } else {
    // Padded tokens: token 0 at position -1 (attends to nothing), slot -1
    // (writes no K/V), sequence row 0; their logits rows are sampled
    // greedily and dropped. Tables are GraphTableWidth wide, -1 padded.
    const int width = GraphTableWidth(b.max_blocks_per_seq);
    d.tokens = bucket;
    d.logits_rows = bucket;
    d.blocks_per_seq = width;
    auto padded = [&](const std::vector<int32_t>& v, int32_t fill) {
      meta->insert(meta->end(), v.begin(), v.end());
      meta->insert(meta->end(), size_t(bucket) - v.size(), fill);
    };
    padded(b.token_ids, 0);
    padded(b.positions, -1);
    padded(b.token_seq, 0);
    padded(b.slot_mapping, -1);
    d.tables_at = meta->size();
    meta->resize(d.tables_at + size_t(bucket) * width, -1);
    for (int s = 0; s < b.num_seqs(); ++s) {
      std::copy_n(b.block_tables.begin() + int64_t{s} * b.max_blocks_per_seq, b.max_blocks_per_seq,
                  meta->begin() + int64_t(d.tables_at) + int64_t{s} * width);
    }
    d.logits_rows_at = meta->size();
    meta->insert(meta->end(), b.logits_rows.begin(), b.logits_rows.end());
    for (int r = m; r < bucket; ++r) meta->push_back(r);
  }
  // Rank 0's sampling parameters ride along, 8-byte aligned.
  if (root && sampling != nullptr) {
    meta->resize((meta->size() + 1) / 2 * 2);
    d.rows_at = meta->size();
    std::vector<SamplingRow> rows = sampling->rows;
    rows.resize(size_t(d.logits_rows));  // padded rows: greedy
    AppendBytes(rows, meta);
    d.penalties_at = meta->size();
    AppendBytes(sampling->penalties, meta);
  }
  return d;
}

absl::Status Model::Forward(const StepBatch& b, const KvCache& cache, const StepSampling* sampling,
                            std::vector<SampleOutput>* samples, std::vector<float>* logits) {
  if (samples != nullptr) samples->clear();
  if (logits != nullptr) logits->clear();
  RETURN_IF_ERROR(Validate(b, cache, sampling));
  const bool root = comm_->rank() == 0;
  const int m = static_cast<int>(b.logits_rows.size());

  const int bucket = GraphBucket(b);
  if (graph_max_batch_ > 0 &&
      (cache.k(0) != graph_cache_ || comm_->generation() != graph_comm_generation_)) {
    // Graphs name the cache and the communicators they were captured with.
    backend_->graphs()->DropGraphs();
    graphs_.clear();
    graph_cache_ = cache.k(0);
    graph_comm_generation_ = comm_->generation();
  }

  // All step metadata goes to the device in one copy, built once per step.
  std::vector<int32_t> meta;
  const StepDims dims = PackStep(b, sampling, bucket, &meta);
  backend_->UploadStep(meta.data(), meta.size(), ws_.meta.as<int32_t>());
  // This step's attention plan, read by every layer.
  step_plan_ = bucket > 0 ? backend_->graphs()->PlanPaddedDecode(bucket, Shape(), cache.layout())
                          : backend_->PlanAttention(b.token_seq.data(), b.positions.data(), b.num_tokens(), Shape(),
                                                    cache.layout());

  const float* rows = nullptr;
  if (bucket > 0) {
    const GraphKey key{bucket, dims.blocks_per_seq, sampling != nullptr};
    const auto it = graphs_.find(key);
    if (it != graphs_.end() && it->second >= 0) {
      backend_->graphs()->ReplayGraph(it->second);
      rows = comm_->size() > 1 ? ws_.rows.as<float>() : ws_.logits_out.as<float>();
      ++graph_stats_.replayed;
    } else {
      // Op by op; the first step of a bucket is then captured (its run
      // also sizes every buffer the graph will use).
      RETURN_IF_ERROR(EnqueueStep(dims, cache, sampling != nullptr, &rows));
      if (it == graphs_.end()) {
        RETURN_IF_ERROR(CaptureGraph(key, dims, cache));
      } else {
        ++graph_stats_.eager;
      }
    }
  } else {
    RETURN_IF_ERROR(EnqueueStep(dims, cache, sampling != nullptr, &rows));
    ++graph_stats_.eager;
  }
  if (!root || m == 0) return backend_->Synchronize();

  const int vocab = config_.vocab_size;
  if (sampling != nullptr && samples != nullptr) {
    samples->resize(m);
    backend_->CopyToHost(samples->data(), ws_.samples.data(), size_t(m) * sizeof(SampleOutput));
  }
  if (logits != nullptr) {
    logits->resize(size_t(m) * vocab);
    backend_->CopyToHost(logits->data(), rows, logits->size() * sizeof(float));
  }
  return backend_->Synchronize();
}

absl::Status Model::CaptureGraph(const GraphKey& key, const StepDims& dims, const KvCache& cache) {
  const bool sampling = std::get<2>(key);
  // The step's own errors fail the step; a capture's only the capture.
  RETURN_IF_ERROR(backend_->Synchronize());
  absl::Status st = backend_->graphs()->BeginCapture();
  int id = -1;
  if (st.ok()) {
    const float* rows = nullptr;
    const absl::Status enq = EnqueueStep(dims, cache, sampling, &rows);
    absl::StatusOr<int> graph = backend_->graphs()->EndCapture();
    st = !enq.ok() ? enq : graph.status();
    if (st.ok()) id = *graph;
  }
  if (comm_->size() > 1) {
    // NCCL requires a captured collective on every rank or on none: the
    // graph is used only where every rank captured it.
    const float ok = st.ok() ? 1.0f : 0.0f;
    float all = 0.0f;
    backend_->CopyToDevice(ws_.flag.data(), &ok, sizeof(float));
    RETURN_IF_ERROR(comm_->AllReduceSum(ws_.flag.as<float>(), 1));
    backend_->CopyToHost(&all, ws_.flag.data(), sizeof(float));
    RETURN_IF_ERROR(backend_->Synchronize());
    if (st.ok() && all != float(comm_->size())) st = absl::AbortedError("another rank failed to capture it");
  }
  if (!st.ok()) {
    std::fprintf(stderr, "gqa: rank %d: decode steps of bucket %d (block tables %d wide) run without a graph: %s\n",
                 comm_->rank(), std::get<0>(key), std::get<1>(key), std::string(st.message()).c_str());
    graphs_[key] = -1;
    ++graph_stats_.failed_captures;
    return absl::OkStatus();
  }
  graphs_[key] = id;
  ++graph_stats_.captured;
  return absl::OkStatus();
}

absl::Status Model::EnqueueStep(const StepDims& dims, const KvCache& cache, bool with_sampling, const float** rows_out) {
  const bool root = comm_->rank() == 0;
  const int n = dims.tokens;
  const int m = dims.logits_rows;
  const int hidden = config_.hidden_size;
  const int hd = config_.head_dim;
  const int32_t* d = ws_.meta.as<int32_t>();
  AttentionMeta am;
  am.num_tokens = n;
  const int32_t* d_ids = d;
  am.token_pos = d + n;
  am.token_seq = d + 2 * n;
  am.slot_mapping = d + 3 * n;
  am.block_tables = d + dims.tables_at;
  am.max_blocks_per_seq = dims.blocks_per_seq;
  const int32_t* d_logits_rows = d + dims.logits_rows_at;

  const AttentionShape shape = Shape();
  const int nq = shard_.num_q_heads(), nkv = shard_.num_kv_heads();
  const int64_t mlp = shard_.mlp_end - shard_.mlp_begin;
  float* x = ws_.hidden.as<float>();
  float* h = ws_.normed.as<float>();
  float* proj = ws_.proj.as<float>();
  float* q = ws_.q.as<float>();
  float* k = ws_.k.as<float>();
  float* v = ws_.v.as<float>();
  float* attn = ws_.attn.as<float>();
  float* gate = ws_.gate.as<float>();
  float* up = ws_.up.as<float>();
  const float* inv_freq = inv_freq_.as<float>();

  // Vocabulary-parallel embedding: each rank fills the rows of its slice.
  backend_->Embedding(weights_.embedding, shard_.vocab_begin, d_ids, n, x);
  if (comm_->size() > 1) RETURN_IF_ERROR(comm_->AllReduceSum(x, int64_t{n} * hidden));
  for (int l = 0; l < config_.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    backend_->RmsNorm(x, w.input_norm, n, hidden, config_.rms_norm_eps, h);
    backend_->MatMul(h, n, w.q.w, w.q.bias, q);
    backend_->MatMul(h, n, w.k.w, w.k.bias, k);
    backend_->MatMul(h, n, w.v.w, w.v.bias, v);
    backend_->Rope(q, n, nq, hd, int64_t{nq} * hd, am.token_pos, inv_freq);
    backend_->Rope(k, n, nkv, hd, int64_t{nkv} * hd, am.token_pos, inv_freq);
    backend_->WriteKv(k, v, am, cache.layout(), cache.k(l), cache.v(l));
    backend_->Attention(q, am, cache.layout(), cache.k(l), cache.v(l), shape, *step_plan_, attn);
    backend_->MatMul(attn, n, w.o.w, w.o.bias, proj);
    RETURN_IF_ERROR(comm_->AllReduceSum(proj, int64_t{n} * hidden));
    backend_->Add(x, proj, int64_t{n} * hidden);

    backend_->RmsNorm(x, w.post_norm, n, hidden, config_.rms_norm_eps, h);
    backend_->MatMul(h, n, w.gate.w, w.gate.bias, gate);
    backend_->MatMul(h, n, w.up.w, w.up.bias, up);
    backend_->SiluMul(gate, up, int64_t{n} * mlp, gate);
    backend_->MatMul(gate, n, w.down.w, w.down.bias, proj);
    RETURN_IF_ERROR(comm_->AllReduceSum(proj, int64_t{n} * hidden));
    backend_->Add(x, proj, int64_t{n} * hidden);
  }
  if (m == 0) return absl::OkStatus();
  float* last = ws_.last.as<float>();
  backend_->GatherRows(x, d_logits_rows, m, hidden, h);
  backend_->RmsNorm(h, weights_.final_norm, m, hidden, config_.rms_norm_eps, last);
  // Each rank computes its vocabulary slice; slices (padded to the largest)
  // are gathered and rank 0 joins full rows on its device.
  backend_->MatMul(last, m, weights_.lm_head.w, nullptr, ws_.logits_out.as<float>());
  const float* rows = ws_.logits_out.as<float>();
  float* scratch = ws_.logits_all.as<float>();
  if (comm_->size() > 1) {
    const int64_t padded = int64_t{m} * MaxVocabSlice();
    RETURN_IF_ERROR(comm_->AllGather(ws_.logits_out.as<float>(), padded, ws_.logits_all.as<float>()));
    if (!root) return absl::OkStatus();
    std::vector<int64_t> col_begin;
    for (const RankShard& s : plan_.ranks) col_begin.push_back(s.vocab_begin);
    col_begin.push_back(config_.vocab_size);
    backend_->ConcatColumns(ws_.logits_all.as<float>(), comm_->size(), padded, col_begin.data(), m,
                            ws_.rows.as<float>());
    rows = ws_.rows.as<float>();
  }
  *rows_out = rows;
  if (with_sampling) {
    const auto* params = reinterpret_cast<const SamplingRow*>(d + dims.rows_at);
    const auto* penalties = reinterpret_cast<const PenaltyEntry*>(d + dims.penalties_at);
    backend_->Sample(rows, m, config_.vocab_size, params, penalties, scratch, ws_.samples.as<SampleOutput>());
  }
  return absl::OkStatus();
}

}  // namespace gqa
