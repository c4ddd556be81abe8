// Study files, the planner and the presets.
#include <gtest/gtest.h>

#include <set>

#include "crossdl/stage.h"
#include "crossdl/status.h"
#include "crossdl/study.h"
#include "support.h"

using namespace crossdl;

namespace {

const char* kExample = R"(name: default
timeout_s: 900
defaults:
  epochs: 1
  batch_size: 64
  optimizer: sgd
  lr: 0.01
stages:
  - stage: train
    axes:
      model: [lenet1, lenet5]
      dataset: [fashion-mnist]
      framework: [torch]
      seed: [1, 2, 3]
  - stage: train
    axes: {model: [resnet20, lstm], dataset: [fashion-mnist], framework: [torch], seed: [1]}
    params: {train_limit: 6000, test_limit: 2000, epochs: 2}
    timeout_s: 60
)";

// The message of the InputError that parsing `text` throws.
std::string parse_error(const std::string& text) {
  try {
    study_parse(text, "s.yaml");
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(StudyYaml, ParsesStagesAxesAndParams) {
  Study s = study_parse(kExample, "s.yaml");
  EXPECT_EQ(s.name, "default");
  EXPECT_EQ(s.timeout_s, 900);
  ASSERT_EQ(s.stages.size(), 2u);
  EXPECT_EQ(s.stages[0].kind, "train");
  ASSERT_EQ(s.stages[0].axes.size(), 4u);
  EXPECT_EQ(s.stages[0].axes[0].name, "model");
  EXPECT_EQ(s.stages[0].axes[3].name, "seed");
  EXPECT_TRUE(s.stages[0].axes[3].values[0].is_number_integer());
  EXPECT_TRUE(s.defaults["lr"].is_number_float());
  EXPECT_DOUBLE_EQ(s.defaults["lr"].get<double>(), 0.01);
  EXPECT_EQ(s.defaults["optimizer"], "sgd");
  EXPECT_EQ(s.stages[1].params["train_limit"], 6000);
  EXPECT_EQ(s.stages[1].timeout_s.value_or(0), 60);
}

TEST(StudyYaml, QuotedScalarsStayStrings) {
  Study s = study_parse(
      "stages:\n  - stage: train\n    axes: {model: [a], dataset: [d], framework: [f], seed: "
      "['1']}\n",
      "s.yaml");
  EXPECT_TRUE(s.stages[0].axes[3].values[0].is_string());
  EXPECT_EQ(s.name, "s");  // from the file name when the study has none
}

TEST(StudyYaml, ErrorsNameFileLineAndColumn) {
  EXPECT_EQ(parse_error("name: x\nstagez: []\n"),
            "s.yaml:2:1: unknown key 'stagez' (known: name, description, timeout_s, defaults, "
            "stages)");
  // The built-in kinds come first; a test that registers its own kinds adds them after.
  EXPECT_EQ(parse_error("stages:\n  - stage: deploy\n    axes: {model: [a]}\n")
                .rfind("s.yaml:2:12: unknown stage 'deploy' (known: train, migrate, quantize", 0),
            0u);
  EXPECT_EQ(parse_error("stages:\n  - stage: train\n    axes:\n      model: []\n"),
            "s.yaml:4:14: axis 'model' has no values");
  EXPECT_EQ(parse_error("defaults:\n  lr: [1, 2]\nstages: []\n"),
            "s.yaml:2:7: parameter 'lr' must be a scalar (a string, number or boolean)");
  EXPECT_EQ(parse_error("stages:\n  - stage: train\n    axes:\n      model: [{a: 1}]\n"),
            "s.yaml:4:15: a value of axis 'model' must be a scalar (a string, number or boolean)");
  EXPECT_EQ(parse_error("stages:\n  - stage: train\n    axes: {model: [a, a]}\n"),
            "s.yaml:3:23: axis 'model' lists \"a\" twice");
  EXPECT_EQ(parse_error("stages:\n  - stage: train\n    colour: red\n    axes: {m: [a]}\n"),
            "s.yaml:3:5: unknown stage key 'colour' (known: stage, axes, params, timeout_s)");
  EXPECT_EQ(parse_error("timeout_s: -1\nstages: []\n"),
            "s.yaml:1:12: 'timeout_s' must be a positive number");
  // yaml-cpp's own syntax errors get the same prefix.
  EXPECT_EQ(parse_error("stages: [a\n").rfind("s.yaml:", 0), 0u);
}

TEST(StudyYaml, RegisteredStagesBecomeKnown) {
  register_stage("study-test-stage", {"model"});
  Study s = study_parse("stages:\n  - stage: study-test-stage\n    axes: {model: [a, b]}\n", "s");
  EXPECT_EQ(study_plan(s).size(), 2u);
  Study missing = study_parse("stages:\n  - stage: study-test-stage\n    axes: {x: [a]}\n", "s");
  try {
    study_plan(missing);
    FAIL() << "a missing required axis must be an error";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()),
              "s:2:5: stage 'study-test-stage' needs 'model' (as an axis or a parameter)");
  }
}

