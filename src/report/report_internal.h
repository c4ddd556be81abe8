// Shared by the report's source files; not part of the public API.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "crossdl/report.h"
#include "crossdl/store.h"

namespace crossdl::report_detail {

// printf-formatted number; "" for NaN.
std::string fmt(double v, const char* f);
// A cell's string axis (or parameter) value, "" when it has none.
std::string axis(const CellRecord& c, const char* key);
// A JSON number field, NaN when absent or not a number.
double num(const nlohmann::json& j, const char* key);

// A matrix of cells: one row per distinct combination of the row keys (in first-seen order), one
// column per value of the column axis (in plan order), each entry text(cell) ("" where no cell).
// `headers` name the row-key columns; by_axis(name) is the key of a string axis.
using CellKey = std::function<std::string(const CellRecord&)>;
CellKey by_axis(const char* name);
ReportTable cell_matrix(const std::vector<CellRecord>& cells, const std::vector<CellKey>& row_keys,
                        const std::vector<std::string>& headers, const char* column_axis,
                        const CellKey& text);

// The "Migration" section: the trained-in x runs-on matrix, the per-cell table, and the cells
// whose outputs left tolerance as findings (with the first diverging layer and the command that
// reproduces each). Empty when there are no migrate cells.
std::string migration_section(const std::vector<CellRecord>& migrate, const std::string& dir,
                              const ReportPrinter& md);

}  // namespace crossdl::report_detail
