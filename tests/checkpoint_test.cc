// Malformed checkpoints and unsupported configs: each gets an error that
// names the file, tensor or field, never a crash or an out-of-bounds read.
#include <filesystem>
#include <fstream>
#include <random>

#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/synthetic_model.h"
#include "engine/generate.h"

namespace gqa {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

// A safetensors file from a raw header and data section.
std::string RawSafetensors(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

absl::StatusOr<std::unique_ptr<Executor>> Open(const std::string& dir, int threads) {
  ExecutorOptions eo;
  eo.threads_per_rank = threads;
  eo.num_kv_blocks = 1;
  eo.block_size = 4;
  return Executor::Open(dir, eo);
}

std::string ErrorOpening(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  return f.ok() ? "(opened)" : std::string(f.status().message());
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir("model");
    spec_.layers = 2;
    ASSERT_OK(WriteSyntheticModel(spec_, dir_));
    file_ = dir_ + "/model.safetensors";
  }
  std::string LoadError() {
    auto m = Open(dir_, 1);
    return m.ok() ? "(loaded)" : std::string(m.status().message());
  }
  std::string dir_, file_;
  SyntheticModelSpec spec_;
};

TEST_F(CheckpointTest, ValidModelLoads) { EXPECT_EQ(LoadError(), "(loaded)"); }

// --mlock: every byte of every shard is locked, or a clear error (this test
// skips where the locked-memory limit is too small for the fixture).
TEST(CheckpointLockTest, LocksEveryShard) {
  const std::string dir = std::string(GQA_FIXTURES_DIR) + "/golden/llama_sharded";
  absl::StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::OpenDirectory(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  int64_t want = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".safetensors") want += int64_t(fs::file_size(e.path()));
  }
  absl::StatusOr<int64_t> locked = (*c)->LockInMemory();
  if (!locked.ok() && absl::IsResourceExhausted(locked.status())) {
    EXPECT_THAT(std::string(locked.status().message()), HasSubstr("locked-memory limit"));
    GTEST_SKIP() << locked.status();
  }
  ASSERT_TRUE(locked.ok()) << locked.status();
  EXPECT_EQ(*locked, want);
  EXPECT_GT(want, 0);
}

// The process's locked memory (VmLck of /proc/self/status), in bytes.
int64_t LockedBytesOfProcess() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmLck:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// --mlock where the CPU backend repacks bf16 weights at load: what stays
// locked is what the ranks read (the repacked copies and the embedding in
// the mapping), not the checkpoint as well, which would hold the weights
// twice. Checked against the kernel's own count of locked memory.
TEST(CheckpointLockTest, RepackedWeightsAreLockedOnce) {
  const std::string dir = std::string(GQA_FIXTURES_DIR) + "/golden/llama_bf16";
  const int64_t file_bytes = int64_t(fs::file_size(dir + "/model.safetensors"));
  const int64_t before = LockedBytesOfProcess();
  ASSERT_GE(before, 0) << "no VmLck in /proc/self/status";
  ExecutorOptions eo;
  eo.threads_per_rank = 2;
  eo.num_kv_blocks = 1;
  eo.block_size = 4;
  eo.mlock = true;
  absl::StatusOr<std::unique_ptr<Executor>> ex = Executor::Open(dir, eo);
  if (!ex.ok() && absl::IsResourceExhausted(ex.status())) {
    EXPECT_THAT(std::string(ex.status().message()), HasSubstr("locked-memory limit"));
    GTEST_SKIP() << ex.status();
  }
  ASSERT_TRUE(ex.ok()) << ex.status();
  const int64_t locked = LockedBytesOfProcess() - before;
  const int64_t reported = (*ex)->LockedWeightBytes();
  const bool repacked = (*ex)->model(0).weights().layers[0].q.w.layout != MatrixLayout::kRowMajor;
  std::printf("note: weights %s; %lld bytes locked (reported %lld), checkpoint %lld bytes\n",
              repacked ? "repacked into bf16 panels" : "read from the mapping", (long long)locked,
              (long long)reported, (long long)file_bytes);
  EXPECT_GT(reported, 0);
  // Whole pages are locked: at most one extra page at each end of each of
  // the 2 + 7 x layers matrices.
  const int64_t matrices = 2 + 7 * int64_t((*ex)->config().num_layers);
  EXPECT_GE(locked, reported);
  EXPECT_LE(locked, reported + matrices * 2 * 4096);
  if (repacked) {
    // Every matrix but the embedding is a copy; the checkpoint itself is no
    // longer locked, so about one checkpoint's worth, not two.
    EXPECT_LT(locked, file_bytes * 3 / 2);
  } else {
    EXPECT_EQ(reported, file_bytes);
  }
}