TEST(StudyPlanner, ProductSizeOrderAndParams) {
  std::vector<CellSpec> cells = study_plan(study_parse(kExample, "s.yaml"));
  ASSERT_EQ(cells.size(), 2u * 3u + 2u);
  // The first axis varies slowest, the last fastest.
  EXPECT_EQ(cells[0].label(), "train lenet1 fashion-mnist torch seed=1");
  EXPECT_EQ(cells[1].label(), "train lenet1 fashion-mnist torch seed=2");
  EXPECT_EQ(cells[3].label(), "train lenet5 fashion-mnist torch seed=1");
  EXPECT_EQ(cells[7].label(), "train lstm fashion-mnist torch seed=1");
  for (std::size_t i = 0; i < cells.size(); ++i) EXPECT_EQ(cells[i].seq, static_cast<int>(i));
  EXPECT_EQ(cells[0].params["epochs"], 1);
  EXPECT_EQ(cells[0].timeout_s, 900);
  EXPECT_EQ(cells[6].params["epochs"], 2);  // the stage overrides the default
  EXPECT_EQ(cells[6].params["batch_size"], 64);
  EXPECT_EQ(cells[6].params["train_limit"], 6000);
  EXPECT_EQ(cells[6].timeout_s, 60);
  EXPECT_EQ(cells[6].value("model"), "resnet20");
  EXPECT_EQ(cells[6].value("lr"), 0.01);
  EXPECT_TRUE(cells[6].value("nothing").is_null());
  std::set<std::string> ids;
  for (const auto& c : cells) {
    EXPECT_EQ(c.id.size(), 16u);
    ids.insert(c.id);
  }
  EXPECT_EQ(ids.size(), cells.size());
}

TEST(StudyPlanner, IdsAreStableAndCanonical) {
  // sha256('{"axes":{"model":"lenet1","seed":1},"params":{"epochs":1},"stage":"train"}')[:16]
  EXPECT_EQ(cell_id("train", {{"model", "lenet1"}, {"seed", 1}}, {{"epochs", 1}}),
            "82f6e05473e9dd48");
  EXPECT_EQ(cell_id("train", {{"seed", 1}, {"model", "lenet1"}}, {{"epochs", 1}}),
            "82f6e05473e9dd48");
  EXPECT_NE(cell_id("train", {{"model", "lenet1"}, {"seed", 1}}, {{"epochs", 2}}),
            "82f6e05473e9dd48");
  // The order parameters are written in does not matter; their values do.
  auto a = study_plan(study_parse(
      "defaults: {lr: 0.1, epochs: 1}\nstages:\n  - stage: train\n    axes: {model: [m], "
      "dataset: [d], framework: [f]}\n",
      "a"));
  auto b = study_plan(study_parse(
      "defaults: {epochs: 1, lr: 0.1}\nstages:\n  - stage: train\n    axes: {model: [m], "
      "dataset: [d], framework: [f]}\n",
      "b"));
  EXPECT_EQ(a[0].id, b[0].id);
}

TEST(StudyPlanner, DuplicateCellsAreAnError) {
  Study s = study_parse(
      "stages:\n  - stage: train\n    axes: {model: [m], dataset: [d], framework: [f]}\n"
      "  - stage: train\n    axes: {model: [m], dataset: [d], framework: [f]}\n",
      "s.yaml");
  try {
    study_plan(s);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "s.yaml:4:5: cell 'train m d f' is planned twice");
  }
}

