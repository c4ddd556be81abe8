// Standalone CPU-vs-GPU comparison of LeNet-5 training in LibTorch (links only LibTorch).
//
// LeNet-5 (crossdl's zoo layout: conv 6@5x5 pad 2, ReLU, max-pool 2, conv 16@5x5, ReLU, max-pool 2,
// dense 120, 84, 10 with ReLUs) on Fashion-MNIST, inputs standardised as crossdl does
// ((x/255 - 0.2860) / 0.3530). Every run starts from the same initial weights and sees the same
// minibatches (a fixed permutation per epoch, last partial batch dropped); SGD with momentum.
//
//   gpu_compare DATA_DIR [--mode det|nondet] [--epochs N] [--train-limit N] [--threads N]
//               [--batch N] [--lr X] [--seed N] [--no-cpu] [--json FILE]
//
// DATA_DIR holds the four uncompressed IDX files (train-images-idx3-ubyte, ...). Reported: the
// logits of the initial weights on CPU vs GPU, then per run the time, the last loss, test accuracy
// and a hash of the final weights; then test disagreement CPU vs GPU and GPU run 1 vs run 2.
// --mode det sets setDeterministicAlgorithms/DeterministicCuDNN and turns cuDNN benchmarking off;
// nondet does the opposite. CUBLAS_WORKSPACE_CONFIG must be set (or not) by the caller, before the
// process starts. Without a CUDA device only the CPU half runs and "no CUDA device" is printed.
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Options {
  std::string data_dir;
  std::string mode = "det";
  int epochs = 1;
  std::int64_t train_limit = 60000;
  int threads = 1;
  std::int64_t batch = 64;
  double lr = 0.01;
  double momentum = 0.9;
  std::uint64_t seed = 1;
  bool cpu = true;
  std::string json;
};

std::uint32_t be32(std::istream& in) {
  unsigned char b[4];
  in.read(reinterpret_cast<char*>(b), 4);
  if (!in) throw std::runtime_error("truncated IDX header");
  return (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) | (std::uint32_t(b[2]) << 8) |
         std::uint32_t(b[3]);
}

// An uncompressed IDX file of unsigned bytes: its dimensions and data.
std::vector<std::uint8_t> read_idx(const std::string& path, std::vector<std::int64_t>& dims) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path + " (gunzip the .gz files first)");
  const std::uint32_t magic = be32(in);
  if ((magic >> 8) != 0x08) throw std::runtime_error(path + ": not an unsigned-byte IDX file");
  dims.clear();
  std::int64_t n = 1;
  for (std::uint32_t i = 0; i < (magic & 0xff); ++i) {
    dims.push_back(be32(in));
    n *= dims.back();
  }
  std::vector<std::uint8_t> data(static_cast<std::size_t>(n));
  in.read(reinterpret_cast<char*>(data.data()), n);
  if (in.gcount() != n) throw std::runtime_error(path + ": truncated data");
  return data;
}

struct Split {
  torch::Tensor x;  // float [N,1,28,28], standardised
  torch::Tensor y;  // int64 [N]
};

Split load_split(const std::string& dir, const std::string& prefix, std::int64_t limit) {
  std::vector<std::int64_t> di, dl;
  const auto images = read_idx(dir + "/" + prefix + "-images-idx3-ubyte", di);
  const auto labels = read_idx(dir + "/" + prefix + "-labels-idx1-ubyte", dl);
  if (di.size() != 3 || dl.size() != 1 || di[0] != dl[0])
    throw std::runtime_error(prefix + ": unexpected IDX shapes");
  const std::int64_t n = std::min(di[0], limit);
  Split s;
  s.x = torch::from_blob(const_cast<std::uint8_t*>(images.data()), {n, 1, di[1], di[2]},
                         torch::kUInt8)
            .to(torch::kFloat32)
            .div_(255.0f)
            .sub_(0.2860f)
            .div_(0.3530f);
  s.y = torch::from_blob(const_cast<std::uint8_t*>(labels.data()), {n}, torch::kUInt8)
            .to(torch::kInt64);
  return s;
}

struct LeNet5Impl : torch::nn::Module {
  LeNet5Impl()
      : conv1(register_module("conv1",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 5).padding(2)))),
        conv2(register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)))),
        fc1(register_module("fc1", torch::nn::Linear(400, 120))),
        fc2(register_module("fc2", torch::nn::Linear(120, 84))),
        fc3(register_module("fc3", torch::nn::Linear(84, 10))) {}
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1->forward(x)), 2, 2);
    x = torch::max_pool2d(torch::relu(conv2->forward(x)), 2, 2);
    x = torch::flatten(x, 1);
    x = torch::relu(fc1->forward(x));
    x = torch::relu(fc2->forward(x));
    return fc3->forward(x);
  }
  torch::nn::Conv2d conv1, conv2;
  torch::nn::Linear fc1, fc2, fc3;
};
TORCH_MODULE(LeNet5);

