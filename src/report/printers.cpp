// Table printers (markdown, csv, json) behind one interface, as llama-bench does.
#include <map>
#include <stdexcept>

#include "crossdl/report.h"
#include "crossdl/status.h"

namespace crossdl {
namespace {

std::string md_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|')
      out += "\\|";
    else if (c == '\n')
      out += ' ';
    else
      out += c;
  }
  return out;
}

class MarkdownPrinter : public ReportPrinter {
 public:
  // Columns with one value on every row are stated once above the table instead of repeated;
  // key columns stay so that each row still says what it is.
  std::string table(const ReportTable& t) const override {
    std::string out;
    if (!t.title.empty()) out += "### " + t.title + "\n\n";
    if (t.rows.empty()) return out + "(none)\n\n";
    std::vector<std::size_t> shown;
    std::vector<std::string> constants;
    for (std::size_t c = 0; c < t.columns.size(); ++c) {
      bool key = false;
      for (const auto& k : t.key_columns) key = key || k == t.columns[c];
      bool same = t.rows.size() > 1;
      for (const auto& r : t.rows) same = same && r.at(c) == t.rows[0].at(c);
      if (same && !key) {
        if (!t.rows[0][c].empty())
          constants.push_back(t.columns[c] + ": " + md_escape(t.rows[0][c]));
      } else {
        shown.push_back(c);
      }
    }
    if (!constants.empty()) {
      out += "Same on every row — ";
      for (std::size_t i = 0; i < constants.size(); ++i) out += (i ? "; " : "") + constants[i];
      out += ".\n\n";
    }
    out += "|";
    for (auto c : shown) out.append(" ").append(md_escape(t.columns[c])).append(" |");
    out += "\n|";
    for (std::size_t i = 0; i < shown.size(); ++i) out += " --- |";
    out += "\n";
    for (const auto& r : t.rows) {
      out += "|";
      for (auto c : shown) out.append(" ").append(md_escape(r.at(c))).append(" |");
      out += "\n";
    }
    return out + "\n";
  }
};

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

class CsvPrinter : public ReportPrinter {
 public:
  std::string table(const ReportTable& t) const override {
    std::string out;
    for (std::size_t c = 0; c < t.columns.size(); ++c)
      out.append(c ? "," : "").append(csv_field(t.columns[c]));
    out += "\n";
    for (const auto& r : t.rows) {
      for (std::size_t c = 0; c < r.size(); ++c) out.append(c ? "," : "").append(csv_field(r[c]));
      out += "\n";
    }
    return out;
  }
};

class JsonPrinter : public ReportPrinter {
 public:
  std::string table(const ReportTable& t) const override {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const auto& r : t.rows) {
      nlohmann::ordered_json o = nlohmann::ordered_json::object();
      for (std::size_t c = 0; c < t.columns.size() && c < r.size(); ++c) o[t.columns[c]] = r[c];
      rows.push_back(o);
    }
    nlohmann::ordered_json j = {{"title", t.title}, {"rows", rows}};
    return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
  }
};

}  // namespace

std::unique_ptr<ReportPrinter> make_report_printer(const std::string& format) {
  if (format == "markdown" || format == "md") return std::make_unique<MarkdownPrinter>();
  if (format == "csv") return std::make_unique<CsvPrinter>();
  if (format == "json") return std::make_unique<JsonPrinter>();
  throw InputError("unknown report format '" + format + "' (known: markdown, csv, json)");
}

}  // namespace crossdl
