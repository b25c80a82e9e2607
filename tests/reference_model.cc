#include "tests/reference_model.h"

#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/safetensors.h"

namespace gqa::testing {
namespace {

double Element(const TensorInfo& t, int64_t i) {
  if (t.dtype_name == "F32") {
    float f;
    std::memcpy(&f, static_cast<const char*>(t.data) + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, static_cast<const char*>(t.data) + 2 * i, 2);
  if (t.dtype_name == "BF16") {
    uint32_t bits = uint32_t{h} << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  // F16: sign, 5-bit exponent (bias 15), 10-bit mantissa.
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 31;
  const int mant = h & 1023;
  if (exp == 0) return sign * std::ldexp(double(mant), -24);
  if (exp == 31) return mant ? NAN : sign * INFINITY;
  return sign * std::ldexp(1.0 + mant / 1024.0, exp - 15);
}

// x rounded to the nearest bf16 (ties to even), by way of the nearest float.
double RoundToBf16(double x) {
  const float f = static_cast<float>(x);
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u) return f;  // inf, nan
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  bits &= 0xFFFF0000u;
  float r;
  std::memcpy(&r, &bits, 4);
  return r;
}

// y[r] = sum_k W[r, k] x[k] (+ b[r]), x first rounded to bf16 if `round`.
std::vector<double> Apply(const std::vector<double>& w, const std::vector<double>& b, const double* x,
                          int rows, int cols, bool round = false) {
  std::vector<double> xr(x, x + cols);
  if (round) {
    for (double& e : xr) e = RoundToBf16(e);
  }
  std::vector<double> y(rows);
  for (int r = 0; r < rows; ++r) {
    double s = b.empty() ? 0.0 : b[r];
    for (int k = 0; k < cols; ++k) s += w[size_t(r) * cols + k] * xr[k];
    y[r] = s;
  }
  return y;
}

std::vector<double> RmsNorm(const double* x, const std::vector<double>& w, int n, double eps) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const double inv = 1.0 / std::sqrt(ss / n + eps);
  std::vector<double> y(n);
  for (int i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
  return y;
}

}  // namespace

absl::StatusOr<ReferenceModel> ReferenceModel::Load(const std::string& dir, bool bf16_linear_inputs) {
  std::ifstream in(dir + "/config.json");
  if (!in) return absl::NotFoundError(dir + "/config.json");
  const nlohmann::json c = nlohmann::json::parse(in);
  ReferenceModel m;
  m.hidden_ = c["hidden_size"];
  m.inter_ = c["intermediate_size"];
  m.heads_ = c["num_attention_heads"];
  m.kv_heads_ = c.value("num_key_value_heads", m.heads_);
  m.head_dim_ = c.contains("head_dim") && !c["head_dim"].is_null() ? int(c["head_dim"]) : m.hidden_ / m.heads_;
  m.vocab_ = c["vocab_size"];
  m.eps_ = c.value("rms_norm_eps", 1e-6);
  const std::string arch = c["architectures"][0];
  const bool qwen = arch == "Qwen2ForCausalLM";
  if (arch == "MistralForCausalLM" && c.contains("sliding_window") && !c["sliding_window"].is_null()) {
    m.window_ = c["sliding_window"];
  }
  nlohmann::json rope = c.contains("rope_parameters") ? c["rope_parameters"] : c.value("rope_scaling", nlohmann::json());
  const double theta = c.contains("rope_parameters") ? double(rope["rope_theta"]) : c.value("rope_theta", 10000.0);
  std::string type = "default";
  if (rope.is_object()) type = rope.value("rope_type", rope.value("type", std::string("default")));
  for (int i = 0; i < m.head_dim_ / 2; ++i) {
    double f = 1.0 / std::pow(theta, 2.0 * i / m.head_dim_);
    if (type == "linear") {
      f /= double(rope["factor"]);
    } else if (type == "llama3") {
      const double factor = rope["factor"], lo = rope["low_freq_factor"], hi = rope["high_freq_factor"];
      const double old_len = rope["original_max_position_embeddings"];
      const double wavelen = 2 * M_PI / f;
      if (wavelen > old_len / lo) {
        f /= factor;
      } else if (wavelen >= old_len / hi) {
        const double s = (old_len / wavelen - lo) / (hi - lo);
        f = (1 - s) * f / factor + s * f;
      }
    } else if (type != "default") {
      return absl::UnimplementedError("reference model: rope type " + type);
    }
    m.inv_freq_.push_back(f);
  }

  ASSIGN_OR_RETURN(auto ckpt, Checkpoint::OpenDirectory(dir));
  auto read = [&](const std::string& name, Mat* out) -> absl::Status {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt->Find(name));
    out->resize(t->NumElements());
    for (int64_t i = 0; i < t->NumElements(); ++i) (*out)[i] = Element(*t, i);
    return absl::OkStatus();
  };
  auto maybe = [&](const std::string& name, Mat* out) -> absl::Status {
    return ckpt->Contains(name) ? read(name, out) : absl::OkStatus();
  };
  auto stored_bf16 = [&](const std::string& name) -> absl::StatusOr<bool> {
    ASSIGN_OR_RETURN(const TensorInfo* t, ckpt->Find(name));
    return t->dtype_name == "BF16";
  };
  RETURN_IF_ERROR(read("model.embed_tokens.weight", &m.embed_));
  RETURN_IF_ERROR(read("model.norm.weight", &m.final_norm_));
  const bool tied = c.value("tie_word_embeddings", false);
  RETURN_IF_ERROR(read(tied ? "model.embed_tokens.weight" : "lm_head.weight", &m.lm_head_));
  if (bf16_linear_inputs) {
    ASSIGN_OR_RETURN(m.round_head_, stored_bf16(tied ? "model.embed_tokens.weight" : "lm_head.weight"));
    ASSIGN_OR_RETURN(m.round_layers_, stored_bf16("model.layers.0.self_attn.q_proj.weight"));
  }
  for (int l = 0; l < int(c["num_hidden_layers"]); ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    Layer L;
    RETURN_IF_ERROR(read(p + "input_layernorm.weight", &L.in_norm));
    RETURN_IF_ERROR(read(p + "post_attention_layernorm.weight", &L.post_norm));
    RETURN_IF_ERROR(read(p + "self_attn.q_proj.weight", &L.wq));
    RETURN_IF_ERROR(read(p + "self_attn.k_proj.weight", &L.wk));
    RETURN_IF_ERROR(read(p + "self_attn.v_proj.weight", &L.wv));
    RETURN_IF_ERROR(read(p + "self_attn.o_proj.weight", &L.wo));
    RETURN_IF_ERROR(read(p + "mlp.gate_proj.weight", &L.wg));
    RETURN_IF_ERROR(read(p + "mlp.up_proj.weight", &L.wu));
    RETURN_IF_ERROR(read(p + "mlp.down_proj.weight", &L.wd));
    // Biases: whichever the checkpoint holds (Qwen2 must hold q/k/v ones).
    RETURN_IF_ERROR(qwen ? read(p + "self_attn.q_proj.bias", &L.bq) : maybe(p + "self_attn.q_proj.bias", &L.bq));
    RETURN_IF_ERROR(qwen ? read(p + "self_attn.k_proj.bias", &L.bk) : maybe(p + "self_attn.k_proj.bias", &L.bk));
    RETURN_IF_ERROR(qwen ? read(p + "self_attn.v_proj.bias", &L.bv) : maybe(p + "self_attn.v_proj.bias", &L.bv));
    RETURN_IF_ERROR(maybe(p + "self_attn.o_proj.bias", &L.bo));
    RETURN_IF_ERROR(maybe(p + "mlp.gate_proj.bias", &L.bg));
    RETURN_IF_ERROR(maybe(p + "mlp.up_proj.bias", &L.bu));
    RETURN_IF_ERROR(maybe(p + "mlp.down_proj.bias", &L.bd));
    m.layers_.push_back(std::move(L));
  }
  return m;
}

std::vector<double> ReferenceModel::LastLogits(const std::vector<int>& tokens) const {
  const int n = static_cast<int>(tokens.size());
  const int H = hidden_, hd = head_dim_, half = hd / 2, group = heads_ / kv_heads_;
  std::vector<std::vector<double>> x(n);
  for (int t = 0; t < n; ++t) x[t].assign(embed_.begin() + size_t(tokens[t]) * H, embed_.begin() + size_t(tokens[t] + 1) * H);
  auto rope = [&](std::vector<double>& v, int num_heads, int pos) {
    for (int h = 0; h < num_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        const double a = v[h * hd + i], b = v[h * hd + i + half];
        const double c = std::cos(pos * inv_freq_[i]), s = std::sin(pos * inv_freq_[i]);
        v[h * hd + i] = a * c - b * s;
        v[h * hd + i + half] = b * c + a * s;
      }
    }
  };
  for (const Layer& L : layers_) {
    std::vector<std::vector<double>> q(n), k(n), v(n);
    for (int t = 0; t < n; ++t) {
      const std::vector<double> h = RmsNorm(x[t].data(), L.in_norm, H, eps_);
      q[t] = Apply(L.wq, L.bq, h.data(), heads_ * hd, H, round_layers_);
      k[t] = Apply(L.wk, L.bk, h.data(), kv_heads_ * hd, H, round_layers_);
      v[t] = Apply(L.wv, L.bv, h.data(), kv_heads_ * hd, H, round_layers_);
      rope(q[t], heads_, t);
      rope(k[t], kv_heads_, t);
    }
    for (int t = 0; t < n; ++t) {
      std::vector<double> attn(size_t(heads_) * hd, 0.0);
      const int start = window_ > 0 ? std::max(0, t - window_ + 1) : 0;
      for (int h = 0; h < heads_; ++h) {
        const int g = h / group;
        std::vector<double> p;
        double mx = -INFINITY;
        for (int j = start; j <= t; ++j) {
          double s = 0;
          for (int i = 0; i < hd; ++i) s += q[t][h * hd + i] * k[j][g * hd + i];
          p.push_back(s / std::sqrt(double(hd)));
          mx = std::max(mx, p.back());
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (int j = start; j <= t; ++j) {
          for (int i = 0; i < hd; ++i) attn[h * hd + i] += p[j - start] / sum * v[j][g * hd + i];
        }
      }
      const std::vector<double> o = Apply(L.wo, L.bo, attn.data(), H, heads_ * hd, round_layers_);
      for (int i = 0; i < H; ++i) x[t][i] += o[i];
      const std::vector<double> h2 = RmsNorm(x[t].data(), L.post_norm, H, eps_);
      std::vector<double> g = Apply(L.wg, L.bg, h2.data(), inter_, H, round_layers_);
      const std::vector<double> u = Apply(L.wu, L.bu, h2.data(), inter_, H, round_layers_);
      for (int i = 0; i < inter_; ++i) g[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
      const std::vector<double> d = Apply(L.wd, L.bd, g.data(), H, inter_, round_layers_);
      for (int i = 0; i < H; ++i) x[t][i] += d[i];
    }
  }
  const std::vector<double> last = RmsNorm(x[n - 1].data(), final_norm_, H, eps_);
  return Apply(lm_head_, {}, last.data(), vocab_, H, round_head_);
}

std::vector<int> ReferenceModel::Greedy(std::vector<int> prompt, int n) const {
  std::vector<int> out;
  for (int i = 0; i < n; ++i) {
    const std::vector<double> logits = LastLogits(prompt);
    const int next = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    prompt.push_back(next);
  }
  return out;
}

}  // namespace gqa::testing
