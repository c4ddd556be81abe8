#include <gtest/gtest.h>

#include "crossdl/tensor.h"

using crossdl::DType;
using crossdl::Layout;
using crossdl::Tensor;

TEST(Tensor, Sha256KnownVectors) {
  EXPECT_EQ(crossdl::sha256_hex(std::string_view("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(crossdl::sha256_hex(std::string_view("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(crossdl::sha256_hex(
                std::string_view("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  std::string million(1000000, 'a');
  EXPECT_EQ(crossdl::sha256_hex(std::string_view(million)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Tensor, ShapeLayoutAndViews) {
  Tensor t = Tensor::f32({2, 3}, {1, 2, 3, 4, 5, 6}, Layout::OI);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 24u);
  EXPECT_EQ(crossdl::shape_str(t.shape()), "[2,3]");
  EXPECT_EQ(t.values<float>()[4], 5.0f);
  Tensor r = t.slice_rows(1, 2);
  EXPECT_EQ(r.shape(), (crossdl::Shape{1, 3}));
  EXPECT_EQ(r.values<float>()[0], 4.0f);
  EXPECT_TRUE(t.identical(t.reshaped({2, 3}, Layout::OI)));
  EXPECT_FALSE(t.identical(t.reshaped({3, 2}, Layout::OI)));
  EXPECT_THROW(t.reshaped({4}), std::invalid_argument);
  EXPECT_THROW(t.slice_rows(1, 3), std::out_of_range);
  Tensor z(DType::I64, {4});
  EXPECT_EQ(z.values<std::int64_t>()[3], 0);
}

TEST(Tensor, LayoutNamesRoundTrip) {
  for (Layout l : {Layout::Any, Layout::NCHW, Layout::OIHW, Layout::GatesIFGO, Layout::GatesRZN}) {
    Layout back = Layout::NHWC;
    ASSERT_TRUE(crossdl::layout_from_name(crossdl::layout_name(l), back));
    EXPECT_EQ(back, l);
  }
  Layout unused;
  EXPECT_FALSE(crossdl::layout_from_name("bogus", unused));
}
