// io/text_file.h: text inputs (calibration, evaluation, chat files, prompts) must be UTF-8 text; a
// binary file or a stray byte is refused up front, naming the line and byte.
#include <gtest/gtest.h>

#include <random>

#include "io/error.h"
#include "io/text_file.h"

namespace lq::io {
namespace {

std::string error_of(const std::string& s) {
  try {
    check_text(s, "f.txt");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(CheckText, AcceptsUtf8) {
  EXPECT_EQ(error_of(""), "");
  EXPECT_EQ(error_of("plain ascii\nline two\r\n"), "");
  EXPECT_EQ(error_of("caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xef\xbf\xbd"), "");  // 2-, 3-, 4-byte forms
  EXPECT_EQ(error_of("\xf4\x8f\xbf\xbf"), "");  // U+10FFFF
}

TEST(CheckText, RefusesInvalidSequencesNamingLineAndByte) {
  EXPECT_NE(error_of("ok\nbad \xff here").find("[f.txt:2] invalid UTF-8 at byte 7 (column 5, 0xFF)"), std::string::npos)
      << error_of("ok\nbad \xff here");
  EXPECT_NE(error_of("a\x80").find("invalid UTF-8 at byte 1"), std::string::npos);           // lone continuation
  EXPECT_NE(error_of("\xc0\xaf").find("invalid UTF-8 at byte 0"), std::string::npos);        // overlong '/'
  EXPECT_NE(error_of("\xe0\x80\xaf").find("invalid UTF-8 at byte 0"), std::string::npos);    // overlong, 3 bytes
  EXPECT_NE(error_of("\xed\xa0\x80").find("invalid UTF-8 at byte 0"), std::string::npos);    // surrogate D800
  EXPECT_NE(error_of("\xf4\x90\x80\x80").find("invalid UTF-8 at byte 0"), std::string::npos);  // above U+10FFFF
  EXPECT_NE(error_of("abc\xe4\xb8").find("invalid UTF-8 at byte 3"), std::string::npos);     // truncated at the end
  EXPECT_NE(error_of(std::string("a\0b", 3)).find("NUL byte at byte 1"), std::string::npos);
}

TEST(CheckText, RandomBytesAreRefused) {
  std::mt19937 rng(3);
  std::string s(20000, '\0');
  for (char& c : s) c = char(rng() & 0xff);
  EXPECT_NE(error_of(s).find("expected UTF-8 text"), std::string::npos);
}

}  // namespace
}  // namespace lq::io