TEST_F(CheckpointTest, TruncatedFile) {
  const std::string bytes = ReadFile(file_);
  WriteFile(file_, bytes.substr(0, bytes.size() - 100));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("tensor '"), HasSubstr("truncated")));
}

TEST_F(CheckpointTest, TruncatedInsideHeader) {
  WriteFile(file_, ReadFile(file_).substr(0, 40));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("past the end")));
}

TEST_F(CheckpointTest, TooSmallFile) {
  WriteFile(file_, "abc");
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("too small")));
}

TEST_F(CheckpointTest, EmptyFile) {
  WriteFile(file_, "");
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("too small")));
}

TEST_F(CheckpointTest, HeaderNotJson) {
  WriteFile(file_, RawSafetensors("{not json", 16));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr("not a JSON object")));
}

TEST_F(CheckpointTest, HugeHeaderLength) {
  std::string bytes = ReadFile(file_);
  for (int i = 0; i < 8; ++i) bytes[i] = '\xff';
  WriteFile(file_, bytes);
  EXPECT_THAT(ErrorOpening(file_), HasSubstr("exceeds"));
}

TEST_F(CheckpointTest, RangeDisagreesWithShape) {
  WriteFile(file_, RawSafetensors(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr("tensor 'w'"), HasSubstr("needs 24")));
}

TEST_F(CheckpointTest, RangePastDataSection) {
  WriteFile(file_, RawSafetensors(R"({"w":{"dtype":"BF16","shape":[8],"data_offsets":[4,20]}})", 16));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr("tensor 'w'"), HasSubstr("runs past")));
}

TEST_F(CheckpointTest, OverlappingRanges) {
  WriteFile(file_, RawSafetensors(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                  R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                  16));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr("overlaps"), HasSubstr("'a'"), HasSubstr("'b'")));
}

TEST_F(CheckpointTest, BadEntries) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "unknown dtype 'Q4'"},
      {R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "non-negative"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "begin after"},
      {R"({"w":{"dtype":"F32","shape":[1]}})", "data_offsets"},
      {R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "missing dtype"},
      {R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})", "too large"},
      {R"({"w":7})", "not an object"},
  };
  for (const auto& [header, message] : cases) {
    WriteFile(file_, RawSafetensors(header, 16));
    EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr("tensor 'w'"), HasSubstr(message))) << header;
  }
}

// The damaged files that once hung gqa-server: each is refused naming the
// file and the tensor or field.
TEST_F(CheckpointTest, DamagedHeadersNameFileAndTensor) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[1, 2]", "not a JSON object"},
      {"not json at all", "not a JSON object"},
      {R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "data_offsets must be two non-negative"},
      {R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})", "too large"},
      {R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "unknown dtype 'Q4'"},
      {R"({"w":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}})", "missing dtype"},
      {R"({"w":{"dtype":"F32","shape":{"a":1},"data_offsets":[0,4]}})", "missing shape"},
  };
  for (const auto& [header, message] : cases) {
    WriteFile(file_, RawSafetensors(header, 16));
    EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr(message))) << header;
    EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr(message))) << header;
  }
  // Header lengths of 2^64-1 and one past the end of the file.
  std::string bytes = RawSafetensors("{}", 0);
  for (int i = 0; i < 8; ++i) bytes[i] = '\xff';
  WriteFile(file_, bytes);
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("exceeds")));
  bytes = RawSafetensors("{}", 0);
  bytes[0] = 3;
  WriteFile(file_, bytes);
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("past the end")));
}