TEST(StudyPlanner, SpecFileRoundTripKeepsAxisOrder) {
  std::string dir = test::scratch_dir("spec");
  CellSpec c = study_plan(study_parse(kExample, "s.yaml"))[4];
  cell_spec_write(dir + "/spec.json", c);
  CellSpec back = cell_spec_read(dir + "/spec.json");
  EXPECT_EQ(back.id, c.id);
  EXPECT_EQ(back.seq, c.seq);
  EXPECT_EQ(back.label(), c.label());
  EXPECT_EQ(back.params, c.params);
  EXPECT_EQ(back.timeout_s, c.timeout_s);
  EXPECT_EQ(cell_id(back.stage, back.axes, back.params), c.id);
  test::write_text(dir + "/bad.json", "{\"id\": 3");
  EXPECT_THROW(cell_spec_read(dir + "/bad.json"), InputError);
  EXPECT_THROW(cell_spec_read(dir + "/missing.json"), InputError);
}

TEST(StudyPresets, ParseAndPlan) {
  auto names = study_preset_names();
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0], "quick");
  Study quick = study_preset("quick");
  EXPECT_EQ(quick.source, "preset:quick");
  auto q = study_plan(quick);
  // Training: 2 LeNets x 3 frameworks x 3 seeds, 2 models x 3 frameworks, 3 frameworks x 2 x 2
  // repeats, LeNet-5 in 3 frameworks + TF.js in Chromium on 2 backends. Migration: 4 models x 3
  // training frameworks x 9 runtimes; 3 LibTorch models x 24 web runtime:backend@platform.
  // Quantization: the LibTorch LeNet-5 and ResNet-20 x 6 schemes x 10 runtimes, and LeNet-5 with
  // per-tensor weights in 5 int8 runtimes.
  EXPECT_EQ(q.size(), 18u + 6u + 12u + 5u + 4u * 3u * 9u + 3u * 24u + 2u * 6u * 10u + 5u);
  EXPECT_EQ(q[18].value("model"), "resnet20");
  EXPECT_EQ(q[18].value("train_limit"), 2000);
  EXPECT_EQ(q[18].value("test_limit"), 1000);
  EXPECT_EQ(q[35].value("replicate"), 1);
  EXPECT_EQ(q[35].value("threads"), 2);
  EXPECT_EQ(q[39].value("framework"), "tfjs-train@chromium");
  EXPECT_EQ(q[39].value("train_limit"), 2048);
  EXPECT_EQ(q[149].stage, "migrate");
  EXPECT_EQ(q[149].value("runtime"), "tfjs:cpu@node");
  EXPECT_EQ(q[220].value("runtime"), "tflite-web:wasm@firefox");
  EXPECT_EQ(q[220].value("model"), "resnet20");
  EXPECT_EQ(q.back().stage, "quantize");
  EXPECT_EQ(q.back().value("scheme"), "int8-static");
  EXPECT_EQ(q.back().value("per_channel"), false);
  EXPECT_EQ(q.back().value("runtime"), "tflite-web:wasm@chromium");
  auto p = study_plan(study_preset("paper"));
  // 6 models x 3 frameworks x 5 seeds; seed 1 of each migrates to 9 runtimes.
  EXPECT_EQ(p.size(), 6u * 3u * 5u + 6u * 3u * 9u);
  for (const auto& c : p) EXPECT_EQ(c.value("epochs"), 10);
  EXPECT_EQ(q[41].stage, "migrate");
  EXPECT_EQ(q[41].value("runtime"), "torch");
  EXPECT_EQ(q[41].value("framework"), "torch");
  try {
    study_preset("huge");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()), "unknown study preset 'huge' (presets: quick, paper)");
  }
}

TEST(StudyPresets, DocumentedExampleParses) {
  Study s = study_load(test::source_path("examples/study-quick.yaml"));
  EXPECT_EQ(study_plan(s).size(), study_plan(study_preset("quick")).size());
  EXPECT_THROW(study_load("/nonexistent/study.yaml"), InputError);
}
