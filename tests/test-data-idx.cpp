// IDX / gzip readers and Fashion-MNIST: a committed fixture (the first 32 Fashion-MNIST test
// images and labels), corrupted copies of it, and the full installed dataset when present.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"
#include "support.h"

namespace crossdl {
namespace {

namespace fs = std::filesystem;
using test::gzip_bytes;
using test::input_error_of;
using test::read_bytes;
using test::scratch_dir;
using test::source_path;
using test::write_bytes;

const std::string kFashionDir = "/usr/share/datasets/fashion-mnist";

// Runs f, which must throw InputError, and returns its message ("" if it did not throw).
std::string fixture_images() {
  return source_path("tests/data/fashion-t10k-32-images-idx3-ubyte.gz");
}
std::string fixture_labels() {
  return source_path("tests/data/fashion-t10k-32-labels-idx1-ubyte.gz");
}

std::vector<std::byte> gunzipped(const std::string& path) {
  return read_file_maybe_gz(path);
}

std::vector<std::byte> idx_labels(std::uint32_t n, const std::vector<std::uint8_t>& labels) {
  std::vector<std::byte> b = {std::byte{0},      std::byte{0},       std::byte{8},
                              std::byte{1},      std::byte(n >> 24), std::byte(n >> 16),
                              std::byte(n >> 8), std::byte(n)};
  for (auto l : labels) b.push_back(std::byte{l});
  return b;
}

TEST(DataIdx, ReadsCommittedFixtureGz) {
  const Split s = idx_read(fixture_images(), fixture_labels());
  ASSERT_EQ(s.size(), 32);
  EXPECT_EQ(s.x.dtype(), DType::U8);
  EXPECT_EQ(s.x.shape(), (Shape{32, 1, 28, 28}));
  EXPECT_EQ(s.x.layout(), Layout::NCHW);
  EXPECT_EQ(s.y.dtype(), DType::I64);
  EXPECT_EQ(s.y.shape(), (Shape{32}));
  const std::vector<std::int64_t> first = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  auto y = s.y.values<std::int64_t>();
  EXPECT_EQ(std::vector<std::int64_t>(y.begin(), y.begin() + 10), first);
  // Known pixels of the first test image (an ankle boot): its byte sum and row 14.
  auto x = s.x.values<std::uint8_t>();
  EXPECT_EQ(std::accumulate(x.begin(), x.begin() + 784, 0), 33456);
  EXPECT_EQ(x[14 * 28 + 12], 0x62);
  EXPECT_EQ(x[14 * 28 + 13], 0x88);
}

TEST(DataIdx, PlainAndGzAgree) {
  const std::string dir = scratch_dir("plain");
  write_bytes(dir + "/images", gunzipped(fixture_images()));
  write_bytes(dir + "/labels", gunzipped(fixture_labels()));
  const Split gz = idx_read(fixture_images(), fixture_labels());
  const Split plain = idx_read(dir + "/images", dir + "/labels");
  EXPECT_TRUE(plain.x.identical(gz.x));
  EXPECT_TRUE(plain.y.identical(gz.y));
  EXPECT_EQ(read_bytes(dir + "/images").size(), 16u + 32u * 784u);

  const Tensor t = idx_read_tensor(fixture_images());
  EXPECT_EQ(t.dtype(), DType::U8);
  EXPECT_EQ(t.shape(), (Shape{32, 28, 28}));
  const Tensor l = idx_read_tensor(dir + "/labels");
  EXPECT_EQ(l.shape(), (Shape{32}));
  EXPECT_EQ(l.values<std::uint8_t>()[0], 9);
}

TEST(DataIdx, GzipConcatenatedMembers) {
  const std::string dir = scratch_dir("multi");
  std::vector<std::byte> raw = idx_labels(4, {3, 1, 4, 1});
  std::vector<std::byte> a(raw.begin(), raw.begin() + 5), b(raw.begin() + 5, raw.end());
  std::vector<std::byte> gz = gzip_bytes(a);
  const std::vector<std::byte> gz2 = gzip_bytes(b);
  gz.insert(gz.end(), gz2.begin(), gz2.end());
  write_bytes(dir + "/l.gz", gz);
  EXPECT_EQ(read_file_maybe_gz(dir + "/l.gz"), raw);
}

TEST(DataIdx, MissingFile) {
  const std::string msg = input_error_of([] { idx_read_tensor("/nonexistent/file.idx"); });
  EXPECT_NE(msg.find("/nonexistent/file.idx"), std::string::npos) << msg;
  const std::string dir = scratch_dir("dir");
  const std::string msg2 = input_error_of([&] { read_file_maybe_gz(dir); });
  EXPECT_NE(msg2.find("folder"), std::string::npos) << msg2;
}

TEST(DataIdx, TruncatedImages) {
  const std::string dir = scratch_dir("trunc");
  std::vector<std::byte> raw = gunzipped(fixture_images());
  raw.resize(1000);
  const std::string path = dir + "/train-images-idx3-ubyte";
  write_bytes(path, raw);
  EXPECT_THROW(idx_read(path, fixture_labels()), InputError);
  const std::string msg = input_error_of([&] { idx_read(path, fixture_labels()); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("32 images of 28x28 (25104 bytes)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1000 bytes"), std::string::npos) << msg;

  // Also gzipped, and a file cut inside the header.
  write_bytes(path + ".gz", gzip_bytes(raw));
  EXPECT_NE(input_error_of([&] { idx_read(path + ".gz", fixture_labels()); }).find("truncated"),
            std::string::npos);
  raw.resize(10);
  write_bytes(path, raw);
  const std::string msg2 = input_error_of([&] { idx_read(path, fixture_labels()); });
  EXPECT_NE(msg2.find("truncated"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("at byte 0"), std::string::npos) << msg2;
}

TEST(DataIdx, TrailingBytes) {
  const std::string dir = scratch_dir("trail");
  std::vector<std::byte> raw = gunzipped(fixture_labels());
  raw.push_back(std::byte{0});
  write_bytes(dir + "/labels", raw);
  const std::string msg = input_error_of([&] { idx_read(fixture_images(), dir + "/labels"); });
  EXPECT_NE(msg.find("at byte 40"), std::string::npos) << msg;
}

TEST(DataIdx, WrongMagic) {
  const std::string dir = scratch_dir("magic");
  // Labels passed as images: expected 0x00000803, found 0x00000801.
  const std::string msg = input_error_of([&] { idx_read(fixture_labels(), fixture_labels()); });
  EXPECT_NE(msg.find(fixture_labels()), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 0x00000803, found 0x00000801"), std::string::npos) << msg;
  // A doubly gzipped file: after one gunzip the data starts with the gzip magic again.
  write_bytes(dir + "/double.gz", gzip_bytes(read_bytes(fixture_images())));
  const std::string msg2 = input_error_of([&] { idx_read(dir + "/double.gz", fixture_labels()); });
  EXPECT_NE(msg2.find("expected 0x00000803, found 0x1f8b08"), std::string::npos) << msg2;
  // Not unsigned bytes.
  std::vector<std::byte> raw = gunzipped(fixture_labels());
  raw[2] = std::byte{0x0d};
  write_bytes(dir + "/float.idx", raw);
  const std::string msg3 = input_error_of([&] { idx_read_tensor(dir + "/float.idx"); });
  EXPECT_NE(msg3.find("expected 0x08"), std::string::npos) << msg3;
  EXPECT_NE(msg3.find("found 0x0d"), std::string::npos) << msg3;
}

TEST(DataIdx, CorruptGzip) {
  const std::string dir = scratch_dir("gz");
  std::vector<std::byte> gz = read_bytes(fixture_images());
  // Damage the deflate data in the middle.
  std::vector<std::byte> bad = gz;
  for (std::size_t i = 100; i < 140; ++i) bad[i] = std::byte{0xff};
  write_bytes(dir + "/bad.gz", bad);
  EXPECT_THROW(read_file_maybe_gz(dir + "/bad.gz"), InputError);
  const std::string msg = input_error_of([&] { idx_read(dir + "/bad.gz", fixture_labels()); });
  EXPECT_NE(msg.find(dir + "/bad.gz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("gzip"), std::string::npos) << msg;
  // Truncated gzip stream.
  std::vector<std::byte> cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  write_bytes(dir + "/cut.gz", cut);
  const std::string msg2 = input_error_of([&] { read_file_maybe_gz(dir + "/cut.gz"); });
  EXPECT_NE(msg2.find(dir + "/cut.gz"), std::string::npos) << msg2;
  EXPECT_NE(msg2.find("truncated gzip"), std::string::npos) << msg2;
  // A bad CRC in the trailer.
  std::vector<std::byte> crc = gz;
  crc[crc.size() - 6] ^= std::byte{0x55};
  write_bytes(dir + "/crc.gz", crc);
  EXPECT_NE(input_error_of([&] { read_file_maybe_gz(dir + "/crc.gz"); }).find("corrupt gzip"),
            std::string::npos);
  // Just the magic.
  write_bytes(dir + "/magic.gz", {std::byte{0x1f}, std::byte{0x8b}});
  EXPECT_THROW(read_file_maybe_gz(dir + "/magic.gz"), InputError);
}

TEST(DataIdx, CountMismatch) {
  const std::string dir = scratch_dir("count");
  std::vector<std::uint8_t> labels(31, 1);
  write_bytes(dir + "/labels", idx_labels(31, labels));
  const std::string msg = input_error_of([&] { idx_read(fixture_images(), dir + "/labels"); });
  EXPECT_NE(msg.find(dir + "/labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 32 labels"), std::string::npos) << msg;
  EXPECT_NE(msg.find("found 31"), std::string::npos) << msg;
}

TEST(DataIdx, LabelOutOfRange) {
  const std::string dir = scratch_dir("range");
  std::vector<std::uint8_t> labels(32, 1);
  labels[5] = 10;
  write_bytes(dir + "/labels.gz", gzip_bytes(idx_labels(32, labels)));
  EXPECT_THROW(idx_read(fixture_images(), dir + "/labels.gz"), InputError);
  const std::string msg = input_error_of([&] { idx_read(fixture_images(), dir + "/labels.gz"); });
  EXPECT_NE(msg.find("at byte 13"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 0..9"), std::string::npos) << msg;
}

TEST(DataFashionMnist, FolderOfFixtures) {
  // A folder laid out like the installed dataset, from the 32-image fixture (plain for train).
  const std::string dir = scratch_dir("fm");
  write_bytes(dir + "/train-images-idx3-ubyte", gunzipped(fixture_images()));
  write_bytes(dir + "/train-labels-idx1-ubyte", gunzipped(fixture_labels()));
  fs::copy_file(fixture_images(), dir + "/t10k-images-idx3-ubyte.gz");
  fs::copy_file(fixture_labels(), dir + "/t10k-labels-idx1-ubyte.gz");
  DataOptions o;
  o.root = dir;
  o.train_limit = 20;
  const Dataset ds = load_dataset("fashion-mnist", o);
  EXPECT_EQ(ds.name, "fashion-mnist");
  EXPECT_EQ(ds.train.size(), 20);
  EXPECT_EQ(ds.test.size(), 32);
  EXPECT_EQ(ds.full_train_size, 32);
  EXPECT_EQ(ds.num_classes, 10);
  ASSERT_EQ(ds.class_names.size(), 10u);
  EXPECT_EQ(ds.class_names[9], "Ankle boot");
  EXPECT_EQ(ds.sources.size(), 4u);
  EXPECT_EQ(ds.sample_shape(), (Shape{1, 28, 28}));
  EXPECT_FALSE(ds.is_text());

  fs::remove(dir + "/t10k-labels-idx1-ubyte.gz");
  const std::string msg = input_error_of([&] { load_dataset("fashion-mnist", o); });
  EXPECT_NE(msg.find("t10k-labels-idx1-ubyte"), std::string::npos) << msg;
  const std::string msg2 = input_error_of([&] { fashion_mnist_read(dir + "/nope"); });
  EXPECT_NE(msg2.find(dir + "/nope"), std::string::npos) << msg2;
}

TEST(DataFashionMnist, FullInstalledDataset) {
  if (!fs::exists(kFashionDir + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST is not installed in " << kFashionDir
                 << " (apt-get install dataset-fashion-mnist)";
  }
  DataOptions o;
  o.root = kFashionDir;
  const auto t0 = std::chrono::steady_clock::now();
  const Dataset ds = load_dataset("fashion-mnist", o);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ info     ] full Fashion-MNIST loaded in %.3f s\n", secs);
  EXPECT_EQ(ds.train.size(), 60000);
  EXPECT_EQ(ds.test.size(), 10000);
  EXPECT_EQ(ds.full_train_size, 60000);
  EXPECT_EQ(ds.train.x.shape(), (Shape{60000, 1, 28, 28}));
  EXPECT_EQ(ds.test.x.shape(), (Shape{10000, 1, 28, 28}));
  auto y = ds.test.y.values<std::int64_t>();
  EXPECT_EQ(std::vector<std::int64_t>(y.begin(), y.begin() + 10),
            (std::vector<std::int64_t>{9, 2, 1, 1, 6, 1, 4, 6, 5, 7}));
  // The training set is balanced: 6000 of each class.
  std::vector<int> per_class(10, 0);
  for (std::int64_t l : ds.train.y.values<std::int64_t>()) per_class[static_cast<std::size_t>(l)]++;
  for (int c : per_class) EXPECT_EQ(c, 6000);
  // The fixture is the first 32 test images.
  const Split fx = idx_read(fixture_images(), fixture_labels());
  EXPECT_TRUE(ds.test.x.slice_rows(0, 32).reshaped({32, 1, 28, 28}, Layout::NCHW).identical(fx.x));

  o.train_limit = 1000;
  o.test_limit = 100000;  // larger than the split: keeps all
  const Dataset lim = load_dataset("fashion-mnist", o);
  EXPECT_EQ(lim.train.size(), 1000);
  EXPECT_EQ(lim.train.x.shape(), (Shape{1000, 1, 28, 28}));
  EXPECT_EQ(lim.train.x.layout(), Layout::NCHW);
  EXPECT_EQ(lim.test.size(), 10000);
  EXPECT_EQ(lim.full_train_size, 60000);
  EXPECT_EQ(lim.full_test_size, 10000);
  EXPECT_TRUE(lim.train.y.identical(ds.train.y.slice_rows(0, 1000)));
}

}  // namespace
}  // namespace crossdl
