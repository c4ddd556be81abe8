/* Reproduces a Darknet finding: load_weights() does not check what it reads.
 *
 * The program writes a network's weights with save_weights(), cuts the file to its first half,
 * and loads it into a freshly parsed copy of the network with load_weights(). Darknet returns
 * normally and prints nothing: the floats past the end of the file keep the random values
 * parse_network_cfg() initialised them with, and the network runs with them. (Darknet's fread
 * results are never compared with the counts asked for.)
 *
 * Build and run: findings/darknet_load_weights_unchecked.sh
 */
#include <darknet.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s CFG WEIGHTS\n", argv[0]);
    return 2;
  }
  network* a = parse_network_cfg(argv[1]);
  layer* fc = &a->layers[1];
  for (int i = 0; i < fc->inputs * fc->outputs; ++i) fc->weights[i] = 0.25f;
  save_weights(a, argv[2]);
  FILE* f = fopen(argv[2], "rb");
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fclose(f);
  if (truncate(argv[2], size / 2) != 0) return 2;

  network* b = parse_network_cfg(argv[1]);
  load_weights(b, argv[2]);  /* returns normally */
  layer* fb = &b->layers[1];
  int kept = 0, total = fb->inputs * fb->outputs;
  for (int i = 0; i < total; ++i) kept += fb->weights[i] != 0.25f;
  printf("file cut from %ld to %ld bytes; load_weights returned; %d of the connected layer's %d "
         "weights are not the saved 0.25\n", size, size / 2, kept, total);
  printf(kept ? "FINDING REPRODUCED: a truncated .weights file loads without an error\n"
              : "not reproduced: every weight was loaded\n");
  free_network(a);
  free_network(b);
  return kept ? 1 : 0;
}
