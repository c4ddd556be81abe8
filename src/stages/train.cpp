// The "train" stage: one zoo model trained in one framework on one dataset (src/train/train.cpp),
// with progress and epoch events streamed to the parent as the cell runs.
#include "crossdl/train.h"
#include "crossdl/stage.h"
#include "stages.h"

using nlohmann::json;

namespace crossdl {

StageKind train_stage() {
  StageKind k;
  k.name = "train";
  k.required_axes = {"model", "dataset", "framework"};
  k.validate = [](const CellSpec& c) { (void)train_request_from_json(c.config()); };
  k.run = [](const StageContext& ctx) {
    TrainRequest req = train_request_from_json(ctx.spec.config());
    req.out_dir = ctx.cell_dir;
    TrainProgress p;
    p.on_batch = [](int epoch, int epochs, std::int64_t batch, std::int64_t batches, double loss,
                    double sps) {
      emit_event({{"event", "progress"},
                  {"epoch", epoch},
                  {"epochs", epochs},
                  {"batch", batch},
                  {"batches", batches},
                  {"loss", loss},
                  {"samples_per_s", sps}});
    };
    p.on_epoch = [](const TrainEpoch& e) {
      emit_event({{"event", "epoch"},
                  {"epoch", e.epoch},
                  {"train_loss", e.train_loss},
                  {"test_accuracy", e.test_accuracy},
                  {"seconds", e.seconds},
                  {"peak_rss_mb", e.peak_rss_mb},
                  {"samples_per_s", e.samples_per_s}});
    };
    json m = train_run(req, p);
    StageResult r;
    r.status = m["status"].get<std::string>();
    r.message = m.value("message", "");
    // A framework this build lacks comes back "skipped" without framework_info.
    if (m.contains("framework_info")) {
      const json& fi = m["framework_info"];
      r.libraries[fi["library"].get<std::string>()] = fi["version"];
    }
    m.erase("epoch_metrics");  // already sent as epoch events
    if (m.contains("outputs")) {
      r.outputs = m["outputs"];
      m.erase("outputs");
    }
    r.metrics = m;
    return r;
  };
  k.report = report_training_section;
  return k;
}

}  // namespace crossdl
