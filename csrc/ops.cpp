// Registers the rasterizer stages as torch operators: torch.ops.splat_cpu.<name>.
#include <torch/library.h>

#include "splat.h"

TORCH_LIBRARY(splat_cpu, m) {
  m.def("project_forward", &splat::project_forward);
  m.def("project_backward", &splat::project_backward);
  m.def("sh_forward", &splat::sh_forward);
  m.def("sh_backward", &splat::sh_backward);
  m.def("composite_forward", &splat::composite_forward);
  m.def("composite_backward", &splat::composite_backward);
}