// Headers and indexes nest at most 64 levels: the parser recurses per level.
TEST_F(CheckpointTest, DeeplyNestedHeaderAndIndex) {
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  // 64 levels in all ({"__metadata__": ...} is the first) parse and load.
  WriteFile(file_, RawSafetensors(R"({"__metadata__":)" + nested(63) + "}", 0));
  EXPECT_EQ(ErrorOpening(file_), "(opened)");
  WriteFile(file_, RawSafetensors(R"({"__metadata__":)" + nested(64) + "}", 0));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr("deeper than 64")));
  WriteFile(file_, RawSafetensors(nested(100000), 0));
  EXPECT_THAT(ErrorOpening(file_), AllOf(HasSubstr(file_), HasSubstr("deeper than 64")));
  // Brackets inside strings do not count.
  WriteFile(file_, RawSafetensors(R"({"__metadata__":{"k":")" + std::string(1000, '[') + R"("}})", 0));
  EXPECT_EQ(ErrorOpening(file_), "(opened)");

  const std::string sharded = testing::TempDir("deep_index");
  ASSERT_OK(WriteSyntheticModel(spec_, sharded, 2));
  const std::string index_path = sharded + "/model.safetensors.index.json";
  nlohmann::json index = nlohmann::json::parse(ReadFile(index_path));
  const std::string text = index.dump();
  WriteFile(index_path, text.substr(0, text.size() - 1) + R"(,"extra":)" + nested(100000) + "}");
  auto m = Open(sharded, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(index_path), HasSubstr("deeper than 64")));
}

TEST_F(CheckpointTest, MissingTensor) {
  std::vector<TensorToWrite> tensors = SyntheticTensors(spec_);
  std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  ASSERT_OK(WriteSafetensors(file_, tensors));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.layers.1.mlp.up_proj.weight"), HasSubstr("missing")));
}

TEST_F(CheckpointTest, MissingLmHeadWhenUntied) {
  std::vector<TensorToWrite> tensors = SyntheticTensors(spec_);
  std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "lm_head.weight"; });
  ASSERT_OK(WriteSafetensors(file_, tensors));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("lm_head.weight"), HasSubstr("tie_word_embeddings")));
}

TEST_F(CheckpointTest, MisshapenTensor) {
  SyntheticModelSpec other = spec_;
  other.kv_heads = 4;  // k_proj rows double
  std::vector<TensorToWrite> tensors = SyntheticTensors(spec_);
  for (TensorToWrite& t : tensors) {
    if (t.name == "model.layers.0.self_attn.k_proj.weight") {
      for (TensorToWrite& o : SyntheticTensors(other))
        if (o.name == t.name) t = o;
    }
  }
  ASSERT_OK(WriteSafetensors(file_, tensors));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr(file_), HasSubstr("model.layers.0.self_attn.k_proj.weight"),
                                 HasSubstr("[32, 64]"), HasSubstr("expected [16, 64]")));
}

TEST_F(CheckpointTest, NonFloatWeight) {
  std::vector<TensorToWrite> tensors = SyntheticTensors(spec_);
  for (TensorToWrite& t : tensors)
    if (t.name == "model.norm.weight") t.dtype_name = "I32";  // same byte size as F32
  ASSERT_OK(WriteSafetensors(file_, tensors));
  EXPECT_THAT(LoadError(), AllOf(HasSubstr("model.norm.weight"), HasSubstr("I32")));
}

TEST_F(CheckpointTest, ShardIndexProblems) {
  const std::string sharded = testing::TempDir("sharded");
  ASSERT_OK(WriteSyntheticModel(spec_, sharded, 3));
  ASSERT_TRUE(Open(sharded, 1).ok());
  const std::string index_path = sharded + "/model.safetensors.index.json";
  const nlohmann::json index = nlohmann::json::parse(ReadFile(index_path));

  nlohmann::json missing_file = index;
  missing_file["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
  WriteFile(index_path, missing_file.dump());
  auto m = Open(sharded, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), HasSubstr("model-00009-of-00009.safetensors"));

  nlohmann::json wrong_file = index;
  const std::string norm_file = index["weight_map"]["model.norm.weight"];
  const std::string other = norm_file == "model-00001-of-00003.safetensors" ? "model-00002-of-00003.safetensors"
                                                                             : "model-00001-of-00003.safetensors";
  wrong_file["weight_map"]["model.norm.weight"] = other;
  WriteFile(index_path, wrong_file.dump());
  m = Open(sharded, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(other), HasSubstr("model.norm.weight"), HasSubstr("not stored")));

  // Only plain names inside the model directory.
  for (const std::string& name : {std::string("../model.safetensors"), std::string(".."), std::string("."),
                                  std::string("/etc/passwd"), std::string("sub\\..\\x"),
                                  std::string("model-00001-of-00003.safetensors\0x", 34), std::string("")}) {
    nlohmann::json escape = index;
    escape["weight_map"]["model.norm.weight"] = name;
    WriteFile(index_path, escape.dump());
    m = Open(sharded, 1);
    ASSERT_FALSE(m.ok()) << name;
    EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(index_path), HasSubstr("not a file in the directory")))
        << name;
  }
  WriteFile(index_path, "[]");
  m = Open(sharded, 1);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(std::string(m.status().message()), AllOf(HasSubstr(index_path), HasSubstr("weight_map")));
}

