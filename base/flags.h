// A small command-line flag parser shared by the programs: --name value,
// --name=value and boolean --name; unknown flags are errors.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "base/common.h"

namespace gqa {

class Flags {
 public:
  Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

  // Declares a flag with its default ("" for none) and help text.
  void Add(const std::string& name, const std::string& fallback, const std::string& help);
  void AddBool(const std::string& name, const std::string& help);

  // Parses argv; --help prints usage and sets help_requested().
  absl::Status Parse(int argc, char** argv);
  bool help_requested() const { return help_; }
  std::string Usage() const;

  bool Has(const std::string& name) const;  // given on the command line
  std::string Get(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name) const;
  absl::StatusOr<double> GetDouble(const std::string& name) const;
  // Comma-separated integers.
  absl::StatusOr<std::vector<int>> GetIntList(const std::string& name) const;

 private:
  struct Spec {
    std::string fallback, help;
    bool is_bool = false;
  };
  std::string program_, summary_;
  std::map<std::string, Spec> specs_;
  std::vector<std::string> order_;
  std::map<std::string, std::string> values_;
  bool help_ = false;
};

// Parses flags or exits: status 0 after --help, 2 after a usage error.
void ParseFlagsOrExit(Flags& flags, int argc, char** argv);

}  // namespace gqa
