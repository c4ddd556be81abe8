// The plain Darknet training loop the darknet adapter is measured against: a hand-written LeNet-5
// cfg parsed with parse_network_cfg, the epoch's examples as a Darknet `data` (rows in minibatch
// order) and one train_network() call, the way Darknet's own classifier training feeds it.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
#include <darknet.h>
}

#include "adapter_overhead.h"

namespace crossdl::bench {
namespace {

// LeNet-5 in Darknet's cfg language. [convolutional] padding= is per side; [maxpool] padding= is
// the total (0: PyTorch's floor mode). The [softmax] layer is the cross-entropy loss.
std::string lenet5_cfg(const BenchData& d) {
  return "[net]\nbatch=" + std::to_string(d.batch) +
         "\nsubdivisions=1\nwidth=28\nheight=28\nchannels=1\nlearning_rate=" +
         std::to_string(d.lr) + "\nmomentum=" + std::to_string(d.momentum) +
         "\ndecay=0\npolicy=constant\n\n"
         "[convolutional]\nfilters=6\nsize=5\nstride=1\npadding=2\nactivation=relu\n\n"
         "[maxpool]\nsize=2\nstride=2\npadding=0\n\n"
         "[convolutional]\nfilters=16\nsize=5\nstride=1\npadding=0\nactivation=relu\n\n"
         "[maxpool]\nsize=2\nstride=2\npadding=0\n\n"
         "[connected]\noutput=120\nactivation=relu\n\n"
         "[connected]\noutput=84\nactivation=relu\n\n"
         "[connected]\noutput=10\nactivation=linear\n\n"
         "[softmax]\ngroups=1\n";
}

network* parse(const std::string& cfg) {
  std::string path = (std::filesystem::temp_directory_path() / "bench-lenet5-XXXXXX.cfg").string();
  const int fd = mkstemps(path.data(), 4);
  if (fd < 0) throw std::runtime_error("cannot create a temporary cfg file");
  close(fd);
  std::ofstream(path) << cfg;
  network* net = parse_network_cfg(path.data());  // prints its layer table on stderr
  std::filesystem::remove(path);
  if (net == nullptr || net->n != 8) throw std::runtime_error("darknet did not parse the cfg");
  return net;
}

void copy_in(float* dst, std::size_t count, const Tensor& t, const std::string& name) {
  if (static_cast<std::size_t>(t.numel()) != count)
    throw std::runtime_error(name + ": darknet holds a different parameter count");
  std::memcpy(dst, t.raw(), count * sizeof(float));
}

// Conv weights are OIHW and connected weights [out][in] in both Darknet and the weight set.
void load_init(network* net, const WeightSet& w) {
  const struct {
    int layer;
    const char* name;
  } map[] = {{0, "conv1"}, {2, "conv2"}, {4, "fc1"}, {5, "fc2"}, {6, "fc3"}};
  for (const auto& m : map) {
    layer& l = net->layers[m.layer];
    const std::string n = m.name;
    const bool conv = l.type == CONVOLUTIONAL;
    const std::size_t weights = conv ? static_cast<std::size_t>(l.nweights)
                                     : static_cast<std::size_t>(l.inputs) * l.outputs;
    copy_in(l.weights, weights, w.at(n + ".weight"), n + ".weight");
    copy_in(l.biases, static_cast<std::size_t>(conv ? l.n : l.outputs), w.at(n + ".bias"),
            n + ".bias");
  }
}

double test_accuracy(network* net, const BenchData& d) {
  const std::int64_t test = static_cast<std::int64_t>(d.test_y.size());
  std::vector<float> in(static_cast<std::size_t>(d.batch * d.sample));
  std::vector<float> probs(static_cast<std::size_t>(test * d.classes));
  for (std::int64_t b = 0; b < test; b += d.batch) {
    const std::int64_t rows = std::min(d.batch, test - b);
    std::fill(in.begin(), in.end(), 0.0f);
    std::memcpy(in.data(), d.test_x.data() + b * d.sample,
                static_cast<std::size_t>(rows * d.sample) * sizeof(float));
    const float* out = network_predict(net, in.data());  // softmax: the same argmax as logits
    std::memcpy(probs.data() + b * d.classes, out,
                static_cast<std::size_t>(rows * d.classes) * sizeof(float));
  }
  return accuracy_of(probs.data(), test, d.classes, d.test_y.data());
}

}  // namespace

RunResult run_native_darknet(const BenchData& d) {
  network* net = parse(lenet5_cfg(d));
  load_init(net, d.init);

  // The epoch as Darknet data: row pointers in minibatch order into the normalised images and
  // one-hot truths (full minibatches only, as crossdl).
  const std::int64_t rows = d.batches * d.batch;
  std::vector<float> truth(static_cast<std::size_t>(d.n * d.classes), 0.0f);
  for (std::int64_t i = 0; i < d.n; ++i)
    truth[static_cast<std::size_t>(i * d.classes + d.train_y[i])] = 1;
  std::vector<float*> xrows(static_cast<std::size_t>(rows)), yrows(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t k = d.order[static_cast<std::size_t>(r)];
    xrows[static_cast<std::size_t>(r)] = const_cast<float*>(d.train_x.data()) + k * d.sample;
    yrows[static_cast<std::size_t>(r)] = truth.data() + k * d.classes;
  }
  data epoch{};
  epoch.X = {static_cast<int>(rows), static_cast<int>(d.sample), xrows.data()};
  epoch.y = {static_cast<int>(rows), static_cast<int>(d.classes), yrows.data()};
  epoch.shallow = 1;

  const auto t0 = std::chrono::steady_clock::now();
  const float loss = train_network(net, epoch);  // mean cross-entropy per example
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.train_loss = loss;
  r.test_accuracy = test_accuracy(net, d);
  r.baseline = "Darknet parse_network_cfg + train_network on the epoch's data";
  free_network(net);
  return r;
}

}  // namespace crossdl::bench
