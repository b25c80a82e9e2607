#include "base/flags.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gqa {

void Flags::Add(const std::string& name, const std::string& fallback, const std::string& help) {
  specs_[name] = Spec{fallback, help, false};
  order_.push_back(name);
}

void Flags::AddBool(const std::string& name, const std::string& help) {
  specs_[name] = Spec{"", help, true};
  order_.push_back(name);
}

absl::Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return absl::OkStatus();
    }
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    if (it->second.is_bool) {
      if (has_value && value != "true" && value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value (or =true/=false)"));
      }
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    values_[name] = value;
  }
  return absl::OkStatus();
}

std::string Flags::Usage() const {
  std::string s = absl::StrCat("usage: ", program_, " [flags]\n", summary_, "\n\nflags:\n");
  for (const std::string& name : order_) {
    const Spec& sp = specs_.at(name);
    absl::StrAppend(&s, "  --", name, sp.is_bool ? "" : " V", "\n      ", sp.help);
    if (!sp.is_bool && !sp.fallback.empty()) absl::StrAppend(&s, " (default: ", sp.fallback, ")");
    absl::StrAppend(&s, "\n");
  }
  return s;
}

bool Flags::Has(const std::string& name) const { return values_.count(name) != 0; }

std::string Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  auto spec = specs_.find(name);
  GQA_CHECK(spec != specs_.end(), "flag was not declared");
  return spec->second.fallback;
}

bool Flags::GetBool(const std::string& name) const { return Get(name) == "true"; }

absl::StatusOr<int64_t> Flags::GetInt(const std::string& name) const {
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v)) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer, got '", Get(name), "'"));
  return v;
}

absl::StatusOr<double> Flags::GetDouble(const std::string& name) const {
  double v;
  if (!absl::SimpleAtod(Get(name), &v)) return absl::InvalidArgumentError(absl::StrCat("--", name, " must be a number, got '", Get(name), "'"));
  return v;
}

absl::StatusOr<std::vector<int>> Flags::GetIntList(const std::string& name) const {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(Get(name), ',', absl::SkipWhitespace())) {
    int v;
    if (!absl::SimpleAtoi(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", part, "' is not an integer"));
    }
    out.push_back(v);
  }
  return out;
}

void ParseFlagsOrExit(Flags& flags, int argc, char** argv) {
  absl::Status st = flags.Parse(argc, argv);
  if (!st.ok()) {
    std::fprintf(stderr, "error: %s\n\n%s", std::string(st.message()).c_str(), flags.Usage().c_str());
    std::exit(2);
  }
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    std::exit(0);
  }
}

}  // namespace gqa
