#include <gtest/gtest.h>

#include "crossdl/report.h"

using crossdl::compare_predictions;
using crossdl::mcnemar_exact_p;

// Reference values: exact sums with Python integers, 2 * sum(comb(n, i) for i <= k) / 2**n.
TEST(ReportAgreement, McNemarExactMatchesTheBinomial) {
  // 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 158 / 4096.
  EXPECT_NEAR(mcnemar_exact_p(10, 2), 158.0 / 4096.0, 1e-12);
  EXPECT_NEAR(mcnemar_exact_p(2, 10), 158.0 / 4096.0, 1e-12);
  EXPECT_NEAR(mcnemar_exact_p(60, 40), 0.05688793364098079, 1e-9);
  EXPECT_NEAR(mcnemar_exact_p(400, 330), 0.010605994778707738, 1e-9);  // large n stays finite
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(3, 3), 1.0);
  EXPECT_DOUBLE_EQ(mcnemar_exact_p(0, 0), 1.0);
}

TEST(ReportAgreement, CountsDisagreementAndDiscordantPairs) {
  //            0  1  2  3  4  5
  const std::vector<std::int64_t> labels = {0, 1, 2, 3, 4, 5};
  const std::vector<std::int64_t> a = {0, 1, 2, 9, 9, 5};  // wrong on 3, 4
  const std::vector<std::int64_t> b = {0, 1, 8, 3, 7, 5};  // wrong on 2, 4
  const auto r = compare_predictions(a, b, labels);
  EXPECT_EQ(r.n, 6);
  EXPECT_EQ(r.disagree, 3);  // 2, 3, 4
  EXPECT_EQ(r.only_a_correct, 1);
  EXPECT_EQ(r.only_b_correct, 1);
  EXPECT_DOUBLE_EQ(r.disagreement, 0.5);
  EXPECT_DOUBLE_EQ(r.mcnemar_p, 1.0);
  EXPECT_THROW(compare_predictions(a, {0}, labels), std::invalid_argument);
}
