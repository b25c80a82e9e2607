// Reading (mmapped, validated) and writing Hugging Face safetensors files,
// and a checkpoint directory made of one or several of them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/common.h"
#include "kernels/dtype.h"

namespace gqa {

struct TensorInfo {
  std::string name;
  std::string dtype_name;       // as stored, e.g. "BF16"
  std::optional<DType> dtype;   // empty for stored types the engine cannot compute with
  std::vector<int64_t> shape;
  const void* data = nullptr;   // inside the mapping
  size_t bytes = 0;
  std::string file;             // path of the file holding it, for messages

  int64_t NumElements() const;
};

// Locks [data, data + bytes) in RAM (mlock: pages are read in first); the
// error names `what` and the limit that refused.
absl::Status LockMemory(const void* data, size_t bytes, const std::string& what);

// A read-only memory mapping of a whole file.
class MappedFile {
 public:
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(const std::string& path);
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  // Reads every page in and locks the mapping in RAM (mlock), so that the
  // kernel cannot evict idle weights; an error says which limit refused.
  absl::Status Lock(const std::string& path_for_messages);
  void Unlock();

 private:
  MappedFile(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  const uint8_t* data_;
  size_t size_;
};

// One .safetensors file. Open() checks the header and every tensor's byte
// range (inside the file, consistent with shape x dtype, no overlaps), so
// that later reads of tensor data can never go out of bounds.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }
  absl::Status Lock() { return map_->Lock(path_); }
  void Unlock() { map_->Unlock(); }
  size_t size() const { return map_->size(); }

 private:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> OpenUnguarded(const std::string& path);
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, TensorInfo> tensors_;
};

// All tensors of a model directory: model.safetensors, or the shards listed
// by model.safetensors.index.json. Also constructible from memory (for
// synthetic models in benchmarks and tests).
class Checkpoint {
 public:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> OpenDirectory(const std::string& dir);

  // Tensors whose data lives in `storage` (kept alive by the checkpoint).
  static std::unique_ptr<Checkpoint> FromMemory(std::vector<TensorInfo> tensors,
                                                std::vector<std::vector<uint8_t>> storage,
                                                std::string description);

  // The tensor, or NotFound naming it and where it was looked for.
  absl::StatusOr<const TensorInfo*> Find(const std::string& name) const;
  bool Contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The tensor with a computable dtype and exactly this shape, or an error
  // naming the tensor, its file and both shapes.
  absl::StatusOr<const TensorInfo*> Get(const std::string& name,
                                        const std::vector<int64_t>& shape) const;
  const std::string& description() const { return description_; }
  const std::map<std::string, const TensorInfo*>& tensors() const { return tensors_; }
  // Locks every mapped file in RAM (see MappedFile::Lock); returns the bytes
  // locked (0 for a checkpoint made in memory).
  absl::StatusOr<int64_t> LockInMemory();
  // Undoes LockInMemory.
  void UnlockInMemory();

 private:
  static absl::StatusOr<std::unique_ptr<Checkpoint>> OpenDirectoryUnguarded(const std::string& dir);
  std::string description_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<TensorInfo> memory_tensors_;
  std::vector<std::vector<uint8_t>> memory_storage_;
  std::map<std::string, const TensorInfo*> tensors_;
};

// A tensor to write: raw little-endian bytes of dtype_name ("F32", "BF16", ...).
struct TensorToWrite {
  std::string name;
  std::string dtype_name;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

std::string ShapeString(const std::vector<int64_t>& shape);

}  // namespace gqa
