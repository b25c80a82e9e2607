#include "worker/weights.h"

#include "absl/strings/str_cat.h"
#include "kernels/dtype.h"

namespace gqa {
namespace {

MatrixView HostView(const TensorInfo& t) {
  MatrixView v;
  v.data = t.data;
  v.dtype = *t.dtype;
  v.rows = t.shape[0];
  v.cols = t.shape.size() > 1 ? t.shape[1] : 1;
  v.row_stride = v.cols;
  return v;
}

class Loader {
 public:
  Loader(const ModelConfig& c, const Checkpoint& ckpt, Backend* backend, ModelWeights& out,
         WeightLoadCounter* counter)
      : c_(c), ckpt_(ckpt), backend_(backend), out_(out), counter_(counter) {}

  // Imports rows [r0, r0 + nr) and columns [c0, c0 + nc) of a [rows, cols] matrix.
  // A matrix only MatMul reads (for_matmul) may be stored in the backend's own
  // layout; the embedding table stays row-major for its row lookups.
  absl::StatusOr<MatrixView> Matrix(const std::string& name, int64_t rows, int64_t cols,
                                    int64_t r0, int64_t nr, int64_t c0, int64_t nc,
                                    bool count_bytes = true, bool for_matmul = true) {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt_.Get(name, {rows, cols}));
    const MatrixView host = HostView(*t).RowSlice(r0, nr).ColSlice(c0, nc);
    MatrixView device;
    ASSIGN_OR_RETURN(DeviceBuffer buf, for_matmul ? backend_->ImportWeightMatrix(host, &device)
                                                  : backend_->ImportHostMatrix(host, &device));
    out_.owned.push_back(std::move(buf));
    if (count_bytes) out_.matrix_bytes += nr * nc * int64_t(DTypeSize(host.dtype));
    Count(nr * nc * int64_t(DTypeSize(host.dtype)));
    return device;
  }

  // Converts elements [begin, begin + n) of a 1-D tensor of `size` to f32 on the device.
  absl::StatusOr<const float*> Vector(const std::string& name, int64_t size, int64_t begin, int64_t n) {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt_.Get(name, {size}));
    std::vector<float> host(n);
    for (int64_t i = 0; i < n; ++i) host[i] = gqa::LoadElement(t->data, *t->dtype, begin + i);
    ASSIGN_OR_RETURN(DeviceBuffer buf, backend_->Allocate(n * sizeof(float)));
    backend_->CopyToDevice(buf.data(), host.data(), n * sizeof(float));
    RETURN_IF_ERROR(backend_->Synchronize());  // `host` dies here
    const float* p = buf.as<float>();
    out_.owned.push_back(std::move(buf));
    Count(n * int64_t(DTypeSize(*t->dtype)));
    return p;
  }

  // A column-parallel projection: rows [r0, r0 + nr) of [rows, in], with its bias slice.
  absl::StatusOr<Linear> ColumnParallel(const std::string& prefix, int64_t rows, int64_t in,
                                        int64_t r0, int64_t nr, bool bias) {
    Linear l;
    ASSIGN_OR_RETURN(l.w, Matrix(prefix + ".weight", rows, in, r0, nr, 0, in));
    if (bias) {
      ASSIGN_OR_RETURN(l.bias, Vector(prefix + ".bias", rows, r0, nr));
    }
    return l;
  }

  // A row-parallel projection: input columns [c0, c0 + nc) of [out, cols]; the
  // bias is added once, by the first rank, before the all-reduce.
  absl::StatusOr<Linear> RowParallel(const std::string& prefix, int64_t out, int64_t cols,
                                     int64_t c0, int64_t nc, bool bias, bool first_rank) {
    Linear l;
    ASSIGN_OR_RETURN(l.w, Matrix(prefix + ".weight", out, cols, 0, out, c0, nc));
    if (bias) {
      ASSIGN_OR_RETURN(const float* b, Vector(prefix + ".bias", out, 0, out));
      if (first_rank) l.bias = b;
    }
    return l;
  }

