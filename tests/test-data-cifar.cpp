// CIFAR-10 binary batches, generated in the format in a scratch folder.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
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
using test::read_bytes;
using test::scratch_dir;
using test::write_bytes;
using test::write_text;

// Pixel value of record r of file f at (channel, row, col): distinct and easy to recompute.
std::uint8_t pixel(int f, int r, int c, int h, int w) {
  return static_cast<std::uint8_t>((f * 31 + r * 7 + c * 50 + h * 3 + w) % 256);
}
std::int64_t label_of(int f, int r) {
  return (f * 3 + r) % 10;
}

// data_batch_1..5.bin with 3 records each (file index 1..5) and test_batch.bin (file 0) with 4.
std::string make_cifar_dir(const std::string& dir) {
  for (int f = 0; f <= 5; ++f) {
    const int n = f == 0 ? 4 : 3;
    std::vector<std::byte> b;
    for (int r = 0; r < n; ++r) {
      b.push_back(std::byte(label_of(f, r)));
      for (int c = 0; c < 3; ++c)
        for (int h = 0; h < 32; ++h)
          for (int w = 0; w < 32; ++w) b.push_back(std::byte{pixel(f, r, c, h, w)});
    }
    write_bytes(
        dir + "/" +
            (f == 0 ? std::string("test_batch.bin") : "data_batch_" + std::to_string(f) + ".bin"),
        b);
  }
  return dir;
}

TEST(DataCifar10, ReadsGeneratedBatches) {
  const std::string dir = make_cifar_dir(scratch_dir("cifar"));
  const Dataset ds = cifar10_read(dir);
  EXPECT_EQ(ds.name, "cifar10");
  ASSERT_EQ(ds.train.size(), 15);
  ASSERT_EQ(ds.test.size(), 4);
  EXPECT_EQ(ds.train.x.shape(), (Shape{15, 3, 32, 32}));
  EXPECT_EQ(ds.train.x.layout(), Layout::NCHW);
  EXPECT_EQ(ds.class_names[0], "airplane");
  EXPECT_EQ(ds.class_names[9], "truck");
  auto x = ds.train.x.values<std::uint8_t>();
  auto y = ds.train.y.values<std::int64_t>();
  for (int k = 0; k < 15; ++k) {
    const int f = 1 + k / 3, r = k % 3;
    EXPECT_EQ(y[k], label_of(f, r));
    EXPECT_EQ(x[k * 3072 + 0], pixel(f, r, 0, 0, 0));
    EXPECT_EQ(x[k * 3072 + 1 * 1024 + 5 * 32 + 7], pixel(f, r, 1, 5, 7));
    EXPECT_EQ(x[k * 3072 + 2 * 1024 + 31 * 32 + 31], pixel(f, r, 2, 31, 31));
  }
  EXPECT_EQ(ds.test.y.values<std::int64_t>()[3], label_of(0, 3));

  // Normalisation: (x/255 - mean[c]) / std[c], NCHW float.
  const std::vector<std::int64_t> idx = {4, 0};
  const Tensor b = make_batch(ds, ds.train, idx);
  EXPECT_EQ(b.dtype(), DType::F32);
  EXPECT_EQ(b.shape(), (Shape{2, 3, 32, 32}));
  EXPECT_EQ(b.layout(), Layout::NCHW);
  const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, sd[3] = {0.2470f, 0.2435f, 0.2616f};
  auto bv = b.values<float>();
  for (int c = 0; c < 3; ++c) {
    const float want = (pixel(2, 1, c, 5, 7) / 255.0f - mean[c]) / sd[c];
    EXPECT_NEAR(bv[c * 1024 + 5 * 32 + 7], want, 1e-6f) << c;
    const float want0 = (pixel(1, 0, c, 31, 0) / 255.0f - mean[c]) / sd[c];
    EXPECT_NEAR(bv[3072 + c * 1024 + 31 * 32], want0, 1e-6f) << c;
  }
  const Tensor l = make_labels(ds.train, idx);
  EXPECT_EQ(l.values<std::int64_t>()[0], label_of(2, 1));
  EXPECT_EQ(l.values<std::int64_t>()[1], label_of(1, 0));
}

TEST(DataCifar10, ClassNamesFromMetaAndEnvDefault) {
  const std::string dir = make_cifar_dir(scratch_dir("meta") + "/cifar-10-batches-bin");
  write_text(dir + "/batches.meta.txt", "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n\n");
  // The tarball's folder name is found below the given root.
  const Dataset ds = cifar10_read(fs::path(dir).parent_path().string());
  ASSERT_EQ(ds.class_names.size(), 10u);
  EXPECT_EQ(ds.class_names[0], "a");
  EXPECT_EQ(ds.class_names[9], "j");
  write_text(dir + "/batches.meta.txt", "a\nb\n");
  const std::string msg = input_error_of([&] { cifar10_read(dir); });
  EXPECT_NE(msg.find("batches.meta.txt"), std::string::npos) << msg;
  fs::remove(dir + "/batches.meta.txt");

  ::setenv("CROSSDL_DATA_CIFAR10", dir.c_str(), 1);
  EXPECT_EQ(dataset_default_root("cifar10"), dir);
  DataOptions o;
  o.test_limit = 2;
  const Dataset viaenv = load_dataset("cifar10", o);
  ::unsetenv("CROSSDL_DATA_CIFAR10");
  EXPECT_EQ(viaenv.train.size(), 15);
  EXPECT_EQ(viaenv.test.size(), 2);
  EXPECT_EQ(viaenv.full_test_size, 4);
  EXPECT_EQ(dataset_default_root("cifar10"), "/usr/share/datasets/cifar10");
}

TEST(DataCifar10, TruncatedRecord) {
  const std::string dir = make_cifar_dir(scratch_dir("trunc"));
  const std::string f = dir + "/data_batch_3.bin";
  std::vector<std::byte> b = read_bytes(f);
  b.resize(b.size() - 100);
  write_bytes(f, b);
  EXPECT_THROW(cifar10_read(dir), InputError);
  const std::string msg = input_error_of([&] { cifar10_read(dir); });
  EXPECT_NE(msg.find(f), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 6146"), std::string::npos) << msg;  // record 2 starts at 2*3073
  EXPECT_NE(msg.find("truncated record"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3073"), std::string::npos) << msg;
  write_bytes(f, {});
  EXPECT_NE(input_error_of([&] { cifar10_read(dir); }).find("empty"), std::string::npos);
}

TEST(DataCifar10, BadLabel) {
  const std::string dir = make_cifar_dir(scratch_dir("label"));
  const std::string f = dir + "/test_batch.bin";
  std::vector<std::byte> b = read_bytes(f);
  b[3 * 3073] = std::byte{10};
  write_bytes(f, b);
  const std::string msg = input_error_of([&] { cifar10_read(dir); });
  EXPECT_NE(msg.find(f), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte 9219"), std::string::npos) << msg;
  EXPECT_NE(msg.find("label 10"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected 0..9"), std::string::npos) << msg;
}

TEST(DataCifar10, MissingFiles) {
  const std::string dir = make_cifar_dir(scratch_dir("missing"));
  fs::remove(dir + "/data_batch_5.bin");
  const std::string msg = input_error_of([&] { cifar10_read(dir); });
  EXPECT_NE(msg.find("data_batch_5.bin"), std::string::npos) << msg;
  const std::string msg2 = input_error_of([&] { cifar10_read(dir + "/nothing"); });
  EXPECT_NE(msg2.find(dir + "/nothing"), std::string::npos) << msg2;
}

}  // namespace
}  // namespace crossdl
