// The direct Darknet side of the runtime latency benchmark: the .cfg/.weights crossdl wrote, read
// with parse_network_cfg + load_weights and set to batch 1 once (what Darknet's own classifier
// does before predicting). Per call network_predict reads the user's buffer in place (Darknet's
// layout is [c][h][w], the same as NCHW) and the logits are copied out of the layer under the
// final [softmax], Darknet's loss layer.
extern "C" {
#include <darknet.h>
}

#include <string>

#include "runtime_latency.h"

namespace crossdl::bench {
namespace {

class DarknetDirect : public DirectRunner {
 public:
  DarknetDirect(const Artefact& a, const ir::Model& m) {
    std::string cfg = artefact_file(a, ".cfg");
    std::string weights = artefact_file(a, ".weights");
    net_ = parse_network_cfg(cfg.data());
    load_weights(net_, weights.data());
    set_batch_network(net_, 1);
    logits_layer_ = net_->n - 1;
    if (net_->layers[logits_layer_].type == SOFTMAX) --logits_layer_;
    classes_ = static_cast<std::size_t>(m.num_classes);
  }
  ~DarknetDirect() override { free_network(net_); }
  DarknetDirect(const DarknetDirect&) = delete;
  DarknetDirect& operator=(const DarknetDirect&) = delete;

  void infer(const float* x, std::vector<float>& logits) override {
    network_predict(net_, const_cast<float*>(x));
    const float* out = net_->layers[logits_layer_].output;
    logits.assign(out, out + classes_);
  }
  std::string api() const override {
    return "parse_network_cfg; load_weights; set_batch_network(1); network_predict on the input "
           "in place; copy the pre-softmax layer's output";
  }

 private:
  network* net_ = nullptr;
  int logits_layer_ = 0;
  std::size_t classes_ = 0;
};

}  // namespace

std::unique_ptr<DirectRunner> direct_darknet(const Artefact& a, const ir::Model& m) {
  return std::make_unique<DarknetDirect>(a, m);
}

}  // namespace crossdl::bench
