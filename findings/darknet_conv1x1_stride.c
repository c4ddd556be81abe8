/* Reproduces a Darknet finding: a 1x1 convolution ignores its stride.
 *
 * A [convolutional] layer with size=1 stride=2 on a 4x4 single-channel input, weight 1, bias 0,
 * linear activation. A correct strided convolution (PyTorch, dlib, ...) samples every second pixel
 * of every second row: 0 2 8 10. Darknet (Debian's 2018 snapshot) skips im2col when size is 1 and
 * multiplies the input as it is, so it reads the first four pixels in raster order: 0 1 2 3.
 *
 * Build and run: findings/darknet_conv1x1_stride.sh
 */
#include <darknet.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s CFG\n", argv[0]);
    return 2;
  }
  network* net = parse_network_cfg(argv[1]);
  layer* conv = &net->layers[0];
  conv->weights[0] = 1.0f;
  conv->biases[0] = 0.0f;
  float input[16];
  for (int i = 0; i < 16; ++i) input[i] = (float)i;
  float* out = network_predict(net, input);
  const float expected[4] = {0, 2, 8, 10};
  int wrong = 0;
  printf("output %dx%d:", conv->out_h, conv->out_w);
  for (int i = 0; i < conv->out_h * conv->out_w; ++i) {
    printf(" %g", out[i]);
    wrong += out[i] != expected[i];
  }
  printf("\nexpected (every second pixel): 0 2 8 10\n");
  printf(wrong ? "FINDING REPRODUCED: the stride was ignored\n" : "not reproduced: stride honoured\n");
  free_network(net);
  return wrong ? 1 : 0;
}
