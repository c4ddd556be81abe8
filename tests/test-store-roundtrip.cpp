// The SQLite store: what goes in comes out, and a missing store is a clear error.
#include <gtest/gtest.h>

#include <cmath>

#include "crossdl/status.h"
#include "crossdl/store.h"
#include "support.h"

using namespace crossdl;

TEST(Store, CellAndEpochsRoundTrip) {
  std::string dir = test::scratch_dir("store");
  CellSpec spec;
  spec.stage = "train";
  spec.axes = {{"model", "lenet5"}, {"dataset", "fashion-mnist"}, {"seed", 2}};
  spec.params = {{"epochs", 2}, {"lr", 0.01}};
  spec.id = cell_id(spec.stage, spec.axes, spec.params);
  spec.seq = 4;
  spec.timeout_s = 60;
  CellOutcome o;
  o.status = "crashed";
  o.message = "killed by signal 11 (SIGSEGV)";
  o.signal = 11;
  o.signal_name = "SIGSEGV";
  o.elapsed_s = 1.5;
  o.child_peak_rss_mb = 123.25;
  o.metrics = {{"test_accuracy", 0.875}};
  o.provenance = {{"cpu", "x"}};
  o.stderr_tail = "segfault here\n";
  o.started_at = "2024-01-01T00:00:00Z";
  o.finished_at = "2024-01-01T00:00:02Z";
  o.epochs = {{"", 1, 0.6, 0.8, 1.0, 100, 5000}, {"", 2, 0.5, std::nan(""), 1.1, 101, 5100}};
  {
    Store s(dir, true);
    s.set_meta("name", "t");
    s.write_cell(cell_record(spec, o));
  }
  Store s(dir, false);
  EXPECT_EQ(s.meta("name").value_or(""), "t");
  EXPECT_EQ(s.meta("schema_version").value_or(""), "1");
  EXPECT_FALSE(s.meta("nothing").has_value());
  auto c = s.find_cell(spec.id);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->seq, 4);
  EXPECT_EQ(c->status, "crashed");
  EXPECT_EQ(c->signal.value_or(0), 11);
  EXPECT_FALSE(c->exit_code.has_value());
  EXPECT_EQ(c->signal_name, "SIGSEGV");
  EXPECT_DOUBLE_EQ(c->elapsed_s, 1.5);
  EXPECT_DOUBLE_EQ(c->child_peak_rss_mb, 123.25);
  EXPECT_EQ(c->metrics["test_accuracy"], 0.875);
  EXPECT_EQ(c->provenance["cpu"], "x");
  EXPECT_EQ(c->stderr_tail, "segfault here\n");
  EXPECT_EQ(c->finished_at, "2024-01-01T00:00:02Z");
  ASSERT_EQ(c->epochs.size(), 2u);
  EXPECT_DOUBLE_EQ(c->epochs[1].train_loss, 0.5);
  EXPECT_TRUE(std::isnan(c->epochs[1].test_accuracy));  // NaN is stored as NULL
  CellSpec back = c->spec();
  EXPECT_EQ(back.label(), "train lenet5 fashion-mnist seed=2");  // axis order survives
  EXPECT_EQ(back.id, spec.id);
  EXPECT_EQ(back.timeout_s, 60);
  EXPECT_EQ(cell_id(back.stage, back.axes, back.params), spec.id);

  // Writing the cell again replaces it and its epochs.
  o.status = "ok";
  o.epochs.resize(1);
  s.write_cell(cell_record(spec, o));
  EXPECT_EQ(s.cells().size(), 1u);
  EXPECT_EQ(s.find_cell(spec.id)->status, "ok");
  EXPECT_EQ(s.epochs().size(), 1u);
  EXPECT_EQ(s.done_ids().count(spec.id), 1u);
}

TEST(Store, MissingOrForeignStoreIsAnInputError) {
  std::string dir = test::scratch_dir("missing");
  try {
    Store s(dir, false);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/study.sqlite"), std::string::npos) << e.what();
  }
  test::write_text(dir + "/study.sqlite", "this is not a database, just text of some length....");
  EXPECT_THROW(Store(dir, false), InputError);
  EXPECT_THROW(store_find_cell(dir + "/none", "x"), InputError);
}
