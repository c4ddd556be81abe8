// dlib 19.24's CPU batch normalisation (training mode) takes the batch variance as E[x^2] - mean^2
// with float accumulators. On a channel whose mean is large next to its spread, that difference
// cancels: the variance comes out negative and the normalised output is NaN (measured: exact
// variance 9.8e-5, dlib -nan). PyTorch computes the same statistics
// without the cancellation. Build and run: sh bn_float_variance.sh
#include <dlib/dnn.h>

#include <cmath>
#include <cstdio>

int main() {
  // 16 samples, one channel of 28x28: values 100 + 0.01 * N(0,1).
  dlib::resizable_tensor x(16, 1, 28, 28);
  dlib::rand rnd(1);
  for (float& v : x) v = 100.0f + 0.01f * static_cast<float>(rnd.get_random_gaussian());
  double sum = 0, sq = 0;
  for (float v : x) sum += v;
  const double mean = sum / static_cast<double>(x.size());
  for (float v : x) sq += (v - mean) * (v - mean);
  const double var = sq / static_cast<double>(x.size());  // biased, as used to normalise

  dlib::resizable_tensor gamma(1, 1), beta(1, 1), dest, means, invstds, rm, rv;
  gamma = 1;
  beta = 0;
  const double eps = 1e-5;
  dlib::tt::batch_normalize_conv(eps, dest, means, invstds, 1, rm, rv, x, gamma, beta);
  const double dlib_var = 1.0 / (invstds.host()[0] * invstds.host()[0]) - eps;
  double out_sq = 0;
  for (float v : dest) out_sq += static_cast<double>(v) * v;
  const double out_var = out_sq / static_cast<double>(dest.size());
  std::printf("batch variance: exact %.6g, dlib %.6g\n", var, dlib_var);
  std::printf("variance of the normalised output: %.6g (exact normalisation: %.6g)\n", out_var,
              var / (var + eps));
  // NaN when E[x^2] - mean^2 came out negative.
  if (!(std::fabs(out_var - var / (var + eps)) <= 0.01)) {
    std::printf("FINDING REPRODUCED\n");
    return 1;
  }
  std::printf("not reproduced: dlib's normalised output has the expected variance\n");
  return 0;
}