 private:
  const ModelConfig& c_;
  const Checkpoint& ckpt_;
  void Count(int64_t bytes) {
    if (counter_ == nullptr) return;
    counter_->tensors.fetch_add(1, std::memory_order_relaxed);
    counter_->bytes.fetch_add(bytes, std::memory_order_relaxed);
  }

  Backend* backend_;
  ModelWeights& out_;
  WeightLoadCounter* counter_;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const ModelConfig& c, const Checkpoint& ckpt,
                                         const RankShard& s, bool first_rank, Backend* backend,
                                         WeightLoadCounter* counter) {
  ModelWeights w;
  Loader load(c, ckpt, backend, w, counter);
  const int64_t hidden = c.hidden_size, hd = c.head_dim, inter = c.intermediate_size;
  const int64_t q_rows = int64_t{c.num_q_heads} * hd, kv_rows = int64_t{c.num_kv_heads} * hd;

  ASSIGN_OR_RETURN(w.embedding, load.Matrix("model.embed_tokens.weight", c.vocab_size, hidden, s.vocab_begin,
                                            s.vocab_size(), 0, hidden, /*count_bytes=*/false,
                                            /*for_matmul=*/false));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    LayerWeights lw;
    ASSIGN_OR_RETURN(lw.input_norm, load.Vector(p + "input_layernorm.weight", hidden, 0, hidden));
    ASSIGN_OR_RETURN(lw.post_norm, load.Vector(p + "post_attention_layernorm.weight", hidden, 0, hidden));
    ASSIGN_OR_RETURN(lw.q, load.ColumnParallel(p + "self_attn.q_proj", q_rows, hidden,
                                               s.q_head_begin * hd, s.num_q_heads() * hd, c.attention_bias));
    ASSIGN_OR_RETURN(lw.k, load.ColumnParallel(p + "self_attn.k_proj", kv_rows, hidden,
                                               s.kv_head_begin * hd, s.num_kv_heads() * hd, c.attention_bias));
    ASSIGN_OR_RETURN(lw.v, load.ColumnParallel(p + "self_attn.v_proj", kv_rows, hidden,
                                               s.kv_head_begin * hd, s.num_kv_heads() * hd, c.attention_bias));
    ASSIGN_OR_RETURN(lw.o, load.RowParallel(p + "self_attn.o_proj", hidden, q_rows, s.q_head_begin * hd,
                                            s.num_q_heads() * hd, c.o_proj_bias, first_rank));
    const int64_t m0 = s.mlp_begin, mn = s.mlp_end - s.mlp_begin;
    ASSIGN_OR_RETURN(lw.gate, load.ColumnParallel(p + "mlp.gate_proj", inter, hidden, m0, mn, c.mlp_bias));
    ASSIGN_OR_RETURN(lw.up, load.ColumnParallel(p + "mlp.up_proj", inter, hidden, m0, mn, c.mlp_bias));
    ASSIGN_OR_RETURN(lw.down, load.RowParallel(p + "mlp.down_proj", hidden, inter, m0, mn, c.mlp_bias,
                                               first_rank));
    w.layers.push_back(lw);
  }
  ASSIGN_OR_RETURN(w.final_norm, load.Vector("model.norm.weight", hidden, 0, hidden));
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens" : "lm_head";
  if (!c.tie_word_embeddings && !ckpt.Contains("lm_head.weight")) {
    return absl::NotFoundError(absl::StrCat(ckpt.description(),
                                            ": tensor 'lm_head.weight' is missing (config.json has "
                                            "tie_word_embeddings false)"));
  }
  ASSIGN_OR_RETURN(w.lm_head, load.ColumnParallel(head, c.vocab_size, hidden, s.vocab_begin, s.vocab_size(), false));
  return w;
}

}  // namespace gqa
