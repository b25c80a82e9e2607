// gqa-convert: the pooled K/V heads against a mean-pool computed here from
// the input tensors, G = H as the identity, first/random per seed, bad G
// refused, and the converted model running in the engine.
#include <cstdio>
#include <cstring>
#include <fstream>

#include "kernels/dtype.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "worker/convert.h"
#include "worker/synthetic_model.h"
#include "engine/generate.h"

namespace gqa {
namespace {

using Json = nlohmann::json;

// An MHA model with q/k/v biases (Qwen2), in two shards, with a tokenizer file.
SyntheticModelSpec MhaSpec(DType dtype) {
  SyntheticModelSpec s;
  s.arch = Architecture::kQwen2;
  s.layers = 2;
  s.hidden = 64;
  s.heads = 8;
  s.kv_heads = 8;
  s.dtype = dtype;
  s.seed = 7;
  s.max_position = 256;
  return s;
}

std::string MakeMha(const std::string& name, DType dtype = DType::kF32) {
  const std::string dir = testing::TempDir(name);
  EXPECT_TRUE(WriteSyntheticModel(MhaSpec(dtype), dir, /*shards=*/3).ok());
  std::ofstream(dir + "/tokenizer.json") << "{\"model\": {}}\n";
  return dir;
}

absl::StatusOr<ConvertReport> Convert(const std::string& in, const std::string& out, int g,
                                      KvConversion method = KvConversion::kMean, uint64_t seed = 0) {
  ConvertOptions o;
  o.in_dir = in;
  o.out_dir = out;
  o.kv_heads = g;
  o.method = method;
  o.seed = seed;
  return ConvertCheckpoint(o);
}

std::vector<float> AsFloats(const TensorInfo& t) {
  std::vector<float> v(t.NumElements());
  const auto* p = static_cast<const uint8_t*>(t.data);
  for (size_t i = 0; i < v.size(); ++i) {
    if (t.dtype_name == "F32") {
      std::memcpy(&v[i], p + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      v[i] = gqa::Bf16ToFloat(h);
    }
  }
  return v;
}

std::vector<std::string> KvNames(int layers) {
  std::vector<std::string> names;
  for (int l = 0; l < layers; ++l) {
    for (const char* proj : {"k_proj", "v_proj"}) {
      for (const char* kind : {"weight", "bias"}) {
        names.push_back("model.layers." + std::to_string(l) + ".self_attn." + proj + "." + kind);
      }
    }
  }
  return names;
}

bool SameBytes(const TensorInfo& a, const TensorInfo& b) {
  return a.dtype_name == b.dtype_name && a.shape == b.shape && a.bytes == b.bytes &&
         std::memcmp(a.data, b.data, a.bytes) == 0;
}

TEST(GqaConvertTest, MeanPoolMatchesGroupMeansOfTheInput) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const std::string in = MakeMha("in", dtype), out = testing::TempDir("out");
    ASSERT_OK_AND_ASSIGN(ConvertReport r, Convert(in, out, 2));
    EXPECT_EQ(r.kv_heads_before, 8);
    EXPECT_EQ(r.kv_heads_after, 2);
    EXPECT_EQ(r.tensors_rewritten, 8);
    EXPECT_EQ(r.kv_bytes_per_token_before, 4 * r.kv_bytes_per_token_after);
    ASSERT_OK_AND_ASSIGN(auto src, Checkpoint::OpenDirectory(in));
    ASSERT_OK_AND_ASSIGN(auto dst, Checkpoint::OpenDirectory(out));
    const int hd = 8, group = 4;
    for (const std::string& name : KvNames(2)) {
      ASSERT_OK_AND_ASSIGN(const TensorInfo* a, src->Find(name));
      ASSERT_OK_AND_ASSIGN(const TensorInfo* b, dst->Find(name));
      ASSERT_EQ(b->shape[0], 2 * hd) << name;
      ASSERT_EQ(b->dtype_name, a->dtype_name);
      const std::vector<float> x = AsFloats(*a), y = AsFloats(*b);
      const int64_t row = a->shape.size() == 2 ? a->shape[1] : 1;
      ASSERT_EQ(y.size(), size_t(2 * hd * row));
      // y[g][d][c] = mean over the group's heads h of x[h][d][c].
      for (int g = 0; g < 2; ++g) {
        for (int64_t i = 0; i < hd * row; ++i) {
          float sum = 0;
          for (int j = 0; j < group; ++j) sum += x[(g * group + j) * hd * row + i];
          const float want = sum / group;
          const float tol = dtype == DType::kF32 ? 1e-6f : std::abs(want) / 128 + 1e-6f;
          ASSERT_NEAR(y[g * hd * row + i], want, tol) << name << " [" << g << "] " << i;
        }
      }
    }
    // Every other tensor is copied as it is.
    for (const auto& [name, t] : src->tensors()) {
      if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos) continue;
      ASSERT_OK_AND_ASSIGN(const TensorInfo* b, dst->Find(name));
      EXPECT_TRUE(SameBytes(*t, *b)) << name;
    }
    std::ifstream cfg(out + "/config.json");
    const Json j = Json::parse(cfg);
    EXPECT_EQ(j["num_key_value_heads"], 2);
    EXPECT_EQ(j["num_attention_heads"], 8);
    EXPECT_TRUE(std::filesystem::exists(out + "/tokenizer.json"));
    EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors.index.json"));
    EXPECT_TRUE(std::filesystem::exists(out + "/model-00003-of-00003.safetensors"));
  }
}

