// Locations shared by all tests: the fixtures beside the checkout (../shared, or $LANCE_QUANT_SHARED),
// the built executable, and a scratch directory.
#pragma once
#include <gtest/gtest.h>

#include <string>

namespace lq::test {

std::string shared_dir();            // "" when the fixtures are absent
std::string lance_mini_dir();        // shared_dir()/fixtures/lance-mini
std::string exe();                   // path of the built lance-quant ($LQ_TEST_EXE overrides)
std::string scratch_dir(const std::string& name);  // fresh empty dir under the build tree
// Runs a shell command; returns its exit status and fills `out` with stdout+stderr.
int run_command(const std::string& cmd, std::string* out = nullptr);
// The same with stderr dropped: `out` gets stdout only (a --json report without the progress lines).
int run_command_stdout(const std::string& cmd, std::string* out = nullptr);

}  // namespace lq::test

// Skips the current test with a clear message when ../shared is not beside the checkout.
#define LQ_REQUIRE_SHARED()                                                                   \
  do {                                                                                        \
    if (::lq::test::shared_dir().empty())                                                     \
      GTEST_SKIP() << "shared fixtures not found (expected ../shared beside the checkout or " \
                      "$LANCE_QUANT_SHARED); skipping";                                      \
  } while (0)
