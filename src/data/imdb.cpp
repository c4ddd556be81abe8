// IMDb movie reviews in the aclImdb layout: DIR/{train,test}/{pos,neg}/*.txt (label 1 = pos,
// 0 = neg). Other files and folders (imdb.vocab, imdbEr.txt, train/unsup, *.feat) are ignored:
// the vocabulary is built here.
//
// Tokenisation: "<br />" (and "<br/>", "<br>") becomes a space; ASCII letters are lower-cased;
// a token is a maximal run of word characters, which are ASCII letters and digits, bytes >= 0x80
// (so UTF-8 letters such as "é" stay inside their word) and apostrophes that have a word character
// on both sides ("don't" is one token, "'quoted'" gives "quoted"). Everything else separates.
//
// Vocabulary: the vocab_size most frequent tokens of the TRAIN split (counted over all its
// reviews), ties broken by byte-wise ascending order of the token; the most frequent gets id 2,
// the next 3, and so on. Id 0 is padding, id 1 any token outside the vocabulary. The dataset's
// vocab_size is vocab_size + 2 even when the train split has fewer distinct tokens.
//
// Sequences: a review longer than seq_len tokens keeps its LAST seq_len tokens (the end of a
// review tends to carry the verdict); a shorter one is padded with 0 on the LEFT, so that the
// real tokens end at the last time step (Keras pad_sequences' defaults, good for recurrent nets).
//
// Order: files are read in sorted path order within each folder; each split then interleaves the
// two folders, neg[0], pos[0], neg[1], pos[1], ... (the longer folder's rest at the end), so that
// a prefix kept by a train/test limit holds both classes.
#include <algorithm>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

namespace fs = std::filesystem;

bool is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

// Calls emit(std::string_view token) for each token of `text`, in order.
template <class Emit>
void tokenize(std::string_view text, Emit&& emit) {
  std::string cur;
  const std::size_t n = text.size();
  auto flush = [&] {
    if (!cur.empty()) emit(std::string_view(cur));
    cur.clear();
  };
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '<') {
      std::size_t len = 0;
      for (std::string_view br : {"<br />", "<br/>", "<br>"}) {
        if (text.substr(i, br.size()) == br) {
          len = br.size();
          break;
        }
      }
      if (len != 0) {
        flush();
        i += len - 1;
        continue;
      }
    }
    if (is_word_byte(c)) {
      cur.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : static_cast<char>(c));
    } else if (c == '\'' && !cur.empty() && i + 1 < n &&
               is_word_byte(static_cast<unsigned char>(text[i + 1]))) {
      cur.push_back('\'');
    } else {
      flush();
    }
  }
  flush();
}

// Every distinct token seen gets a provisional index; reviews are kept as those indices (a few
// bytes per token instead of a string), and train occurrences are counted per index.
struct Lexicon {
  std::unordered_map<std::string, std::int32_t> index;
  std::vector<std::string> words;
  std::vector<std::int64_t> train_count;

  std::int32_t intern(std::string_view w) {
    auto it = index.find(std::string(w));
    if (it != index.end()) return it->second;
    const auto id = static_cast<std::int32_t>(words.size());
    index.emplace(std::string(w), id);
    words.emplace_back(w);
    train_count.push_back(0);
    return id;
  }
};

struct Review {
  std::vector<std::int32_t> tokens;  // Lexicon indices
  std::int64_t label = 0;
};

std::vector<std::string> list_reviews(const fs::path& folder) {
  std::error_code ec;
  if (!fs::is_directory(folder, ec)) {
    throw InputError(input_where(folder.string(), -1,
                                 "missing IMDb folder (expected the aclImdb layout: "
                                 "train/pos, train/neg, test/pos, test/neg with *.txt reviews)"));
  }
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(folder, ec)) {
    if (e.path().extension() == ".txt" && e.is_regular_file(ec)) files.push_back(e.path().string());
  }
  if (ec) throw InputError(input_where(folder.string(), -1, "cannot list folder: " + ec.message()));
  if (files.empty())
    throw InputError(input_where(folder.string(), -1, "no *.txt reviews in folder"));
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<Review> read_split(const fs::path& dir, const std::string& split, bool count,
                               Lexicon& lex, std::vector<std::string>& sources) {
  const fs::path neg_dir = dir / split / "neg";
  const fs::path pos_dir = dir / split / "pos";
  const std::vector<std::string> neg = list_reviews(neg_dir);
  const std::vector<std::string> pos = list_reviews(pos_dir);
  sources.push_back(neg_dir.string());
  sources.push_back(pos_dir.string());
  std::vector<Review> out;
  out.reserve(neg.size() + pos.size());
  auto add = [&](const std::string& path, std::int64_t label) {
    const std::vector<std::byte> b = read_file_maybe_gz(path);
    Review r;
    r.label = label;
    tokenize(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()),
             [&](std::string_view w) {
               const std::int32_t id = lex.intern(w);
               if (count) ++lex.train_count[static_cast<std::size_t>(id)];
               r.tokens.push_back(id);
             });
    out.push_back(std::move(r));
  };
  for (std::size_t i = 0; i < std::max(neg.size(), pos.size()); ++i) {
    if (i < neg.size()) add(neg[i], 0);
    if (i < pos.size()) add(pos[i], 1);
  }
  return out;
}

