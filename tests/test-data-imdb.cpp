// IMDb (aclImdb layout), on a tiny generated tree.
#include <gtest/gtest.h>

#include <cstdint>
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
using test::scratch_dir;
using test::write_text;

// Train token counts: bad 3, great 3, movie 3, acting 2, it 2, then boring, don't, fun, i, loved,
// miss once each. So the ids are bad 2, great 3, movie 4, acting 5, it 6, boring 7, don't 8,
// fun 9, i 10, loved 11, miss 12. ("<br />" is not a word; "zzz" occurs only in test.)
std::string make_imdb(const std::string& dir) {
  write_text(dir + "/train/pos/0_9.txt", "great fun");
  write_text(dir + "/train/pos/1_8.txt",
             "Great movie, great ACTING! I loved it.<br /><br />Don't miss it.");
  write_text(dir + "/train/neg/0_1.txt", "Bad movie. Bad, bad acting.");
  write_text(dir + "/train/neg/1_2.txt", "boring<br/>movie");
  write_text(dir + "/train/neg/urls.dat", "bad bad bad bad bad");  // not a .txt: ignored
  write_text(dir + "/test/pos/0_7.txt", "zzz zzz zzz zzz great unknownword movie");
  write_text(dir + "/test/neg/0_3.txt", "bad");
  write_text(dir + "/imdb.vocab", "the\nzzz\n");  // ignored: the vocabulary is built from train
  return dir;
}

std::vector<std::int64_t> row(const Split& s, std::int64_t i) {
  const std::int64_t t = s.x.dim(1);
  auto v = s.x.values<std::int64_t>();
  return {v.begin() + i * t, v.begin() + (i + 1) * t};
}

using V = std::vector<std::int64_t>;

TEST(DataImdb, VocabularyTruncationAndPadding) {
  const std::string dir = make_imdb(scratch_dir("imdb"));
  const Dataset ds = imdb_read(dir, 6, 4);
  EXPECT_EQ(ds.name, "imdb");
  EXPECT_TRUE(ds.is_text());
  EXPECT_EQ(ds.vocab_size, 8);
  EXPECT_EQ(ds.num_classes, 2);
  EXPECT_EQ(ds.sample_shape(), (Shape{4}));
  EXPECT_EQ(ds.sample_dtype(), DType::I64);
  ASSERT_EQ(ds.train.x.shape(), (Shape{4, 4}));
  // Order: neg/0_1, pos/0_9, neg/1_2, pos/1_8 (the two folders interleaved, each sorted).
  EXPECT_EQ(V(ds.train.y.values<std::int64_t>().begin(), ds.train.y.values<std::int64_t>().end()),
            (V{0, 1, 0, 1}));
  EXPECT_EQ(row(ds.train, 0), (V{4, 2, 2, 5}));  // the LAST 4 of "bad movie bad bad acting"
  EXPECT_EQ(row(ds.train, 1), (V{0, 0, 3, 1}));  // left-padded; "fun" is outside the top 6
  EXPECT_EQ(row(ds.train, 2), (V{0, 0, 7, 4}));  // "<br/>" separates
  EXPECT_EQ(row(ds.train, 3), (V{6, 1, 1, 6}));  // "it don't miss it"
  ASSERT_EQ(ds.test.size(), 2);
  EXPECT_EQ(row(ds.test, 0), (V{0, 0, 0, 2}));
  EXPECT_EQ(row(ds.test, 1), (V{1, 3, 1, 4}));  // zzz and unknownword are OOV
  EXPECT_EQ(ds.test.y.values<std::int64_t>()[1], 1);

  // Full vocabulary and longer sequences: every train word has its id.
  const Dataset full = imdb_read(dir, 100, 12);
  EXPECT_EQ(full.vocab_size, 102);
  EXPECT_EQ(row(full.train, 3), (V{0, 0, 3, 4, 3, 5, 10, 11, 6, 8, 12, 6}));
  EXPECT_EQ(row(full.train, 1), (V{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 9}));

  // make_batch for text returns the token rows.
  const std::vector<std::int64_t> idx = {3, 1};
  const Tensor b = make_batch(ds, ds.train, idx);
  EXPECT_EQ(b.dtype(), DType::I64);
  EXPECT_EQ(b.shape(), (Shape{2, 4}));
  auto bv = b.values<std::int64_t>();
  EXPECT_EQ(V(bv.begin(), bv.end()), (V{6, 1, 1, 6, 0, 0, 3, 1}));

  // Through load_dataset, with a limit.
  DataOptions o;
  o.root = dir;
  o.vocab_size = 6;
  o.seq_len = 4;
  o.train_limit = 3;
  const Dataset lim = load_dataset("imdb", o);
  EXPECT_EQ(lim.train.size(), 3);
  EXPECT_EQ(lim.full_train_size, 4);
  EXPECT_EQ(row(lim.train, 2), (V{0, 0, 7, 4}));
}

TEST(DataImdb, MissingAndEmptyFolders) {
  const std::string dir = make_imdb(scratch_dir("missing"));
  fs::remove_all(dir + "/test/neg");
  std::string msg = input_error_of([&] { imdb_read(dir, 10, 5); });
  EXPECT_NE(msg.find(dir + "/test/neg"), std::string::npos) << msg;
  fs::create_directories(dir + "/test/neg");
  msg = input_error_of([&] { imdb_read(dir, 10, 5); });
  EXPECT_NE(msg.find(dir + "/test/neg"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no *.txt"), std::string::npos) << msg;
  msg = input_error_of([&] { imdb_read(dir + "/none", 10, 5); });
  EXPECT_NE(msg.find(dir + "/none"), std::string::npos) << msg;
  EXPECT_THROW(imdb_read(dir, 0, 5), InputError);
  EXPECT_THROW(imdb_read(dir, 10, 0), InputError);
}

}  // namespace
}  // namespace crossdl
