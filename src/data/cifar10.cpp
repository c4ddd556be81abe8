// CIFAR-10, binary version: DIR/data_batch_1.bin .. data_batch_5.bin (train, in that order) and
// DIR/test_batch.bin. Each file is a sequence of 3073-byte records: 1 label byte (0..9), then
// the 32x32 red plane, green plane and blue plane (CHW, row-major). If DIR has no data_batch_1.bin
// but DIR/cifar-10-batches-bin/ does (the tarball's folder), that folder is used.
// Class names come from batches.meta.txt (one per line, blank lines ignored) when present.
// Normalisation: the usual per-channel mean (0.4914, 0.4822, 0.4465) and stddev
// (0.2470, 0.2435, 0.2616) of x/255.
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kImageBytes = 3 * 32 * 32;
constexpr std::int64_t kRecord = 1 + kImageBytes;
constexpr int kClasses = 10;

Split read_batches(const std::vector<std::string>& paths) {
  std::vector<std::vector<std::byte>> files;
  std::int64_t total = 0;
  for (const std::string& p : paths) {
    std::vector<std::byte> b = read_file_maybe_gz(p);
    const auto size = static_cast<std::int64_t>(b.size());
    if (size == 0) throw InputError(input_where(p, 0, "empty file (expected 3073-byte records)"));
    if (size % kRecord != 0) {
      const std::int64_t at = size / kRecord * kRecord;
      throw InputError(input_where(p, at,
                                   "truncated record " + std::to_string(size / kRecord) +
                                       ": records are 3073 bytes (1 label + 3x32x32) but only " +
                                       std::to_string(size - at) + " bytes are left (file size " +
                                       std::to_string(size) + " is not a multiple of 3073)"));
    }
    const std::int64_t n = size / kRecord;
    const auto* u = reinterpret_cast<const unsigned char*>(b.data());
    for (std::int64_t i = 0; i < n; ++i) {
      const unsigned label = u[i * kRecord];
      if (label >= kClasses) {
        throw InputError(input_where(p, i * kRecord,
                                     "label " + std::to_string(label) + " of record " +
                                         std::to_string(i) + " out of range (expected 0..9)"));
      }
    }
    total += n;
    files.push_back(std::move(b));
  }
  Split s;
  s.x = Tensor(DType::U8, {total, 3, 32, 32}, Layout::NCHW);
  s.y = Tensor(DType::I64, {total});
  auto* x = reinterpret_cast<unsigned char*>(s.x.raw());
  auto y = s.y.values<std::int64_t>();
  std::int64_t k = 0;
  for (const auto& b : files) {
    const auto* u = reinterpret_cast<const unsigned char*>(b.data());
    const auto n = static_cast<std::int64_t>(b.size()) / kRecord;
    for (std::int64_t i = 0; i < n; ++i, ++k) {
      y[k] = u[i * kRecord];
      std::memcpy(x + k * kImageBytes, u + i * kRecord + 1, kImageBytes);
    }
  }
  return s;
}

std::vector<std::string> read_class_names(const std::string& path) {
  const std::vector<std::byte> b = read_file_maybe_gz(path);
  std::vector<std::string> names;
  std::string line;
  auto flush = [&] {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    std::size_t start = line.find_first_not_of(" \t");
    if (start != std::string::npos) names.push_back(line.substr(start));
    line.clear();
  };
  for (std::byte c : b) {
    if (c == std::byte{'\n'}) {
      flush();
    } else {
      line.push_back(static_cast<char>(c));
    }
  }
  flush();
  if (names.size() != kClasses) {
    throw InputError(input_where(
        path, -1,
        "expected 10 class names, one per line (found " + std::to_string(names.size()) + ")"));
  }
  return names;
}

}  // namespace

Dataset cifar10_read(const std::string& dir_in) {
  std::error_code ec;
  if (!fs::is_directory(dir_in, ec)) {
    throw InputError(input_where(dir_in, -1,
                                 "no such folder (expected the CIFAR-10 binary version there: "
                                 "data_batch_1.bin .. data_batch_5.bin, test_batch.bin)"));
  }
  fs::path dir = dir_in;
  if (!fs::exists(dir / "data_batch_1.bin", ec) &&
      fs::is_directory(dir / "cifar-10-batches-bin", ec)) {
    dir /= "cifar-10-batches-bin";
  }
  Dataset ds;
  ds.name = "cifar10";
  std::vector<std::string> train_files;
  for (int i = 1; i <= 5; ++i) {
    train_files.push_back((dir / ("data_batch_" + std::to_string(i) + ".bin")).string());
  }
  const std::string test_file = (dir / "test_batch.bin").string();
  for (const auto& p : train_files) ds.sources.push_back(p);
  ds.sources.push_back(test_file);
  for (const auto& p : ds.sources) {
    if (!fs::is_regular_file(p, ec)) {
      throw InputError(input_where(p, -1, "missing CIFAR-10 file"));
    }
  }
  ds.train = read_batches(train_files);
  ds.test = read_batches({test_file});
  ds.num_classes = kClasses;
  const fs::path meta = dir / "batches.meta.txt";
  if (fs::is_regular_file(meta, ec)) {
    ds.class_names = read_class_names(meta.string());
    ds.sources.push_back(meta.string());
  } else {
    ds.class_names = {"airplane", "automobile", "bird",  "cat",  "deer",
                      "dog",      "frog",       "horse", "ship", "truck"};
  }
  ds.mean = {0.4914f, 0.4822f, 0.4465f};
  ds.stddev = {0.2470f, 0.2435f, 0.2616f};
  ds.full_train_size = ds.train.size();
  ds.full_test_size = ds.test.size();
  return ds;
}

}  // namespace crossdl
