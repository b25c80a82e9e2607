#include "bench/onednn_matmul.h"

#include <omp.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace gqa {
namespace {

using dnnl::memory;

const char* IsaName(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

class Impl : public OneDnnMatMul {
 public:
  Impl(const uint16_t* w, int64_t rows, int64_t cols) : w_(w), rows_(rows), cols_(cols) {}

  absl::Status Prepare(int n) override {
    try {
      ShapeFor(n);
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("oneDNN, ", n, " tokens: ", e.what()));
    }
    return absl::OkStatus();
  }

  void Run(const float* x, int n, float* y) override {
    Shape& s = shapes_.at(n);
    memory src_f32({{n, cols_}, memory::data_type::f32, memory::format_tag::ab}, engine_, const_cast<float*>(x));
    memory dst({{n, rows_}, memory::data_type::f32, memory::format_tag::ab}, engine_, y);
    s.to_bf16.execute(stream_, src_f32, s.src);
    s.matmul.execute(stream_, {{DNNL_ARG_SRC, s.src}, {DNNL_ARG_WEIGHTS, s.weights}, {DNNL_ARG_DST, dst}});
    stream_.wait();
  }

  std::string Describe() const override {
    const dnnl_version_t* v = dnnl_version();
    return absl::StrCat("oneDNN ", v->major, ".", v->minor, ".", v->patch, " (", IsaName(dnnl::get_effective_cpu_isa()),
                        ", ", omp_get_max_threads(), " OpenMP threads)");
  }

 private:
  struct Shape {
    memory src, weights;
    dnnl::reorder to_bf16;
    dnnl::matmul matmul;
  };

  Shape& ShapeFor(int n) {
    auto it = shapes_.find(n);
    if (it != shapes_.end()) return it->second;
    const memory::desc src_md({n, cols_}, memory::data_type::bf16, memory::format_tag::ab);
    const memory::desc any_w({cols_, rows_}, memory::data_type::bf16, memory::format_tag::any);
    const memory::desc dst_md({n, rows_}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, any_w, dst_md), engine_);
    Shape s;
    s.src = memory(src_md, engine_);
    s.weights = memory(pd.weights_desc(), engine_);
    // The checkpoint's [rows][cols] is the product's [cols x rows] weight
    // matrix in column-major order ("ba").
    memory stored({{cols_, rows_}, memory::data_type::bf16, memory::format_tag::ba}, engine_,
                  const_cast<uint16_t*>(w_));
    dnnl::reorder(stored, s.weights).execute(stream_, stored, s.weights);
    stream_.wait();
    const memory::desc src_f32({n, cols_}, memory::data_type::f32, memory::format_tag::ab);
    s.to_bf16 = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, src_f32, engine_, src_md));
    s.matmul = dnnl::matmul(pd);
    return shapes_.emplace(n, std::move(s)).first->second;
  }

  const uint16_t* w_;
  int64_t rows_, cols_;
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::map<int, Shape> shapes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<OneDnnMatMul>> OneDnnMatMul::Create(const uint16_t* w, int64_t rows, int64_t cols,
                                                                  int threads) {
  omp_set_num_threads(threads);
  try {
    return std::unique_ptr<OneDnnMatMul>(new Impl(w, rows, cols));
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN: ", e.what()));
  }
}

}  // namespace gqa
