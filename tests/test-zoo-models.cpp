// The model zoo: every model builds and validates on image and text inputs, with the parameter
// counts worked out by hand below and the expected intermediate shapes.
#include <gtest/gtest.h>

#include <map>

#include "crossdl/ir.h"
#include "crossdl/status.h"
#include "crossdl/zoo.h"

namespace crossdl {
namespace {

zoo::InputSpec fashion() {
  return {{1, 28, 28}, DType::F32, 10, 0};
}
zoo::InputSpec cifar() {
  return {{3, 32, 32}, DType::F32, 10, 0};
}
zoo::InputSpec imdb() {
  return {{200}, DType::I64, 2, 10002};
}

std::int64_t count(const ir::Model& m) {
  std::int64_t n = 0;
  for (const auto& s : ir::weight_specs(m)) n += shape_numel(s.shape);
  return n;
}
// Parameters without BatchNorm's running statistics (what PyTorch's parameters() counts).
std::int64_t trainable(const ir::Model& m) {
  std::int64_t n = 0;
  for (const auto& s : ir::weight_specs(m))
    if (s.param != "running_mean" && s.param != "running_var") n += shape_numel(s.shape);
  return n;
}

Shape shape_of(const ir::Model& m, const std::string& layer) {
  const auto shapes = ir::infer_shapes(m);
  for (std::size_t i = 0; i < m.layers.size(); ++i)
    if (m.layers[i].name == layer) return shapes[i];
  ADD_FAILURE() << "no layer " << layer;
  return {};
}

// conv k x k with bias: in*out*k*k + out; BatchNorm: 4 tensors of C (2 trainable).
constexpr std::int64_t conv_p(std::int64_t in, std::int64_t out, std::int64_t k, bool bias) {
  return in * out * k * k + (bias ? out : 0);
}
constexpr std::int64_t resnet20_p(std::int64_t in_ch) {
  const std::int64_t bn = 4;
  std::int64_t n = conv_p(in_ch, 16, 3, false) + bn * 16;
  n += 3 * (2 * conv_p(16, 16, 3, false) + 2 * bn * 16);
  n += conv_p(16, 32, 3, false) + conv_p(32, 32, 3, false) + 2 * bn * 32 +
       conv_p(16, 32, 1, false) + bn * 32;
  n += 2 * (2 * conv_p(32, 32, 3, false) + 2 * bn * 32);
  n += conv_p(32, 64, 3, false) + conv_p(64, 64, 3, false) + 2 * bn * 64 +
       conv_p(32, 64, 1, false) + bn * 64;
  n += 2 * (2 * conv_p(64, 64, 3, false) + 2 * bn * 64);
  return n + 64 * 10 + 10;
}
constexpr std::int64_t vgg16_p(std::int64_t in_ch) {
  const std::int64_t widths[13] = {64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512};
  std::int64_t n = 0, in = in_ch;
  for (std::int64_t w : widths) {
    n += conv_p(in, w, 3, true) + 4 * w;
    in = w;
  }
  return n + 512 * 512 + 512 + 512 * 10 + 10;
}
constexpr std::int64_t rnn_p(std::int64_t gates, std::int64_t features, std::int64_t classes) {
  return gates * (128 * features + 128 * 128 + 2 * 128) + 128 * classes + classes;
}

TEST(ZooModels, NamesAndUnknown) {
  EXPECT_EQ(zoo::model_names(),
            (std::vector<std::string>{"lenet1", "lenet5", "resnet20", "vgg16", "lstm", "gru"}));
  try {
    zoo::build("alexnet", fashion());
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("alexnet"), std::string::npos);
    for (const auto& n : zoo::model_names()) EXPECT_NE(msg.find(n), std::string::npos) << msg;
  }
}

TEST(ZooModels, ParameterCounts) {
  // Hand-computed totals (BatchNorm running statistics included), as literals so that a change
  // of architecture shows up here, and from the formulas above as a cross-check.
  const std::map<std::string, std::int64_t> want_f = {{"lenet1", 3246},     {"lenet5", 61706},
                                                      {"resnet20", 273754}, {"vgg16", 14998218},
                                                      {"lstm", 82186},      {"gru", 61962}};
  const std::map<std::string, std::int64_t> want_c = {{"lenet1", 4526},     {"lenet5", 62006},
                                                      {"resnet20", 274042}, {"vgg16", 14999370},
                                                      {"lstm", 117002},     {"gru", 88074}};
  EXPECT_EQ(want_f.at("resnet20"), resnet20_p(1));
  EXPECT_EQ(want_c.at("resnet20"), resnet20_p(3));
  EXPECT_EQ(want_f.at("vgg16"), vgg16_p(1));
  EXPECT_EQ(want_c.at("vgg16"), vgg16_p(3));
  EXPECT_EQ(want_f.at("lstm"), rnn_p(4, 28, 10));
  EXPECT_EQ(want_c.at("lstm"), rnn_p(4, 96, 10));
  EXPECT_EQ(want_f.at("gru"), rnn_p(3, 28, 10));
  EXPECT_EQ(want_c.at("gru"), rnn_p(3, 96, 10));
  EXPECT_EQ(want_f.at("lenet5"), conv_p(1, 6, 5, true) + conv_p(6, 16, 5, true) + 400 * 120 + 120 +
                                     120 * 84 + 84 + 84 * 10 + 10);
  for (const auto& name : zoo::model_names()) {
    SCOPED_TRACE(name);
    const ir::Model f = zoo::build(name, fashion());
    const ir::Model c = zoo::build(name, cifar());
    ir::validate(f);
    ir::validate(c);
    EXPECT_EQ(f.name, name);
    EXPECT_EQ(count(f), want_f.at(name));
    EXPECT_EQ(count(c), want_c.at(name));
    EXPECT_EQ(init_weights(f, 1).parameter_count(), count(f));
    EXPECT_EQ(ir::infer_shapes(f).back(), Shape{10});
  }
  // Trainable counts: ResNet-20 ~0.27M as in He et al. (option B shortcuts add 2,752).
  EXPECT_EQ(trainable(zoo::build("resnet20", cifar())), 272474);
  EXPECT_EQ(trainable(zoo::build("vgg16", cifar())), 14990922);

  const ir::Model lstm = zoo::build("lstm", imdb());
  const ir::Model gru = zoo::build("gru", imdb());
  EXPECT_EQ(count(lstm), 10002 * 64 + rnn_p(4, 64, 2));
  EXPECT_EQ(count(lstm), 739714);
  EXPECT_EQ(count(gru), 714882);
}

TEST(ZooModels, ShapesAndNames) {
  const ir::Model l1 = zoo::build("lenet1", fashion());
  EXPECT_EQ(shape_of(l1, "pool2"), (Shape{12, 4, 4}));
  EXPECT_EQ(shape_of(l1, "flatten"), Shape{192});

  const ir::Model l5f = zoo::build("lenet5", fashion());
  EXPECT_EQ(l5f.layers[0].pad[0], 2);
  EXPECT_EQ(shape_of(l5f, "conv1"), (Shape{6, 28, 28}));
  EXPECT_EQ(shape_of(l5f, "flatten"), Shape{400});
  const ir::Model l5c = zoo::build("lenet5", cifar());
  EXPECT_EQ(l5c.layers[0].pad[0], 0);
  EXPECT_EQ(shape_of(l5c, "pool2"), (Shape{16, 5, 5}));

  const ir::Model r = zoo::build("resnet20", cifar());
  EXPECT_EQ(r.layers.size(), 3u + 9 * 7 + 2 * 2 + 3);  // stem, 9 blocks, 2 projections, head
  EXPECT_EQ(shape_of(r, "stage1.block2.relu2"), (Shape{16, 32, 32}));
  EXPECT_EQ(shape_of(r, "stage2.block0.conv1"), (Shape{32, 16, 16}));
  EXPECT_EQ(shape_of(r, "stage2.block0.shortcut.conv"), (Shape{32, 16, 16}));
  EXPECT_EQ(shape_of(r, "stage3.block2.relu2"), (Shape{64, 8, 8}));
  EXPECT_EQ(shape_of(r, "pool"), (Shape{64, 1, 1}));
  const ir::Layer* add = r.find("stage2.block0.add");
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->inputs,
            (std::vector<std::string>{"stage2.block0.bn2", "stage2.block0.shortcut.bn"}));
  EXPECT_EQ(r.find("stage2.block0.shortcut.conv")->inputs,
            std::vector<std::string>{"stage1.block2.relu2"});
  EXPECT_EQ(r.find("stage2.block1.add")->inputs,
            (std::vector<std::string>{"stage2.block1.bn2", "stage2.block0.relu2"}));
  EXPECT_FALSE(r.find("conv1")->bias);
  EXPECT_EQ(shape_of(zoo::build("resnet20", fashion()), "stage3.block2.relu2"), (Shape{64, 7, 7}));

