// Chat templates rendered by our Jinja subset vs transformers/jinja2
// (fixtures: tests/fixtures/tokenizer/chat.jsonl from make_tokenizer_fixtures.py).
#include "tokenizer/chat_template.h"

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

namespace gqa {
namespace {

// `text` holds `part`.
#define EXPECT_HAS(text, part)                                          \
  do {                                                                  \
    const std::string t_ = (text);                                      \
    EXPECT_NE(t_.find(part), std::string::npos) << t_.substr(0, 500);   \
  } while (0)

// Compile and render; the text or the error message.
std::string RenderOrError(const std::string& source,
                          const nlohmann::ordered_json& vars = nlohmann::ordered_json::object()) {
  auto t = ChatTemplate::Compile(source);
  if (!t.ok()) return "compile: " + std::string(t.status().message());
  auto out = (*t)->Render(vars);
  if (!out.ok()) return "render: " + std::string(out.status().message()) + " (" + absl::StatusCodeToString(out.status().code()) + ")";
  return *out;
}

std::string Repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// Templates nest at most 64 levels: blocks, and expression levels in a tag
// (the parser, checks and renderer recurse per level).
TEST(ChatTemplateLimitsTest, NestingIsBounded) {
  // Blocks: the template body is level 1, so 63 nested ifs fit.
  auto ifs = [](int n) { return Repeat("{% if true %}", n) + "x" + Repeat("{% endif %}", n); };
  EXPECT_EQ(RenderOrError(ifs(63)), "x");
  EXPECT_HAS(RenderOrError(ifs(64)), ("blocks nested deeper than 64"));
  EXPECT_HAS(RenderOrError(ifs(100000)), ("blocks nested deeper than 64"));
  // Parentheses: each takes one level for its expression and one for the
  // unary level under it; the tag itself takes two.
  auto parens = [](int n) { return "{{ " + std::string(n, '(') + "1" + std::string(n, ')') + " }}"; };
  EXPECT_EQ(RenderOrError(parens(31)), "1");
  EXPECT_HAS(RenderOrError(parens(32)), ("nested deeper than 64"));
  EXPECT_HAS(RenderOrError(parens(100000)), ("nested deeper than 64"));
  // Chains build trees as deep as they are long.
  auto plus = [](int n) { return "{{ 1" + Repeat(" + 1", n) + " }}"; };
  EXPECT_EQ(RenderOrError(plus(40)), "41");
  EXPECT_HAS(RenderOrError(plus(100000)), ("nested deeper than 64"));
  EXPECT_HAS(RenderOrError("{{ 'a'" + Repeat("|trim", 100000) + " }}"), ("nested deeper than 64"));
  EXPECT_HAS(RenderOrError("{{ " + Repeat("not ", 100000) + "1 }}"), ("nested deeper than 64"));
  EXPECT_HAS(RenderOrError("{{ " + Repeat("-", 100000) + "1 }}"), ("nested deeper than 64"));
}

// Values a template builds: nesting, length, items; loops and output.
TEST(ChatTemplateLimitsTest, RenderingIsBounded) {
  auto wrap = [](int n) {
    return "{% set ns = namespace(x=1) %}{% for i in range(" + std::to_string(n) +
           ") %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|length }}";
  };
  EXPECT_EQ(RenderOrError(wrap(128)), "1");
  EXPECT_HAS(RenderOrError(wrap(129)), ("nested deeper than 128"));
  EXPECT_HAS(RenderOrError(wrap(100000)), ("nested deeper than 128"));
  // Doubling a string or a list.
  const std::string grow_string =
      "{% set ns = namespace(s='0123456789abcdef') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}";
  EXPECT_HAS(RenderOrError(grow_string), ("longer than"));
  const std::string grow_list =
      "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}";
  EXPECT_HAS(RenderOrError(grow_list), ("more than 1048576 items"));
  // A list shared many times over prints far more than it holds.
  const std::string wide =
      "{% set ns = namespace(l=['0123456789abcdef']) %}{% for i in range(18) %}{% set ns.l = ns.l + ns.l %}{% endfor %}"
      "{% set ns.m = [ns.l] %}{% for i in range(18) %}{% set ns.m = ns.m + ns.m %}{% endfor %}{{ ns.m }}";
  EXPECT_HAS(RenderOrError(wide), ("longer than"));
  EXPECT_HAS(RenderOrError("{{ ('x' * 1000000)|indent(1000000000) }}"), ("width above 1024"));
  EXPECT_HAS(RenderOrError("{% set s = 'ab' * 8000000 %}{{ s.replace('a', s) }}"), ("longer than"));
  // Empty loop bodies still count: 10^15 iterations end at the step limit.
  const std::string loops = RenderOrError(
      "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}"
      "{% endfor %}{% endfor %}{% endfor %}");
  EXPECT_HAS(loops, "too many steps");
  EXPECT_HAS(loops, "INVALID_ARGUMENT");  // the request's fault: 400, not 429
  // Output past 32 MiB.
  EXPECT_HAS(RenderOrError("{% for i in range(10) %}{{ 'x' * 8000000 }}{% endfor %}"),
              ("output longer than"));
  // Request values nest up to the body limit and render.
  nlohmann::ordered_json deep = 1;
  for (int i = 0; i < 63; ++i) deep = nlohmann::ordered_json::array({deep});
  EXPECT_EQ(RenderOrError("{{ v|tojson|length }}", {{"v", deep}}), std::to_string(63 * 2 + 1));
}

}  // namespace
}  // namespace gqa
