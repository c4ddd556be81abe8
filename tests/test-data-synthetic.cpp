// Synthetic data, load_dataset's front door, make_batch/make_labels and epoch_order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"
#include "support.h"

namespace crossdl {
namespace {

using test::input_error_of;

TEST(DataSynthetic, SameSeedSameBytes) {
  const Dataset a = synthetic_make(7, 300, 50, {1, 28, 28}, 10);
  const Dataset b = synthetic_make(7, 300, 50, {1, 28, 28}, 10);
  const Dataset c = synthetic_make(8, 300, 50, {1, 28, 28}, 10);
  EXPECT_EQ(a.train.x.shape(), (Shape{300, 1, 28, 28}));
  EXPECT_EQ(a.train.x.dtype(), DType::U8);
  EXPECT_EQ(a.train.x.layout(), Layout::NCHW);
  EXPECT_EQ(a.test.size(), 50);
  EXPECT_TRUE(a.train.x.identical(b.train.x));
  EXPECT_TRUE(a.train.y.identical(b.train.y));
  EXPECT_TRUE(a.test.x.identical(b.test.x));
  EXPECT_FALSE(a.train.x.identical(c.train.x));
  EXPECT_FALSE(a.train.y.identical(c.train.y));
  EXPECT_EQ(a.mean, (std::vector<float>{0.0f}));
  EXPECT_EQ(a.stddev, (std::vector<float>{1.0f}));
}

TEST(DataSynthetic, ImagesAreLearnable) {
  // Nearest class mean (computed on train) classifies test well above chance.
  const Dataset ds = synthetic_make(3, 500, 200, {3, 8, 8}, 5);
  const std::int64_t d = 3 * 8 * 8;
  std::vector<double> mean(5 * d, 0.0);
  std::vector<int> n(5, 0);
  auto x = ds.train.x.values<std::uint8_t>();
  auto y = ds.train.y.values<std::int64_t>();
  for (std::int64_t i = 0; i < 500; ++i) {
    ASSERT_GE(y[i], 0);
    ASSERT_LT(y[i], 5);
    n[y[i]]++;
    for (std::int64_t p = 0; p < d; ++p) mean[y[i] * d + p] += x[i * d + p];
  }
  for (int k = 0; k < 5; ++k) {
    EXPECT_GT(n[k], 50) << "class " << k << " is rare";
    for (std::int64_t p = 0; p < d; ++p) mean[k * d + p] /= n[k];
  }
  auto tx = ds.test.x.values<std::uint8_t>();
  auto ty = ds.test.y.values<std::int64_t>();
  int correct = 0;
  for (std::int64_t i = 0; i < 200; ++i) {
    int best = 0;
    double best_d = 1e300;
    for (int k = 0; k < 5; ++k) {
      double s = 0;
      for (std::int64_t p = 0; p < d; ++p) {
        const double e = tx[i * d + p] - mean[k * d + p];
        s += e * e;
      }
      if (s < best_d) best_d = s, best = k;
    }
    correct += best == ty[i];
  }
  EXPECT_GT(correct, 180);
  // Not trivial either: samples of one class differ.
  EXPECT_FALSE(std::equal(x.begin(), x.begin() + d, x.begin() + d));
}

TEST(DataSynthetic, Tokens) {
  const Dataset a = synthetic_make(11, 100, 20, {16}, 2);
  const Dataset b = synthetic_make(11, 100, 20, {16}, 2);
  EXPECT_TRUE(a.is_text());
  EXPECT_EQ(a.vocab_size, 50);
  EXPECT_EQ(a.train.x.shape(), (Shape{100, 16}));
  EXPECT_TRUE(a.train.x.identical(b.train.x));
  for (std::int64_t t : a.train.x.values<std::int64_t>()) {
    ASSERT_GE(t, 2);
    ASSERT_LT(t, 50);
  }
  // Class-dependent: the token histograms of the two classes differ clearly.
  std::vector<double> h0(50, 0), h1(50, 0);
  auto x = a.train.x.values<std::int64_t>();
  auto y = a.train.y.values<std::int64_t>();
  for (std::int64_t i = 0; i < 100; ++i)
    for (std::int64_t j = 0; j < 16; ++j) (y[i] == 0 ? h0 : h1)[x[i * 16 + j]] += 1;
  const double s0 = std::accumulate(h0.begin(), h0.end(), 0.0);
  const double s1 = std::accumulate(h1.begin(), h1.end(), 0.0);
  ASSERT_GT(s0, 0);
  ASSERT_GT(s1, 0);
  double tv = 0;
  for (int t = 0; t < 50; ++t) tv += std::abs(h0[t] / s0 - h1[t] / s1);
  EXPECT_GT(tv / 2, 0.2);
  EXPECT_THROW(synthetic_make(1, 10, 10, {2, 3}, 2), InputError);
  EXPECT_THROW(synthetic_make(1, 10, 10, {1, 0, 3}, 2), InputError);
}

TEST(DataLoad, NamesDefaultsAndLimits) {
  EXPECT_EQ(dataset_names(),
            (std::vector<std::string>{"fashion-mnist", "mnist", "cifar10", "imdb", "synthetic"}));
  EXPECT_EQ(dataset_default_root("imdb").empty(), false);
  const std::string msg = input_error_of([] { load_dataset("cifar100", DataOptions{}); });
  EXPECT_NE(msg.find("cifar100"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fashion-mnist, mnist, cifar10, imdb, synthetic"), std::string::npos) << msg;
  EXPECT_THROW(dataset_default_root("nope"), InputError);

  DataOptions o;
  o.seed = 5;
  const Dataset ds = load_dataset("synthetic", o);
  EXPECT_EQ(ds.train.size(), 2000);
  EXPECT_EQ(ds.test.size(), 500);
  EXPECT_EQ(ds.num_classes, 10);
  EXPECT_EQ(ds.sample_shape(), (Shape{1, 28, 28}));
  EXPECT_EQ(ds.sample_dtype(), DType::F32);
  o.train_limit = 100;
  o.test_limit = 10000;
  const Dataset lim = load_dataset("synthetic", o);
  EXPECT_EQ(lim.train.size(), 100);
  EXPECT_EQ(lim.train.x.shape(), (Shape{100, 1, 28, 28}));
  EXPECT_EQ(lim.test.size(), 500);
  EXPECT_EQ(lim.full_train_size, 2000);
  EXPECT_EQ(lim.full_test_size, 500);
  std::vector<std::int64_t> idx(100);
  std::iota(idx.begin(), idx.end(), 0);
  EXPECT_TRUE(make_labels(lim.train, idx).identical(make_labels(ds.train, idx)));
  EXPECT_TRUE(make_batch(lim, lim.train, idx).identical(make_batch(ds, ds.train, idx)));
  o.train_limit = -1;
  EXPECT_THROW(load_dataset("synthetic", o), InputError);
}

TEST(DataLoad, MakeBatchAndLabels) {
  const Dataset ds = synthetic_make(2, 20, 5, {2, 3, 4}, 3);
  Dataset norm = ds;
  norm.mean = {0.5f, 0.25f};
  norm.stddev = {0.5f, 2.0f};
  const std::vector<std::int64_t> idx = {7, 7, 0, 19};
  const Tensor b = make_batch(norm, norm.train, idx);
  EXPECT_EQ(b.dtype(), DType::F32);
  EXPECT_EQ(b.shape(), (Shape{4, 2, 3, 4}));
  EXPECT_EQ(b.layout(), Layout::NCHW);
  auto bv = b.values<float>();
  auto x = ds.train.x.values<std::uint8_t>();
  for (std::size_t r = 0; r < idx.size(); ++r)
    for (int c = 0; c < 2; ++c)
      for (int p = 0; p < 12; ++p) {
        const float want = (x[idx[r] * 24 + c * 12 + p] / 255.0f - norm.mean[c]) / norm.stddev[c];
        ASSERT_EQ(bv[r * 24 + c * 12 + p], want);
      }
  const Tensor l = make_labels(ds.train, idx);
  EXPECT_EQ(l.dtype(), DType::I64);
  EXPECT_EQ(l.shape(), (Shape{4}));
  EXPECT_EQ(l.values<std::int64_t>()[3], ds.train.y.values<std::int64_t>()[19]);
  // Plain x/255 with mean 0, stddev 1.
  const Tensor p = make_batch(ds, ds.train, std::vector<std::int64_t>{1});
  EXPECT_EQ(p.values<float>()[5], x[24 + 5] / 255.0f);

  const std::vector<std::int64_t> bad = {0, 20};
  EXPECT_THROW(make_batch(ds, ds.train, bad), std::out_of_range);
  EXPECT_THROW(make_labels(ds.train, bad), std::out_of_range);
  const std::vector<std::int64_t> neg = {-1};
  EXPECT_THROW(make_batch(ds, ds.train, neg), std::out_of_range);
  const Tensor empty = make_batch(ds, ds.train, std::vector<std::int64_t>{});
  EXPECT_EQ(empty.shape(), (Shape{0, 2, 3, 4}));
}

TEST(DataEpochOrder, PermutationDeterministicPerEpoch) {
  const std::vector<std::int64_t> e0 = epoch_order(1000, 42, 0);
  ASSERT_EQ(e0.size(), 1000u);
  std::vector<std::int64_t> sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(epoch_order(1000, 42, 0), e0);
  const std::vector<std::int64_t> e1 = epoch_order(1000, 42, 1);
  EXPECT_NE(e1, e0);
  EXPECT_NE(epoch_order(1000, 43, 0), e0);
  std::vector<std::int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_NE(e0, iota);
  // Few fixed points, as for a uniform random permutation (expected 1).
  int fixed = 0;
  for (std::int64_t i = 0; i < 1000; ++i) fixed += e0[i] == i;
  EXPECT_LT(fixed, 10);
  EXPECT_TRUE(epoch_order(0, 1, 0).empty());
  EXPECT_EQ(epoch_order(1, 1, 0), (std::vector<std::int64_t>{0}));
}

}  // namespace
}  // namespace crossdl