  const ir::Model vc = zoo::build("vgg16", cifar());
  EXPECT_EQ(shape_of(vc, "pool4"), (Shape{512, 2, 2}));
  EXPECT_EQ(shape_of(vc, "pool5"), (Shape{512, 1, 1}));
  const ir::Model vf = zoo::build("vgg16", fashion());
  EXPECT_EQ(shape_of(vf, "pool4"), (Shape{512, 1, 1}));
  int convs = 0;
  for (const auto& l : vf.layers) convs += l.op == ir::Op::Conv2d;
  EXPECT_EQ(convs, 13);

  EXPECT_EQ(shape_of(zoo::build("lstm", fashion()), "to_seq"), (Shape{28, 28}));
  EXPECT_EQ(shape_of(zoo::build("gru", cifar()), "to_seq"), (Shape{32, 96}));
  const ir::Model lt = zoo::build("lstm", imdb());
  EXPECT_EQ(lt.input_dtype, DType::I64);
  EXPECT_EQ(shape_of(lt, "embed"), (Shape{200, 64}));
  EXPECT_EQ(shape_of(lt, "lstm"), Shape{128});
  EXPECT_EQ(shape_of(lt, "fc"), Shape{2});
}

TEST(ZooModels, RejectsInputsTheyCannotTake) {
  auto msg = [](const std::string& name, const zoo::InputSpec& in) -> std::string {
    try {
      zoo::build(name, in);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(msg("lenet5", imdb()).find("lenet5"), std::string::npos);
  EXPECT_NE(msg("resnet20", imdb()).find("images"), std::string::npos);
  const std::string tiny = msg("lenet1", {{1, 10, 10}, DType::F32, 10, 0});
  EXPECT_NE(tiny.find("layer conv2 (Conv2d)"), std::string::npos) << tiny;
  zoo::InputSpec no_vocab = imdb();
  no_vocab.vocab_size = 0;
  EXPECT_NE(msg("gru", no_vocab).find("vocabulary"), std::string::npos);
  zoo::InputSpec zero = fashion();
  zero.num_classes = 0;
  EXPECT_NE(msg("lenet1", zero).find("num_classes"), std::string::npos);
}

TEST(ZooModels, InputSpecFromDataset) {
  Dataset ds;
  ds.name = "synthetic";
  ds.train.x = Tensor(DType::U8, {4, 3, 32, 32});
  ds.train.y = Tensor(DType::I64, {4});
  ds.num_classes = 7;
  const zoo::InputSpec in = zoo::input_spec(ds);
  EXPECT_EQ(in.sample_shape, (Shape{3, 32, 32}));
  EXPECT_EQ(in.dtype, DType::F32);
  EXPECT_EQ(in.num_classes, 7);
  EXPECT_EQ(in.vocab_size, 0);

  Dataset text;
  text.train.x = Tensor(DType::I64, {4, 50});
  text.train.y = Tensor(DType::I64, {4});
  text.num_classes = 2;
  text.vocab_size = 102;
  const zoo::InputSpec t = zoo::input_spec(text);
  EXPECT_EQ(t.sample_shape, Shape{50});
  EXPECT_EQ(t.dtype, DType::I64);
  EXPECT_EQ(t.vocab_size, 102);
  EXPECT_EQ(zoo::build("gru", t).layers[0].vocab, 102);
}

}  // namespace
}  // namespace crossdl
