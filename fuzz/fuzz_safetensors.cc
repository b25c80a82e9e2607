// A checkpoint from untrusted bytes: the first byte chooses what the rest
// is, (0) one .safetensors file, or (1) model.safetensors.index.json next to
// a valid shard. Either is refused with a status or opened; an opened file's
// tensors must lie inside it.
#include <filesystem>

#include "fuzz/fuzz_util.h"
#include "worker/safetensors.h"

using gqa::fuzz::ScratchDir;
using gqa::fuzz::WriteFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view rest = gqa::fuzz::AsText(data + 1, size - 1);
  const std::string dir = ScratchDir();
  if (data[0] % 2 == 0) {
    const std::string path = dir + "/one.safetensors";
    WriteFile(path, rest);
    auto f = gqa::SafetensorsFile::Open(path);
    if (f.ok()) {
      // Every accepted tensor lies inside the file: its bytes fit, and its
      // first and last bytes can be read.
      size_t total = 0;
      for (const auto& [name, t] : (*f)->tensors()) {
        GQA_FUZZ_CHECK(t.bytes <= rest.size());
        total += t.bytes;
        if (t.bytes == 0) continue;
        const auto* p = static_cast<const volatile uint8_t*>(t.data);
        (void)p[0];
        (void)p[t.bytes - 1];
      }
      GQA_FUZZ_CHECK(total <= rest.size());
    }
    return 0;
  }
  static const bool shard_written = [&] {
    // One f32 tensor "a" of shape [2] in a shard the index may name.
    const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string bytes(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) bytes[i] = char((n >> (8 * i)) & 0xff);
    bytes += header + std::string(8, '\0');
    std::filesystem::create_directories(dir + "/ckpt");
    WriteFile(dir + "/ckpt/shard-1.safetensors", bytes);
    return true;
  }();
  (void)shard_written;
  WriteFile(dir + "/ckpt/model.safetensors.index.json", rest);
  auto c = gqa::Checkpoint::OpenDirectory(dir + "/ckpt");
  (void)c;
  return 0;
}
