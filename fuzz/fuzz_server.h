// The model and tokenizer the request fuzzers parse against: a golden test
// checkpoint (tiny, loads in milliseconds) and a real tokenizer with a chat
// template, made once per process.
#pragma once

#include <memory>

#include "engine/engine.h"
#include "server/frontend.h"
#include "tokenizer/tokenizer.h"
#include "worker/executor.h"

namespace gqa::fuzz {

inline std::unique_ptr<Tokenizer> LoadTokenizer() {
  auto t = Tokenizer::Load(GQA_FUZZ_TOKENIZER_DIR);
  if (!t.ok()) {
    std::fprintf(stderr, "fuzz: %s\n", std::string(t.status().message()).c_str());
    std::abort();
  }
  return std::move(*t);
}

inline Frontend& SharedFrontend() {
  static Frontend* fe = [] {
    ExecutorOptions eo;
    eo.num_kv_blocks = 16;
    eo.threads_per_rank = 1;
    auto ex = Executor::Open(GQA_FUZZ_MODEL_DIR, eo);
    if (!ex.ok()) {
      std::fprintf(stderr, "fuzz: %s\n", std::string(ex.status().message()).c_str());
      std::abort();
    }
    EngineOptions o;
    o.max_model_len = 256;
    auto engine = std::make_unique<Engine>(std::move(*ex), o);
    FrontendOptions fo;
    fo.served_model_name = "fuzz";
    return new Frontend(std::move(engine), LoadTokenizer(), fo);
  }();
  return *fe;
}

}  // namespace gqa::fuzz
