// Shared constants and the entry points of the CPU Gaussian rasterizer.
//
// The pipeline, per (scene, camera) image:
//   project  -> 2D means, depths, conics (inverse 2D covariances) and pixel radii per Gaussian
//   sh       -> view-dependent RGB from SH coefficients (optional)
//   composite: bin Gaussians into 16x16 tiles, sort each tile by depth, blend front to back.
// Every stage has a hand-written backward; Python wraps each pair in a torch.autograd.Function.
// All float tensors are float32 and contiguous; the Python side guarantees it.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace splat {

// Kernel constants, identical to gsplat's classic 3DGS rasterizer.
constexpr int kTile = 16;                 // tile side in pixels
constexpr float kAlphaMin = 1.f / 255.f;  // a blend below this alpha is skipped
constexpr float kAlphaMax = 0.999f;       // alpha is clamped here so 1 - alpha stays invertible
constexpr float kTMin = 1e-4f;            // a pixel stops before its transmittance would reach this
constexpr float kExtendMax = 3.33f;       // bounding box half-size cap, in standard deviations

// project.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
    int64_t height, double eps2d, double near_plane, double far_plane);

// camera_grads: also return the gradients of viewmats [B, C, 4, 4] and Ks [B, C, 3, 3].
std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>>
project_backward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                 const at::Tensor& viewmats, const at::Tensor& Ks, const at::Tensor& radii,
                 const at::Tensor& conics, const at::Tensor& v_means2d, const at::Tensor& v_depths,
                 const at::Tensor& v_conics, int64_t width, int64_t height, bool camera_grads);

// sh_colors.cpp
at::Tensor sh_forward(int64_t degree, const at::Tensor& means, const at::Tensor& campos,
                      const at::Tensor& coeffs);

// campos_grad: also return the gradient of campos [B, C, 3].
std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> sh_backward(
    int64_t degree, const at::Tensor& means, const at::Tensor& campos, const at::Tensor& coeffs,
    const at::Tensor& v_colors, bool campos_grad);

// tiles.cpp
std::tuple<at::Tensor, at::Tensor> bin_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                             const at::Tensor& depths, int64_t width, int64_t height);

// composite_forward.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
composite_forward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                  const at::Tensor& opacities, const std::optional<at::Tensor>& backgrounds,
                  const at::Tensor& radii, const at::Tensor& depths, int64_t width, int64_t height);

// composite_backward.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>>
composite_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                   const at::Tensor& opacities, const std::optional<at::Tensor>& backgrounds,
                   const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                   const at::Tensor& final_T, const at::Tensor& n_contrib,
                   const at::Tensor& v_render_colors, const at::Tensor& v_render_alphas,
                   int64_t width, int64_t height);

}  // namespace splat