// A fresh net holding `init`'s parameters, on `device`.
LeNet5 clone_to(LeNet5& init, const torch::Device& device) {
  LeNet5 net;
  {
    torch::NoGradGuard no_grad;
    auto src = init->parameters();
    auto dst = net->parameters();
    for (std::size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  net->to(device);
  return net;
}

// FNV-1a over the bytes of every parameter (on the CPU), in registration order.
std::string weights_hash(LeNet5& net) {
  std::uint64_t h = 1469598103934665603ull;
  for (const auto& p : net->parameters()) {
    const torch::Tensor c = p.detach().to(torch::kCPU).contiguous();
    const auto* b = static_cast<const unsigned char*>(c.data_ptr());
    for (std::size_t i = 0; i < c.nbytes(); ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

double max_weight_diff(LeNet5& a, LeNet5& b) {
  double m = 0;
  auto pa = a->parameters(), pb = b->parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    m = std::max(m, (pa[i].detach().to(torch::kCPU) - pb[i].detach().to(torch::kCPU))
                        .abs()
                        .max()
                        .item<double>());
  return m;
}

// Test logits on the CPU, computed on the net's device in batches of 1000.
torch::Tensor test_logits(LeNet5& net, const Split& test, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  net->eval();
  std::vector<torch::Tensor> parts;
  for (std::int64_t i = 0; i < test.x.size(0); i += 1000) {
    const std::int64_t n = std::min<std::int64_t>(1000, test.x.size(0) - i);
    parts.push_back(net->forward(test.x.narrow(0, i, n).to(device)).to(torch::kCPU));
  }
  return torch::cat(parts);
}

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

struct RunResult {
  std::string name;
  double seconds = 0;
  double last_loss = 0;
  double accuracy = 0;
  std::string hash;
  torch::Tensor predictions;  // CPU int64 [N_test]
  LeNet5 net{nullptr};
};

// One training run on `device` from `init`, over the shared minibatch order.
RunResult train(const std::string& name, LeNet5& init, const torch::Device& device,
                const Split& train_cpu, const Split& test,
                const std::vector<std::vector<std::int64_t>>& epochs, const Options& o) {
  RunResult r;
  r.name = name;
  r.net = clone_to(init, device);
  torch::optim::SGD optim(r.net->parameters(), torch::optim::SGDOptions(o.lr).momentum(o.momentum));
  const torch::Tensor x = train_cpu.x.to(device), y = train_cpu.y.to(device);
  sync(device);
  const auto t0 = std::chrono::steady_clock::now();
  r.net->train();
  for (const auto& order : epochs) {
    const torch::Tensor perm = torch::from_blob(const_cast<std::int64_t*>(order.data()),
                                                {std::int64_t(order.size())}, torch::kInt64)
                                   .to(device);
    for (std::int64_t b = 0; b + o.batch <= std::int64_t(order.size()); b += o.batch) {
      const torch::Tensor idx = perm.narrow(0, b, o.batch);
      optim.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          r.net->forward(x.index_select(0, idx)), y.index_select(0, idx));
      loss.backward();
      optim.step();
      r.last_loss = loss.item<double>();
    }
  }
  sync(device);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.predictions = test_logits(r.net, test, device).argmax(1);
  r.accuracy = r.predictions.eq(test.y).to(torch::kFloat64).mean().item<double>();
  r.hash = weights_hash(r.net);
  std::printf("run %-12s time_s=%.2f last_loss=%.5f test_acc=%.4f weights=%s\n", name.c_str(),
              r.seconds, r.last_loss, r.accuracy, r.hash.c_str());
  std::fflush(stdout);
  return r;
}

double disagreement(const RunResult& a, const RunResult& b) {
  return a.predictions.ne(b.predictions).to(torch::kFloat64).mean().item<double>();
}

Options parse(int argc, char** argv) {
  Options o;
  if (argc < 2) throw std::runtime_error("usage: gpu_compare DATA_DIR [options] (see the source)");
  o.data_dir = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--mode")
      o.mode = next();
    else if (a == "--epochs")
      o.epochs = std::stoi(next());
    else if (a == "--train-limit")
      o.train_limit = std::stoll(next());
    else if (a == "--threads")
      o.threads = std::stoi(next());
    else if (a == "--batch")
      o.batch = std::stoll(next());
    else if (a == "--lr")
      o.lr = std::stod(next());
    else if (a == "--seed")
      o.seed = std::stoull(next());
    else if (a == "--no-cpu")
      o.cpu = false;
    else if (a == "--json")
      o.json = next();
    else
      throw std::runtime_error("unknown option " + a);
  }
  if (o.mode != "det" && o.mode != "nondet") throw std::runtime_error("--mode det|nondet");
  return o;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const bool det = o.mode == "det";
  torch::set_num_threads(o.threads);
  at::globalContext().setDeterministicAlgorithms(det, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(det);
  at::globalContext().setBenchmarkCuDNN(!det);
  const char* cublas = std::getenv("CUBLAS_WORKSPACE_CONFIG");
  const bool cuda = torch::cuda::is_available();
  std::printf("libtorch=%s mode=%s threads=%d CUBLAS_WORKSPACE_CONFIG=%s cuda_devices=%zu\n",
              TORCH_VERSION, o.mode.c_str(), o.threads, cublas ? cublas : "(unset)",
              cuda ? torch::cuda::device_count() : std::size_t(0));

  const Split train_cpu = load_split(o.data_dir, "train", o.train_limit);
  const Split test = load_split(o.data_dir, "t10k", 10000);
  std::printf("data train=%lld test=%lld epochs=%d batch=%lld lr=%g momentum=%g seed=%llu\n",
              static_cast<long long>(train_cpu.x.size(0)), static_cast<long long>(test.x.size(0)),
              o.epochs, static_cast<long long>(o.batch), o.lr, o.momentum,
              static_cast<unsigned long long>(o.seed));

  // The shared initial weights and minibatch order.
  torch::manual_seed(o.seed);
  LeNet5 init;
  std::vector<std::vector<std::int64_t>> epochs;
  std::mt19937_64 rng(o.seed);
  for (int e = 0; e < o.epochs; ++e) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(train_cpu.x.size(0)));
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = std::int64_t(i);
    for (std::size_t i = order.size() - 1; i > 0; --i)  // Fisher-Yates, portable
      std::swap(order[i], order[static_cast<std::size_t>(rng() % (i + 1))]);
    epochs.push_back(std::move(order));
  }

  std::ostringstream json;
  json << "{\"libtorch\":\"" << TORCH_VERSION << "\",\"mode\":\"" << o.mode
       << "\",\"cublas_workspace_config\":\"" << (cublas ? cublas : "")
       << "\",\"threads\":" << o.threads << ",\"epochs\":" << o.epochs
       << ",\"train\":" << train_cpu.x.size(0) << ",\"cuda\":" << (cuda ? "true" : "false");
  const torch::Device cpu(torch::kCPU), gpu(torch::kCUDA, 0);
  std::vector<RunResult> runs;
  auto run_json = [&](const RunResult& r) {
    json << ",\"" << r.name << "\":{\"seconds\":" << r.seconds << ",\"last_loss\":" << r.last_loss
         << ",\"test_accuracy\":" << r.accuracy << ",\"weights\":\"" << r.hash << "\"}";
  };

  if (o.cpu) {
    runs.push_back(train("cpu", init, cpu, train_cpu, test, epochs, o));
    run_json(runs.back());
  }
  if (!cuda) {
    std::printf("no CUDA device: GPU half skipped\n");
  } else {
    // Initial weights, forward only: how far apart are the two devices' logits?
    LeNet5 c = clone_to(init, cpu), g = clone_to(init, gpu);
    const double d0 =
        (test_logits(c, test, cpu) - test_logits(g, test, gpu)).abs().max().item<double>();
    std::printf("initial_weights max_abs_logit_diff_cpu_gpu=%.3g\n", d0);
    json << ",\"initial_max_abs_logit_diff\":" << d0;
    const std::string tag = "gpu-" + o.mode;
    runs.push_back(train(tag + "-1", init, gpu, train_cpu, test, epochs, o));
    run_json(runs.back());
    runs.push_back(train(tag + "-2", init, gpu, train_cpu, test, epochs, o));
    run_json(runs.back());
    RunResult& a = runs[runs.size() - 2];
    RunResult& b = runs.back();
    const bool same = a.hash == b.hash;
    const double wd = max_weight_diff(a.net, b.net);
    const double dis = disagreement(a, b);
    std::printf(
        "gpu run-to-run (%s): identical_weights=%s max_abs_weight_diff=%.3g "
        "test_disagreement=%.4f\n",
        o.mode.c_str(), same ? "yes" : "no", wd, dis);
    json << ",\"gpu_run_to_run\":{\"identical_weights\":" << (same ? "true" : "false")
         << ",\"max_abs_weight_diff\":" << wd << ",\"test_disagreement\":" << dis << "}";
    if (o.cpu) {
      const double cwd = max_weight_diff(runs[0].net, a.net);
      const double cdis = disagreement(runs[0], a);
      std::printf(
          "cpu vs gpu: max_abs_weight_diff=%.3g test_disagreement=%.4f "
          "speedup=%.2fx\n",
          cwd, cdis, runs[0].seconds / a.seconds);
      json << ",\"cpu_vs_gpu\":{\"max_abs_weight_diff\":" << cwd
           << ",\"test_disagreement\":" << cdis << "}";
    }
  }
  json << "}\n";
  if (!o.json.empty()) std::ofstream(o.json) << json.str();
  return 0;
} catch (const c10::Error& e) {
  std::fprintf(stderr, "gpu_compare: LibTorch: %s\n", e.what_without_backtrace());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "gpu_compare: %s\n", e.what());
  return 1;
}
