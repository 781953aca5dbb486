// Registers the network's native CPU kernels as torch operators: torch.ops.network_cpu.<name>.
#include <torch/library.h>

#include "network.h"

TORCH_LIBRARY(network_cpu, m) {
  m.def("ssd_scan(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor D, int groups, int chunk, Tensor(a!) y) -> ()",
        &network::ssd_scan);
  m.def("gated_rms_norm", &network::gated_rms_norm);
  m.def("gated_rms_norm_add_reversed(Tensor(a!) out, Tensor y, Tensor z, Tensor weight, int groups, float eps) -> ()",
        &network::gated_rms_norm_add_reversed);
  m.def("causal_conv1d_silu", &network::causal_conv1d_silu);
  m.def("pre_norm", &network::pre_norm);
  m.def("add_pre_norm", &network::add_pre_norm);
  m.def("residual_add", &network::residual_add);
  m.def("gaussian_activate(Tensor raw, Tensor origins, Tensor dirs, Tensor(a!) means, Tensor(b!) log_scales, "
        "Tensor(c!) quats, Tensor(d!) opacity, Tensor(e!) sh, Tensor(f!) distance, float max_dist, float scale_bias, "
        "float scale_max, float opacity_bias) -> ()",
        &network::gaussian_activate);
  m.def("attention", &network::attention);
}
