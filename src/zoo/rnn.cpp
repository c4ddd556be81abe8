// Single-layer LSTM and GRU classifiers. Images are read row by row (each row of all channels is
// one time step); token sequences go through a 64-dimensional embedding first. The last hidden
// state feeds one dense layer.
#include "builders.h"
#include "crossdl/status.h"

namespace crossdl::zoo::detail {

namespace {
constexpr std::int64_t kHidden = 128;
constexpr std::int64_t kEmbedding = 64;
}  // namespace

ir::Model build_recurrent(const std::string& name, ir::Op cell, const InputSpec& in) {
  Builder b(name, in);
  if (in.dtype == DType::I64) {
    if (in.sample_shape.size() != 1)
      throw InputError("model " + name + " needs token sequences [T], got " +
                       shape_str(in.sample_shape));
    if (in.vocab_size <= 0)
      throw InputError("model " + name + " needs the vocabulary size of its token input");
    ir::Layer e;
    e.name = "embed";
    e.op = ir::Op::Embedding;
    e.vocab = in.vocab_size;
    e.out = kEmbedding;
    b.add(std::move(e));
  } else {
    require_image(name, in);
    b.simple("to_seq", ir::Op::ImageToSequence);
  }
  ir::Layer r;
  r.name = name;  // "lstm" or "gru"
  r.op = cell;
  r.out = kHidden;
  b.add(std::move(r));
  b.dense("fc", in.num_classes);
  return b.finish();
}

}  // namespace crossdl::zoo::detail
