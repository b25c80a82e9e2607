#include "worker/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "base/json_depth.h"

namespace gqa {
namespace {

using Json = nlohmann::json;

// The format's own limit on the JSON header.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

// Element sizes of every dtype the format defines; only F32/F16/BF16 are
// computable, the others are validated and carried so that a checkpoint with
// an extra integer tensor still opens.
std::optional<size_t> StoredDTypeSize(const std::string& name) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1},  {"U64", 8}, {"U32", 4}, {"U16", 2},  {"U8", 1},  {"BOOL", 1},
      {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(name);
  if (it == sizes.end()) return std::nullopt;
  return it->second;
}

std::optional<DType> ComputableDType(const std::string& name) {
  if (name == "F32") return DType::kF32;
  if (name == "F16") return DType::kF16;
  if (name == "BF16") return DType::kBF16;
  return std::nullopt;
}

absl::Status Corrupt(const std::string& path, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": ", what));
}

absl::Status TensorError(const std::string& path, const std::string& tensor, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ": tensor '", tensor, "': ", what));
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int64_t TensorInfo::NumElements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

void Checkpoint::UnlockInMemory() {
  for (const auto& f : files_) f->Unlock();
}

absl::StatusOr<int64_t> Checkpoint::LockInMemory() {
  int64_t bytes = 0;
  for (const auto& f : files_) {
    RETURN_IF_ERROR(f->Lock());
    bytes += int64_t(f->size());
  }
  return bytes;
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError(absl::StrCat(path, ": ", std::strerror(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const uint8_t* data = nullptr;
  if (size > 0) {
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap: ", std::strerror(err)));
    }
    data = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return std::unique_ptr<MappedFile>(new MappedFile(data, size));
}

absl::Status LockMemory(const void* data, size_t bytes, const std::string& what) {
  if (data == nullptr || bytes == 0) return absl::OkStatus();
  if (::mlock(data, bytes) == 0) return absl::OkStatus();
  const int err = errno;
  struct rlimit lim{};
  ::getrlimit(RLIMIT_MEMLOCK, &lim);
  return absl::ResourceExhaustedError(absl::StrCat(
      what, ": cannot lock ", bytes, " bytes in memory (--mlock): ", std::strerror(err),
      err == ENOMEM || err == EPERM
          ? absl::StrCat("; the locked-memory limit is ",
                         lim.rlim_cur == RLIM_INFINITY ? std::string("unlimited") : absl::StrCat(lim.rlim_cur, " bytes"),
                         " (raise it with ulimit -l / LimitMEMLOCK= / --ulimit memlock, or grant CAP_IPC_LOCK)")
          : ""));
}

absl::Status MappedFile::Lock(const std::string& path) { return LockMemory(data_, size_, path); }

void MappedFile::Unlock() {
  if (data_ != nullptr) ::munlock(data_, size_);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  try {
    return OpenUnguarded(path);
  } catch (const std::exception& e) {
    return Corrupt(path, e.what());
  }
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::OpenUnguarded(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  ASSIGN_OR_RETURN(file->map_, MappedFile::Open(path));
  const uint8_t* base = file->map_->data();
  const size_t size = file->map_->size();
  if (size < 8) return Corrupt(path, absl::StrCat("file of ", size, " bytes is too small for a safetensors header"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kMaxHeaderBytes) {
    return Corrupt(path, absl::StrCat("header length ", header_len, " exceeds the 100 MiB limit"));
  }
  if (header_len > size - 8) {
    return Corrupt(path, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                      size, "-byte file (truncated?)"));
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  if (JsonDeeperThan(std::string_view(header_begin, header_len))) {
    return Corrupt(path, absl::StrCat("header is nested deeper than ", kMaxJsonDepth, " levels"));
  }
  Json header = Json::parse(header_begin, header_begin + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return Corrupt(path, "header is not a JSON object");
  }
  const uint8_t* data_begin = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  struct Range { uint64_t begin, end; const std::string* name; };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const Json& e = it.value();
    if (!e.is_object()) return TensorError(path, name, "entry is not an object");
    auto dt = e.find("dtype");
    auto sh = e.find("shape");
    auto off = e.find("data_offsets");
    if (dt == e.end() || !dt->is_string()) return TensorError(path, name, "missing dtype");
    if (sh == e.end() || !sh->is_array()) return TensorError(path, name, "missing shape");
    if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      return TensorError(path, name, "data_offsets must be two non-negative integers");
    }
    TensorInfo t;
    t.name = name;
    t.file = path;
    t.dtype_name = dt->get<std::string>();
    const std::optional<size_t> esize = StoredDTypeSize(t.dtype_name);
    if (!esize) return TensorError(path, name, absl::StrCat("unknown dtype '", t.dtype_name, "'"));
    t.dtype = ComputableDType(t.dtype_name);
    uint64_t expected = *esize;
    for (const Json& d : *sh) {
      if (!d.is_number_unsigned()) return TensorError(path, name, "shape must hold non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (uint64_t{1} << 40) || __builtin_mul_overflow(expected, dim, &expected) ||
          expected > (uint64_t{1} << 62)) {
        return TensorError(path, name, "shape is too large");
      }
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t begin = (*off)[0].get<uint64_t>();
    const uint64_t end = (*off)[1].get<uint64_t>();
    if (begin > end) return TensorError(path, name, "data_offsets begin after they end");
    if (end > data_size) {
      return TensorError(path, name, absl::StrCat("byte range [", begin, ", ", end,
                                                  ") runs past the ", data_size,
                                                  "-byte data section (truncated file?)"));
    }
    if (end - begin != expected) {
      return TensorError(path, name, absl::StrCat("byte range holds ", end - begin, " bytes but ",
                                                  t.dtype_name, " ", ShapeString(t.shape),
                                                  " needs ", expected));
    }
    t.data = data_begin + begin;
    t.bytes = static_cast<size_t>(end - begin);
    auto [pos, inserted] = file->tensors_.emplace(name, std::move(t));
    ranges.push_back({begin, end, &pos->first});
  }
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    // Empty tensors occupy no bytes and cannot overlap anything.
    if (ranges[i].begin == ranges[i].end) continue;
    for (size_t j = i; j-- > 0;) {
      if (ranges[j].begin == ranges[j].end) continue;
      if (ranges[i].begin < ranges[j].end) {
        return TensorError(path, *ranges[i].name,
                           absl::StrCat("byte range overlaps tensor '", *ranges[j].name, "'"));
      }
      break;
    }
  }
  return file;
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenDirectory(const std::string& dir) {
  try {
    return OpenDirectoryUnguarded(dir);
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat(dir, ": ", e.what()));
  }
}

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::OpenDirectoryUnguarded(const std::string& dir) {
  namespace fs = std::filesystem;
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->description_ = dir;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;
  std::error_code ec;
  if (fs::exists(index, ec)) {
    ASSIGN_OR_RETURN(std::string text, ReadTextFile(index.string()));
    if (JsonDeeperThan(text)) {
      return absl::DataLossError(absl::StrCat(index.string(), ": nested deeper than ", kMaxJsonDepth, " levels"));
    }
    Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": no 'weight_map' object"));
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) {
        return absl::DataLossError(absl::StrCat(index.string(), ": weight_map entry '", it.key(), "' is not a file name"));
      }
      const std::string file = it.value().get<std::string>();
      // Only a plain name: no path separator, no parent, no NUL cutting it short.
      if (file.empty() || file.find_first_of(std::string("/\\\0", 3)) != std::string::npos || file == "." ||
          file == "..") {
        return absl::DataLossError(absl::StrCat(index.string(), ": weight_map entry '", it.key(),
                                                "' names '", file, "', not a file in the directory"));
      }
      weight_map[it.key()] = file;
      if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
    }
  } else if (fs::exists(single, ec)) {
    files.push_back("model.safetensors");
  } else {
    return absl::NotFoundError(absl::StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json found"));
  }
  std::sort(files.begin(), files.end());
  std::map<std::string, const SafetensorsFile*> by_name;
  for (const std::string& f : files) {
    ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open((fs::path(dir) / f).string()));
    by_name[f] = file.get();
    ckpt->files_.push_back(std::move(file));
  }
  if (weight_map.empty()) {
    for (const auto& [name, t] : ckpt->files_[0]->tensors()) ckpt->tensors_[name] = &t;
  } else {
    for (const auto& [name, f] : weight_map) {
      const SafetensorsFile* file = by_name.at(f);
      auto it = file->tensors().find(name);
      if (it == file->tensors().end()) {
        return absl::DataLossError(absl::StrCat(file->path(), ": tensor '", name,
                                                "' is listed in model.safetensors.index.json but not stored in this file"));
      }
      ckpt->tensors_[name] = &it->second;
    }
  }
  return ckpt;
}

