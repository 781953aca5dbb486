// Registers the Mamba2 CPU kernels as torch operators: torch.ops.mamba2_cpu.<name>.
#include <torch/library.h>

#include "mamba2.h"

TORCH_LIBRARY(mamba2_cpu, m) {
  m.def("ssd_scan(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor D, int groups, int chunk, Tensor(a!) y) -> ()",
        &mamba2::ssd_scan);
  m.def("gated_rms_norm", &mamba2::gated_rms_norm);
  m.def("gated_rms_norm_add_reversed(Tensor(a!) out, Tensor y, Tensor z, Tensor weight, int groups, float eps) -> ()",
        &mamba2::gated_rms_norm_add_reversed);
  m.def("causal_conv1d_silu", &mamba2::causal_conv1d_silu);
  m.def("pre_norm", &mamba2::pre_norm);
  m.def("add_pre_norm", &mamba2::add_pre_norm);
  m.def("residual_add", &mamba2::residual_add);
  m.def("gaussian_activate(Tensor raw, Tensor origins, Tensor dirs, Tensor(a!) means, Tensor(b!) log_scales, "
        "Tensor(c!) quats, Tensor(d!) opacity, Tensor(e!) sh, Tensor(f!) distance, float max_dist, float scale_bias, "
        "float scale_max, float opacity_bias) -> ()",
        &mamba2::gaussian_activate);
  m.def("attention", &mamba2::attention);
}