TEST(GqaConvertTest, AllHeadsKeptIsTheIdentity) {
  const std::string in = MakeMha("in", DType::kBF16);
  ASSERT_OK_AND_ASSIGN(auto src, Checkpoint::OpenDirectory(in));
  for (KvConversion m : {KvConversion::kMean, KvConversion::kFirst}) {
    const std::string out = testing::TempDir(m == KvConversion::kMean ? "mean" : "first");
    ASSERT_OK(Convert(in, out, 8, m).status());
    ASSERT_OK_AND_ASSIGN(auto dst, Checkpoint::OpenDirectory(out));
    ASSERT_EQ(dst->tensors().size(), src->tensors().size());
    for (const auto& [name, t] : src->tensors()) {
      ASSERT_OK_AND_ASSIGN(const TensorInfo* b, dst->Find(name));
      EXPECT_TRUE(SameBytes(*t, *b)) << name;
    }
  }
}

TEST(GqaConvertTest, FirstKeepsEachGroupsFirstHead) {
  const std::string in = MakeMha("in"), out = testing::TempDir("out");
  ASSERT_OK(Convert(in, out, 4, KvConversion::kFirst).status());
  ASSERT_OK_AND_ASSIGN(auto src, Checkpoint::OpenDirectory(in));
  ASSERT_OK_AND_ASSIGN(auto dst, Checkpoint::OpenDirectory(out));
  for (const std::string& name : KvNames(2)) {
    ASSERT_OK_AND_ASSIGN(const TensorInfo* a, src->Find(name));
    ASSERT_OK_AND_ASSIGN(const TensorInfo* b, dst->Find(name));
    const size_t head_bytes = a->bytes / 8;
    for (int g = 0; g < 4; ++g) {
      EXPECT_EQ(std::memcmp(static_cast<const uint8_t*>(b->data) + g * head_bytes,
                            static_cast<const uint8_t*>(a->data) + 2 * g * head_bytes, head_bytes),
                0)
          << name << " group " << g;
    }
  }
}

