// The comparison arithmetic: tolerance rule, relative errors, non-finite values, top-1
// disagreement, the first diverging layer, percentiles.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "crossdl/compare.h"
#include "support.h"

namespace crossdl {
namespace {

TEST(CompareDiff, ToleranceIsAllcloseWithTheReferenceOnTheRight) {
  const Tensor ref = Tensor::f32({4}, {1.0f, -2.0f, 0.0f, 100.0f});
  // atol 1e-3 + rtol 1e-2 * |ref|: allowed 0.011, 0.021, 0.001, 1.001.
  const Tensor got = Tensor::f32({4}, {1.010f, -2.030f, 0.0005f, 101.0f});
  const OutputDiff d = diff_outputs(ref, got, {1e-3, 1e-2});
  EXPECT_EQ(d.count, 4);
  EXPECT_EQ(d.outside, 1);  // only -2.03 (error 0.03 > 0.021)
  EXPECT_FALSE(d.within());
  EXPECT_NEAR(d.max_abs, 1.0, 1e-4);
  EXPECT_NEAR(d.mean_abs, (0.010 + 0.030 + 0.0005 + 1.0) / 4, 1e-5);
  // Relative error skips the element whose reference is 0.
  EXPECT_NEAR(d.max_rel, 0.015, 1e-5);
  EXPECT_NEAR(d.mean_rel, (0.01 + 0.015 + 0.01) / 3, 1e-5);
}

TEST(CompareDiff, NonFiniteValuesAreCountedAndOutsideTolerance) {
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor ref = Tensor::f32({3}, {1, 2, 3});
  const Tensor got = Tensor::f32({3}, {std::nanf(""), inf, 3});
  const OutputDiff d = diff_outputs(ref, got, {});
  EXPECT_EQ(d.nan, 1);
  EXPECT_EQ(d.inf, 1);
  EXPECT_EQ(d.outside, 2);
  EXPECT_EQ(d.max_abs, 0.0);  // the finite element agrees exactly
  EXPECT_EQ(d.to_json()["within"], false);
}

TEST(CompareDiff, ShapeMismatchIsAnInputErrorNamingBothShapes) {
  const std::string msg = test::input_error_of([] {
    (void)diff_outputs(Tensor::f32({2}, {1, 2}), Tensor::f32({1, 2}, {1, 2}), {});
  });
  EXPECT_NE(msg.find("[2]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1,2]"), std::string::npos) << msg;
}

TEST(CompareDiff, Top1DisagreementsCountRowsWhoseArgmaxDiffers) {
  const Tensor a = Tensor::f32({3, 3}, {0, 1, 2, /**/ 5, 1, 0, /**/ 1, 1, 0});
  const Tensor b = Tensor::f32({3, 3}, {0, 3, 2, /**/ 5, 1, 0, /**/ 1, 1, 0});
  EXPECT_EQ(top1_disagreements(a, b), 1);
  // Ties go to the lower index, like torch.argmax.
  EXPECT_EQ(argmax_rows(a)[2], 0);
  // A NaN logit never wins.
  const Tensor n = Tensor::f32({1, 3}, {std::nanf(""), 0.5f, 0.1f});
  EXPECT_EQ(argmax_rows(n)[0], 1);
}

TEST(CompareDiff, FirstDivergentLayerIsTheFirstBeyondToleranceInReferenceOrder) {
  std::vector<std::pair<std::string, Tensor>> ref = {
      {"conv1", Tensor::f32({2}, {1, 1})},
      {"relu1", Tensor::f32({2}, {1, 1})},
      {"pool1", Tensor::f32({2}, {1, 1})},
      {"fc", Tensor::f32({2}, {1, 1})}};
  std::vector<std::pair<std::string, Tensor>> got = {
      {"fc", Tensor::f32({2}, {1.5f, 1})},      // order in `got` does not matter
      {"conv1", Tensor::f32({2}, {1, 1.00001f})},
      {"pool1", Tensor::f32({2}, {1.2f, 1})}};  // relu1 not exposed: left out
  int first = -2;
  const auto lv = layer_divergence(ref, got, {1e-4, 0}, first);
  ASSERT_EQ(lv.size(), 3u);
  EXPECT_EQ(lv[0].layer, "conv1");
  EXPECT_TRUE(lv[0].diff.within());
  ASSERT_EQ(first, 1);
  EXPECT_EQ(lv[1].layer, "pool1");
  EXPECT_NEAR(lv[2].diff.max_abs, 0.5, 1e-6);

  // A layer given in another shape diverges rather than aborting the walk.
  got[1].second = Tensor::f32({1}, {1});
  (void)layer_divergence(ref, got, {1e-4, 0}, first);
  EXPECT_EQ(first, 0);
}

TEST(CompareDiff, PercentileInterpolatesBetweenRanks) {
  EXPECT_DOUBLE_EQ(percentile({4, 1, 3, 2}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4, 5}, 0.95), 4.8);
  EXPECT_DOUBLE_EQ(percentile({7}, 0.95), 7);
  EXPECT_TRUE(std::isnan(percentile({}, 0.5)));
}

}  // namespace
}  // namespace crossdl