TEST_F(CheckpointTest, NoWeights) {
  fs::remove(file_);
  EXPECT_THAT(LoadError(), HasSubstr("neither model.safetensors nor model.safetensors.index.json"));
}

// Random corruption of a valid file never crashes: it loads or fails cleanly.
TEST_F(CheckpointTest, RandomByteCorruption) {
  const std::string bytes = ReadFile(file_);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(bytes[i]);
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 300; ++iter) {
    std::string b = bytes;
    const int flips = 1 + iter % 4;
    for (int f = 0; f < flips; ++f) {
      const size_t at = rng() % (8 + header_len);  // the length and the header
      b[at] = char(rng());
    }
    WriteFile(file_, b);
    auto m = Open(dir_, 1);
    if (!m.ok()) {
      EXPECT_THAT(std::string(m.status().message()), HasSubstr(dir_)) << "iteration " << iter;
      continue;
    }
    // Whatever still loads was validated: a forward step reads every weight.
    GenerateOptions opts;
    opts.max_new_tokens = 1;
    EXPECT_TRUE(GenerateOne(**m, {1, 2}, opts).ok()) << "iteration " << iter;
  }
}

// ---- config.json ----

std::string ConfigError(nlohmann::json j) {
  auto c = ParseModelConfig(j.dump(), "config.json");
  return c.ok() ? "(ok)" : std::string(c.status().message());
}

TEST(ConfigTest, RefusesWhatItCannotServeNamingTheField) {
  SyntheticModelSpec spec;
  const nlohmann::json base = SyntheticConfigJson(spec);
  ASSERT_EQ(ConfigError(base), "(ok)");
  auto with = [&](auto mutate) {
    nlohmann::json j = base;
    mutate(j);
    return ConfigError(j);
  };
  EXPECT_THAT(with([](auto& j) { j["architectures"] = {"GPT2LMHeadModel"}; }),
              AllOf(HasSubstr("'architectures'"), HasSubstr("GPT2LMHeadModel")));
  EXPECT_THAT(with([](auto& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }),
              AllOf(HasSubstr("rope_scaling.rope_type"), HasSubstr("yarn")));
  EXPECT_THAT(with([](auto& j) { j["rope_parameters"] = {{"rope_type", "dynamic"}, {"rope_theta", 1e4}, {"factor", 2.0}}; }),
              HasSubstr("rope_parameters.rope_type"));
  EXPECT_THAT(with([](auto& j) { j["num_key_value_heads"] = 3; }), HasSubstr("'num_key_value_heads'"));
  EXPECT_THAT(with([](auto& j) { j.erase("hidden_size"); }), AllOf(HasSubstr("'hidden_size'"), HasSubstr("missing")));
  EXPECT_THAT(with([](auto& j) { j["hidden_act"] = "gelu"; }), HasSubstr("'hidden_act'"));
  EXPECT_THAT(with([](auto& j) { j["eos_token_id"] = "x"; }), HasSubstr("'eos_token_id'"));
  EXPECT_THAT(with([](auto& j) { j["eos_token_id"] = 100000; }), HasSubstr("'eos_token_id'"));
  EXPECT_THAT(with([](auto& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}}; }),
              HasSubstr("'original_max_position_embeddings'"));
  EXPECT_THAT(with([](auto& j) {
                j["architectures"] = {"Qwen2ForCausalLM"};
                j["use_sliding_window"] = true;
                j["sliding_window"] = 64;
              }),
              HasSubstr("'use_sliding_window'"));
}

