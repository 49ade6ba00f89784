// io/model_files.h: the symlink rule for files of a model directory.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "io/error.h"
#include "io/model_files.h"
#include "io/safetensors.h"
#include "test_paths.h"

namespace lq::io {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelFiles, RegularFilesAndLinksInsideAreRead) {
  const fs::path d = test::scratch_dir("model_files_inside");
  fs::create_directories(d / "m/blobs");
  std::ofstream(d / "m/blobs/abc") << "{}";
  fs::create_symlink("blobs/abc", d / "m/config.json");
  std::ofstream(d / "m/tokenizer.json") << "{}";
  EXPECT_EQ(model_file((d / "m").string(), "config.json"), (d / "m/config.json").string());
  EXPECT_EQ(model_file((d / "m").string(), "tokenizer.json"), (d / "m/tokenizer.json").string());
  EXPECT_EQ(model_file((d / "m").string(), "absent.json"), "");
}

TEST(ModelFiles, LinksOutOfTheDirectoryAreRefused) {
  const fs::path d = test::scratch_dir("model_files_outside");
  fs::create_directories(d / "m");
  fs::create_symlink("/etc/passwd", d / "m/passwd.json");
  std::string e = error_of([&] { model_file((d / "m").string(), "passwd.json"); });
  EXPECT_NE(e.find("symbolic link to /etc/passwd, outside the model directory"), std::string::npos) << e;
  EXPECT_EQ(e.find("root:"), std::string::npos) << "nothing of the target may leak: " << e;
  fs::create_symlink(d / "nowhere", d / "m/broken.json");
  e = error_of([&] { model_file((d / "m").string(), "broken.json"); });
  EXPECT_NE(e.find("broken symbolic link"), std::string::npos) << e;
  fs::create_directories(d / "m/dir.json");
  e = error_of([&] { model_file((d / "m").string(), "dir.json"); });
  EXPECT_NE(e.find("not a regular file"), std::string::npos) << e;
}

TEST(ModelFiles, HuggingFaceCacheSnapshotsMayLinkIntoTheirBlobs) {
  // <repo>/snapshots/<rev>/model.safetensors -> ../../blobs/<hash>, as huggingface_hub lays it out.
  const fs::path d = test::scratch_dir("model_files_hf_cache");
  const fs::path repo = d / "models--org--name";
  fs::create_directories(repo / "blobs");
  fs::create_directories(repo / "snapshots/0123abcd");
  {
    SafetensorsWriter w((repo / "blobs/deadbeef").string());
    w.declare("x", DType::F32, {2});
    const float v[2] = {1, 2};
    w.write(v, sizeof v);
    w.finish();
  }
  fs::create_symlink("../../blobs/deadbeef", repo / "snapshots/0123abcd/model.safetensors");
  const TensorStore s((repo / "snapshots/0123abcd").string());
  EXPECT_TRUE(s.has("x"));
  // The same link from a directory that is not a cache snapshot is refused.
  fs::create_directories(d / "plain");
  fs::create_symlink(repo / "blobs/deadbeef", d / "plain/model.safetensors");
  const std::string e = error_of([&] { TensorStore t((d / "plain").string()); });
  EXPECT_NE(e.find("outside the model directory"), std::string::npos) << e;
}

TEST(ModelFiles, ShardLinkedToAnotherFileIsRefusedBeforeReading) {
  const fs::path d = test::scratch_dir("model_files_shard");
  fs::create_directories(d / "m");
  std::ofstream(d / "m/model.safetensors.index.json") << R"({"weight_map": {"x": "model-00001.safetensors"}})";
  fs::create_symlink("/etc/passwd", d / "m/model-00001.safetensors");
  const std::string e = error_of([&] { TensorStore t((d / "m").string()); });
  EXPECT_NE(e.find("symbolic link to /etc/passwd"), std::string::npos) << e;
  EXPECT_EQ(e.find("root"), std::string::npos) << e;
}

}  // namespace
}  // namespace lq::io