Split encode(const std::vector<Review>& reviews, const std::vector<std::int64_t>& final_id,
             std::int64_t seq_len) {
  const auto n = static_cast<std::int64_t>(reviews.size());
  Split s;
  s.x = Tensor(DType::I64, {n, seq_len});  // zero-filled: padding
  s.y = Tensor(DType::I64, {n});
  auto x = s.x.values<std::int64_t>();
  auto y = s.y.values<std::int64_t>();
  for (std::int64_t i = 0; i < n; ++i) {
    const auto& toks = reviews[static_cast<std::size_t>(i)].tokens;
    const auto len = static_cast<std::int64_t>(toks.size());
    const std::int64_t keep = std::min(len, seq_len);
    std::int64_t* row = x.data() + i * seq_len + (seq_len - keep);
    for (std::int64_t t = 0; t < keep; ++t) {
      row[t] = final_id[static_cast<std::size_t>(toks[static_cast<std::size_t>(len - keep + t)])];
    }
    y[i] = reviews[static_cast<std::size_t>(i)].label;
  }
  return s;
}

}  // namespace

Dataset imdb_read(const std::string& dir, std::int64_t vocab_size, std::int64_t seq_len) {
  if (vocab_size <= 0) {
    throw InputError("imdb: vocabulary size must be positive (found " + std::to_string(vocab_size) +
                     ")");
  }
  if (seq_len <= 0) {
    throw InputError("imdb: sequence length must be positive (found " + std::to_string(seq_len) +
                     ")");
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InputError(input_where(dir, -1,
                                 "no such folder (expected the aclImdb layout: train/pos, "
                                 "train/neg, test/pos, test/neg with *.txt reviews)"));
  }
  Dataset ds;
  ds.name = "imdb";
  Lexicon lex;
  const std::vector<Review> train = read_split(dir, "train", true, lex, ds.sources);
  const std::vector<Review> test = read_split(dir, "test", false, lex, ds.sources);

  // Rank the tokens seen in train: count descending, then the token ascending.
  std::vector<std::int32_t> ranked;
  for (std::size_t i = 0; i < lex.words.size(); ++i)
    if (lex.train_count[i] > 0) ranked.push_back(static_cast<std::int32_t>(i));
  const auto keep = std::min<std::size_t>(ranked.size(), static_cast<std::size_t>(vocab_size));
  std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(keep),
                    ranked.end(), [&](std::int32_t a, std::int32_t b) {
                      const auto ca = lex.train_count[static_cast<std::size_t>(a)];
                      const auto cb = lex.train_count[static_cast<std::size_t>(b)];
                      if (ca != cb) return ca > cb;
                      return lex.words[static_cast<std::size_t>(a)] <
                             lex.words[static_cast<std::size_t>(b)];
                    });
  std::vector<std::int64_t> final_id(lex.words.size(), 1);  // 1: out of vocabulary
  for (std::size_t r = 0; r < keep; ++r) {
    final_id[static_cast<std::size_t>(ranked[r])] = static_cast<std::int64_t>(r) + 2;
  }

  ds.train = encode(train, final_id, seq_len);
  ds.test = encode(test, final_id, seq_len);
  ds.num_classes = 2;
  ds.class_names = {"neg", "pos"};
  ds.vocab_size = vocab_size + 2;
  ds.full_train_size = ds.train.size();
  ds.full_test_size = ds.test.size();
  return ds;
}

}  // namespace crossdl
