// read_file_maybe_gz: whole-file reads with transparent gunzip (zlib).
//
// A file is treated as gzip when its first two bytes are the gzip magic 1f 8b; anything else is
// returned as is. Offsets in gzip error messages are offsets into the compressed file. Several
// concatenated gzip members (as `cat a.gz b.gz` makes) are decompressed one after the other.
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include "crossdl/dataset.h"
#include "crossdl/status.h"

namespace crossdl {

namespace {

std::vector<std::byte> read_plain(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) {
    throw InputError(input_where(path, -1, "cannot open: no such file"));
  }
  if (std::filesystem::is_directory(st)) {
    throw InputError(input_where(path, -1, "cannot read: is a folder, expected a file"));
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    throw InputError(input_where(path, -1, std::string("cannot open: ") + std::strerror(errno)));
  }
  std::vector<std::byte> out;
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec) out.reserve(static_cast<std::size_t>(size));
  std::byte buf[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f);
    out.insert(out.end(), buf, buf + n);
    if (n < sizeof buf) break;
  }
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) {
    throw InputError(input_where(path, static_cast<long long>(out.size()),
                                 std::string("read error: ") + std::strerror(err)));
  }
  return out;
}

bool is_gzip(const std::vector<std::byte>& b) {
  return b.size() >= 2 && b[0] == std::byte{0x1f} && b[1] == std::byte{0x8b};
}

std::vector<std::byte> gunzip(const std::string& path, const std::vector<std::byte>& in) {
  std::vector<std::byte> out;
  // The gzip trailer's ISIZE is the uncompressed size modulo 2^32 of the last member: a good
  // first guess for single-member files, capped so that a corrupt trailer cannot ask for much.
  if (in.size() >= 18) {
    const auto* t = reinterpret_cast<const unsigned char*>(in.data() + in.size() - 4);
    const std::size_t isize = std::size_t{t[0]} | (std::size_t{t[1]} << 8) |
                              (std::size_t{t[2]} << 16) | (std::size_t{t[3]} << 24);
    out.resize(std::min<std::size_t>(std::max<std::size_t>(isize, 1024), std::size_t{1} << 30));
  } else {
    out.resize(1024);
  }

  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    throw InputError(input_where(path, 0, "cannot start gzip decompression (zlib inflateInit2)"));
  }
  std::size_t in_pos = 0, out_pos = 0;
  constexpr std::size_t kChunk = std::numeric_limits<uInt>::max() / 2;
  for (;;) {
    if (out_pos == out.size()) out.resize(out.size() * 2);
    const std::size_t in_avail = std::min(in.size() - in_pos, kChunk);
    const std::size_t out_avail = std::min(out.size() - out_pos, kChunk);
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data() + in_pos));
    zs.avail_in = static_cast<uInt>(in_avail);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + out_pos);
    zs.avail_out = static_cast<uInt>(out_avail);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    in_pos += in_avail - zs.avail_in;
    out_pos += out_avail - zs.avail_out;
    if (rc == Z_STREAM_END) {
      // Another member follows? Otherwise done. (Trailing zero padding is tolerated, as gzip does.)
      std::size_t next = in_pos;
      while (next < in.size() && in[next] == std::byte{0}) ++next;
      if (next == in.size()) break;
      if (in.size() - next < 2 || in[next] != std::byte{0x1f} || in[next + 1] != std::byte{0x8b}) {
        inflateEnd(&zs);
        throw InputError(input_where(path, static_cast<long long>(next),
                                     "corrupt gzip file: unexpected data after the end of the "
                                     "compressed stream"));
      }
      in_pos = next;
      inflateReset(&zs);
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && in_pos == in.size() && out_pos < out.size()) {
      inflateEnd(&zs);
      throw InputError(input_where(
          path, static_cast<long long>(in_pos),
          "truncated gzip stream: the compressed data ends before the end-of-stream marker (" +
              std::to_string(out_pos) + " bytes decompressed so far)"));
    }
    if (rc == Z_BUF_ERROR) continue;  // output buffer full: grow and go on
    const std::string msg = zs.msg != nullptr ? zs.msg : ("zlib error " + std::to_string(rc));
    inflateEnd(&zs);
    throw InputError(
        input_where(path, static_cast<long long>(in_pos), "corrupt gzip stream (" + msg + ")"));
  }
  inflateEnd(&zs);
  out.resize(out_pos);
  out.shrink_to_fit();
  return out;
}

}  // namespace

std::vector<std::byte> read_file_maybe_gz(const std::string& path) {
  std::vector<std::byte> raw = read_plain(path);
  if (!is_gzip(raw)) return raw;
  return gunzip(path, raw);
}

}  // namespace crossdl