TEST(GqaConvertTest, RandomIsDeterministicPerSeedWithTheOriginalsScale) {
  const std::string in = MakeMha("in");
  const std::string a = testing::TempDir("a"), b = testing::TempDir("b"), c = testing::TempDir("c");
  ASSERT_OK(Convert(in, a, 2, KvConversion::kRandom, 5).status());
  ASSERT_OK(Convert(in, b, 2, KvConversion::kRandom, 5).status());
  ASSERT_OK(Convert(in, c, 2, KvConversion::kRandom, 6).status());
  ASSERT_OK_AND_ASSIGN(auto src, Checkpoint::OpenDirectory(in));
  ASSERT_OK_AND_ASSIGN(auto ca, Checkpoint::OpenDirectory(a));
  ASSERT_OK_AND_ASSIGN(auto cb, Checkpoint::OpenDirectory(b));
  ASSERT_OK_AND_ASSIGN(auto cc, Checkpoint::OpenDirectory(c));
  auto stddev = [](const std::vector<float>& v) {
    double s = 0, q = 0;
    for (float x : v) s += x, q += double(x) * x;
    const double m = s / v.size();
    return std::sqrt(q / v.size() - m * m);
  };
  for (const std::string& name : KvNames(2)) {
    ASSERT_OK_AND_ASSIGN(const TensorInfo* ta, ca->Find(name));
    ASSERT_OK_AND_ASSIGN(const TensorInfo* tb, cb->Find(name));
    ASSERT_OK_AND_ASSIGN(const TensorInfo* tc, cc->Find(name));
    ASSERT_OK_AND_ASSIGN(const TensorInfo* orig, src->Find(name));
    EXPECT_TRUE(SameBytes(*ta, *tb)) << name;
    EXPECT_FALSE(SameBytes(*ta, *tc)) << name;
    const double want = stddev(AsFloats(*orig)), got = stddev(AsFloats(*ta));
    const double tol = name.find("bias") != std::string::npos ? 0.5 : 0.1;  // 16 or 1024 samples
    EXPECT_NEAR(got / want, 1.0, tol) << name;
  }
}

TEST(GqaConvertTest, RefusesGThatDoesNotDivideWithTheChoices) {
  const std::string in = MakeMha("in"), out = testing::TempDir("out");
  for (int g : {3, 16, 0}) {
    const absl::Status st = Convert(in, out, g).status();
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << st;
    EXPECT_THAT(st.message(), ::testing::HasSubstr("choose one of 1, 2, 4, 8")) << g;
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/config.json"));
}

std::string RunProgram(const std::string& args, int* status) {
  FILE* pipe = popen((std::string(GQA_BIN_DIR) + "/" + args + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof(buf), pipe)) out.append(buf, n);
  *status = pclose(pipe);
  return out;
}

TEST(GqaConvertTest, ProgramPrintsTheKvSavingAndRefusesBadG) {
  const std::string in = MakeMha("in"), out = testing::TempDir("out");
  int status = -1;
  std::string text = RunProgram("gqa-convert --in " + in + " --out " + out + " --kv-heads 5", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(text, ::testing::HasSubstr("choose one of 1, 2, 4, 8"));
  text = RunProgram("gqa-convert --in " + in + " --out " + out + " --kv-heads 2 --method first", &status);
  EXPECT_EQ(status, 0) << text;
  // 2 layers x (K + V) x heads x 8 dims x 4 bytes.
  EXPECT_THAT(text, ::testing::HasSubstr("1024 -> 256 bytes (4.00x smaller)")) << text;
  text = RunProgram("gqa-convert --in " + in + " --out " + out + " --kv-heads 2 --method best", &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(text, ::testing::HasSubstr("mean, first or random"));
}

TEST(GqaConvertTest, ConvertedModelRunsInTheEngine) {
  const std::string in = MakeMha("in");
  ExecutorOptions eo;
  eo.num_kv_blocks = 8;
  ASSERT_OK_AND_ASSIGN(auto original, Executor::Open(in, eo));
  GenerateOptions go;
  go.max_new_tokens = 8;
  go.stop_at_eos = false;
  const std::vector<int> prompt = {1, 17, 42, 99, 5};
  ASSERT_OK_AND_ASSIGN(GenerateResult want, GenerateOne(*original, prompt, go));
  for (int g : {8, 2, 1}) {
    const std::string out = testing::TempDir("g" + std::to_string(g));
    ASSERT_OK(Convert(in, out, g).status());
    for (int tp : {1, 2}) {
      eo.tp = tp;
      ASSERT_OK_AND_ASSIGN(auto ex, Executor::Open(out, eo));
      EXPECT_EQ(ex->config().num_kv_heads, g);
      ASSERT_OK_AND_ASSIGN(GenerateResult got, GenerateOne(*ex, prompt, go));
      ASSERT_EQ(got.tokens.size(), 8u);
      if (g == 8) {
        EXPECT_EQ(got.tokens, want.tokens) << "tp=" << tp;  // the identity
      }
    }
  }
}

}  // namespace
}  // namespace gqa
