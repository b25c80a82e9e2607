// Chat templates rendered by our Jinja subset vs transformers/jinja2
// (fixtures: tests/fixtures/tokenizer/chat.jsonl from make_tokenizer_fixtures.py).
#include "server/tokenizer/chat_template.h"

#include "tests/tokenizer/test_util.h"

namespace gqa {
namespace {

using testing::FixturePath;
using testing::ReadJsonl;
using testing::ReadText;

std::string TemplateSource(const std::string& name) {
  if (name == "llama3" || name == "qwen3") {
    auto cfg = nlohmann::json::parse(ReadText(testing::TokenizerDir(name) + "/tokenizer_config.json"));
    return cfg["chat_template"].get<std::string>();
  }
  return ReadText(FixturePath("templates/" + name + ".jinja"));
}

TEST(ChatTemplateTest, MatchesTransformersOnAllFixtures) {
  auto records = ReadJsonl(FixturePath("chat.jsonl"));
  ASSERT_GE(records.size(), 60u);
  std::map<std::string, std::unique_ptr<ChatTemplate>> templates;
  int bad = 0, rendered = 0, raised = 0;
  std::set<std::string> names;
  for (const auto& r : records) {
    const std::string name = r["template"];
    names.insert(name);
    if (!templates.count(name)) {
      auto t = ChatTemplate::Compile(TemplateSource(name));
      ASSERT_TRUE(t.ok()) << name << ": " << t.status();
      templates[name] = std::move(*t);
    }
    nlohmann::ordered_json vars = nlohmann::ordered_json::object();
    for (const char* key : {"messages", "tools", "add_generation_prompt", "bos_token", "eos_token", "enable_thinking"})
      if (r.contains(key)) vars[key] = r[key];
    auto text = templates[name]->Render(vars);
    const std::string where = name + " conversation " + r["conversation"].dump() + " agp=" + r["add_generation_prompt"].dump();
    if (r.contains("error")) {
      ++raised;
      EXPECT_FALSE(text.ok()) << where << ": expected raise_exception";
      if (!text.ok()) {
        EXPECT_EQ(std::string(text.status().message()), r["error"].get<std::string>()) << where;
      }
      continue;
    }
    ++rendered;
    ASSERT_TRUE(text.ok()) << where << ": " << text.status();
    if (*text != r["text"].get<std::string>() && ++bad <= 5) {
      ADD_FAILURE() << where << "\n--- got\n" << *text << "\n--- expected\n" << r["text"].get<std::string>();
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(names.size(), 6u);
  EXPECT_GT(rendered, 40);
  EXPECT_GT(raised, 0);
}

TEST(ChatTemplateTest, RealConfigsCompileAtLoad) {
  for (const char* name : {"llama3", "qwen3"}) {
    auto tok = Tokenizer::Load(testing::TokenizerDir(name));
    ASSERT_TRUE(tok.ok()) << tok.status();
    EXPECT_NE((*tok)->chat_template(), nullptr) << name;
  }
  // The mistral/ config has chat_template: null.
  auto tok = Tokenizer::Load(testing::TokenizerDir("mistral"));
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->chat_template(), nullptr);
}

TEST(ChatTemplateTest, UnsupportedConstructsFailAtCompile) {
  struct Case {
    const char* source;
    const char* needle;
  } cases[] = {
      {"{{ x | wordwrap(3) }}", "unsupported filter 'wordwrap'"},
      {"{% if x is prime %}{% endif %}", "unsupported test 'prime'"},
      {"{{ cycler(1, 2) }}", "unsupported function 'cycler'"},
      {"{{ s.zfill(3) }}", "unsupported method 'zfill'"},
      {"{% macro m() %}{% endmacro %}", "{% macro %}"},
      {"{% include 'x' %}", "{% include %}"},
      {"{% for x in y %}", "missing {% endfor %}"},
      {"{{ 'unterminated }}", "unclosed tag"},
      {"{% endif %}", "{% endif %}"},
  };
  for (const Case& c : cases) {
    auto t = ChatTemplate::Compile(c.source);
    ASSERT_FALSE(t.ok()) << c.source;
    EXPECT_NE(std::string(t.status().message()).find(c.needle), std::string::npos)
        << c.source << " -> " << t.status();
  }
}

TEST(ChatTemplateTest, UnsupportedTemplateFailsTokenizerLoad) {
  const std::string tj = ReadText(testing::TokenizerDir("mistral") + "/tokenizer.json");
  auto tok = Tokenizer::FromJson(tj, R"({"chat_template": "{{ messages | wordcount }}"})");
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(std::string(tok.status().message()).find("unsupported filter 'wordcount'"), std::string::npos)
      << tok.status();
}

}  // namespace
}  // namespace gqa

namespace gqa {
namespace {

// Operator precedence and associativity, against what Python jinja2 3.1.6
// renders for the same expressions (recorded by hand).
TEST(ChatTemplateTest, ExpressionPrecedenceMatchesJinja2) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{{ 1 + 2 * 3 }}", "7"},
      {"{{ 2 * 3 + 1 }}", "7"},
      {"{{ 10 - 2 - 3 }}", "5"},
      {"{{ 2 ** 3 ** 2 }}", "64"},
      {"{{ 7 // 2 * 3 % 4 }}", "1"},
      {"{{ not 1 == 2 and 3 > 2 or false }}", "True"},
      {"{{ 1 + 2 * 3 == 7 }}", "True"},
      {"{{ 20 / 4 - 1 }}", "4.0"},
      {"{{ \"x\" ~ 2 * 3 }}", "x6"},
      {"{{ 1 - 4 * 2 + 3 }}", "-4"},
  };
  for (const auto& [source, want] : cases) {
    auto t = ChatTemplate::Compile(source);
    ASSERT_TRUE(t.ok()) << source << ": " << t.status();
    auto out = (*t)->Render(nlohmann::ordered_json::object());
    ASSERT_TRUE(out.ok()) << source << ": " << out.status();
    EXPECT_EQ(*out, want) << source;
  }
}

}  // namespace
}  // namespace gqa