std::unique_ptr<Checkpoint> Checkpoint::FromMemory(std::vector<TensorInfo> tensors,
                                                   std::vector<std::vector<uint8_t>> storage,
                                                   std::string description) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint());
  ckpt->description_ = std::move(description);
  ckpt->memory_tensors_ = std::move(tensors);
  ckpt->memory_storage_ = std::move(storage);
  for (const TensorInfo& t : ckpt->memory_tensors_) ckpt->tensors_[t.name] = &t;
  return ckpt;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(absl::StrCat(description_, ": tensor '", name, "' is missing"));
  }
  return it->second;
}

absl::StatusOr<const TensorInfo*> Checkpoint::Get(const std::string& name,
                                                  const std::vector<int64_t>& shape) const {
  ASSIGN_OR_RETURN(const TensorInfo* t, Find(name));
  if (t->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has shape ",
                                                   ShapeString(t->shape), ", expected ",
                                                   ShapeString(shape)));
  }
  if (!t->dtype) {
    return absl::InvalidArgumentError(absl::StrCat(t->file, ": tensor '", name, "' has dtype ",
                                                   t->dtype_name, "; weights must be F32, F16 or BF16"));
  }
  return t;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    header[t.name] = {{"dtype", t.dtype_name},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // keep the data section 8-byte aligned
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create"));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(uint64_t(text.size()) >> (8 * i));
  out.write(reinterpret_cast<const char*>(len), 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const TensorToWrite& t : tensors) {
    out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace gqa
