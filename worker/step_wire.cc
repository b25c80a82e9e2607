#include "worker/step_wire.h"

#include <cstring>

namespace gqa {
namespace {

class Writer {
 public:
  template <typename T>
  void Put(const T& v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  template <typename T>
  void PutVector(const std::vector<T>& v) {
    Put<int64_t>(int64_t(v.size()));
    const char* p = reinterpret_cast<const char*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size() * sizeof(T));
  }
  std::vector<char> bytes;
};

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* v) {
    if (bytes_.size() - at_ < sizeof(T)) return false;
    std::memcpy(v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  template <typename T>
  bool GetVector(std::vector<T>* v) {
    int64_t n = 0;
    if (!Get(&n) || n < 0 || uint64_t(n) > (bytes_.size() - at_) / sizeof(T)) return false;
    v->resize(size_t(n));
    if (n > 0) std::memcpy(v->data(), bytes_.data() + at_, size_t(n) * sizeof(T));
    at_ += size_t(n) * sizeof(T);
    return true;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  std::string_view bytes_;
  size_t at_ = 0;
};

// A flag on the wire: 0 or 1, nothing else.
bool GetFlag(Reader& r, bool* flag) {
  int32_t v = 0;
  if (!r.Get(&v) || (v != 0 && v != 1)) return false;
  *flag = v == 1;
  return true;
}

}  // namespace

std::vector<char> EncodeStep(const StepBatch& b, const StepSampling* sampling, bool want_logits) {
  Writer w;
  w.Put(StepMessageKind::kStep);
  w.Put<int32_t>(want_logits ? 1 : 0);
  w.Put<int32_t>(sampling != nullptr ? 1 : 0);
  w.Put<int32_t>(b.max_blocks_per_seq);
  for (const auto* v : {&b.token_ids, &b.positions, &b.token_seq, &b.slot_mapping, &b.block_tables, &b.logits_rows}) {
    w.PutVector(*v);
  }
  if (sampling != nullptr) {
    w.PutVector(sampling->rows);
    w.PutVector(sampling->penalties);
  }
  return std::move(w.bytes);
}

std::vector<char> EncodeStop() {
  Writer w;
  w.Put(StepMessageKind::kStop);
  return std::move(w.bytes);
}

absl::StatusOr<StepMessage> DecodeStepMessage(std::string_view bytes) {
  const auto bad = [] { return absl::InvalidArgumentError("a step message from rank 0 could not be decoded"); };
  Reader r(bytes);
  StepMessage m;
  int32_t kind = 0;
  if (!r.Get(&kind)) return bad();
  if (kind == int32_t(StepMessageKind::kStop)) {
    if (!r.done()) return bad();
    m.kind = StepMessageKind::kStop;
    return m;
  }
  if (kind != int32_t(StepMessageKind::kStep)) return bad();
  StepBatch& b = m.batch;
  bool ok = GetFlag(r, &m.want_logits) && GetFlag(r, &m.has_sampling) && r.Get(&b.max_blocks_per_seq) &&
            b.max_blocks_per_seq >= 0;
  for (auto* v : {&b.token_ids, &b.positions, &b.token_seq, &b.slot_mapping, &b.block_tables, &b.logits_rows}) {
    ok = ok && r.GetVector(v);
  }
  if (ok && m.has_sampling) ok = r.GetVector(&m.sampling.rows) && r.GetVector(&m.sampling.penalties);
  if (!ok || !r.done()) return bad();
  return m;
}

}  // namespace gqa