// config.json that is not an object, lacks architectures or nests too deep.
TEST(ConfigTest, DamagedConfigNamesTheFileAndField) {
  SyntheticModelSpec spec;
  const nlohmann::json base = SyntheticConfigJson(spec);
  auto error = [](const std::string& text) {
    auto c = ParseModelConfig(text, "dir/config.json");
    return c.ok() ? "(ok)" : std::string(c.status().message());
  };
  EXPECT_THAT(error("[]"), AllOf(HasSubstr("dir/config.json"), HasSubstr("not a JSON object")));
  EXPECT_THAT(error(""), AllOf(HasSubstr("dir/config.json"), HasSubstr("not a JSON object")));
  nlohmann::json j = base;
  j.erase("architectures");
  EXPECT_THAT(error(j.dump()), AllOf(HasSubstr("dir/config.json"), HasSubstr("'architectures'")));
  j = base;
  j["architectures"] = nlohmann::json::array();
  EXPECT_THAT(error(j.dump()), HasSubstr("'architectures'"));
  // 64 levels parse; 65 do not.
  auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  const std::string text = base.dump();
  EXPECT_EQ(error(text.substr(0, text.size() - 1) + R"(,"extra":)" + nested(63) + "}"), "(ok)");
  EXPECT_THAT(error(text.substr(0, text.size() - 1) + R"(,"extra":)" + nested(64) + "}"),
              AllOf(HasSubstr("dir/config.json"), HasSubstr("deeper than 64")));
  EXPECT_THAT(error(nested(100000)), HasSubstr("deeper than 64"));
}

// Sizes derived from a config are computed with overflow checks (a KV block
// of 0 bytes divided by zero in gqa-plan, gqa-generate and gqa-server).
TEST(ConfigTest, RefusesSizesThatOverflow) {
  SyntheticModelSpec spec;
  nlohmann::json j = SyntheticConfigJson(spec);
  j["num_attention_heads"] = 1 << 30;
  j["num_key_value_heads"] = 1 << 30;
  j["num_hidden_layers"] = 1 << 30;
  j["head_dim"] = 1024;
  EXPECT_THAT(ConfigError(j), AllOf(HasSubstr("'num_key_value_heads'"), HasSubstr("KV cache bytes per block")));
  j = SyntheticConfigJson(spec);
  j["vocab_size"] = 1 << 30;
  j["hidden_size"] = 1 << 30;
  j["head_dim"] = 64;
  EXPECT_THAT(ConfigError(j), HasSubstr("exceeds 2^50"));
  j = SyntheticConfigJson(spec);
  j["num_hidden_layers"] = 1 << 30;
  j["intermediate_size"] = 1 << 20;
  j["hidden_size"] = 1 << 12;
  j["num_attention_heads"] = 32;
  j["num_key_value_heads"] = 8;
  EXPECT_THAT(ConfigError(j), HasSubstr("'num_hidden_layers'"));
  // A 405B-class config is well inside the bounds.
  j = SyntheticConfigJson(spec);
  j["num_hidden_layers"] = 126;
  j["hidden_size"] = 16384;
  j["intermediate_size"] = 53248;
  j["num_attention_heads"] = 128;
  j["num_key_value_heads"] = 8;
  j["vocab_size"] = 128256;
  EXPECT_EQ(ConfigError(j), "(ok)");
}

TEST(ConfigTest, ReadsTheFieldsItHonours) {
  SyntheticModelSpec spec;
  nlohmann::json j = SyntheticConfigJson(spec);
  j["eos_token_id"] = {2, 7};
  j["head_dim"] = 24;
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 5e5}, {"factor", 32.0}, {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  auto c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->eos_token_ids, (std::vector<int>{2, 7}));
  EXPECT_EQ(c->head_dim, 24);
  EXPECT_EQ(c->rope_theta, 5e5);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLlama3);
  EXPECT_EQ(c->rope_factor, 32.0);
  EXPECT_EQ(c->rope_original_max_position, 8192);

  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4096;
  j["max_position_embeddings"] = 32768;
  c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 4096);
  j["sliding_window"] = nullptr;
  c = ParseModelConfig(j.dump(), "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 0);
}

}  // namespace
}  // namespace gqa
