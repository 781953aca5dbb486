// Deterministic per-camera sums over Gaussians, for the camera gradients.
//
// A camera's gradient adds one term per Gaussian, so threads cannot each own a camera's row the
// way they own a Gaussian's. Instead the Gaussians of each scene are cut into fixed chunks of
// kChunk, one task per chunk; a task adds its terms in order into its own partial sums, and the
// partials are added in chunk order at the end. The chunking does not depend on the thread count,
// so neither does any rounding.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace splat {

constexpr int64_t kChunk = 256;  // Gaussians per task

// Runs fn(task, b, n_begin, n_end) for every chunk [n_begin, n_end) of scene b's N Gaussians, in
// parallel; tasks are numbered scene by scene, chunks in order.
template <typename Fn>
void for_each_chunk(int64_t B, int64_t N, const Fn& fn) {
  const int64_t per_scene = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, B * per_scene, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / per_scene, k = task % per_scene;
      fn(task, b, k * kChunk, std::min(N, (k + 1) * kChunk));
    }
  });
}

// Partial sums [tasks, C, width], in float like every other gradient (and like the reference's).
class CameraSums {
 public:
  CameraSums(int64_t B, int64_t C, int64_t N, int width)
      : B_(B), C_(C), per_scene_((N + kChunk - 1) / kChunk), width_(width),
        partial_(B * per_scene_ * C * width, 0.f) {}

  // Where task adds the terms of camera c.
  float* row(int64_t task, int64_t c) { return partial_.data() + (task * C_ + c) * width_; }

  // Calls out(b * C + c, total) with camera c of scene b's width sums, added chunk by chunk.
  template <typename Out>
  void reduce(const Out& out) const {
    std::vector<float> total(width_);
    for (int64_t b = 0; b < B_; ++b)
      for (int64_t c = 0; c < C_; ++c) {
        std::fill(total.begin(), total.end(), 0.f);
        for (int64_t k = 0; k < per_scene_; ++k) {
          const float* p = partial_.data() + ((b * per_scene_ + k) * C_ + c) * width_;
          for (int j = 0; j < width_; ++j) total[j] += p[j];
        }
        out(b * C_ + c, total.data());
      }
  }

 private:
  int64_t B_, C_, per_scene_;
  int width_;
  std::vector<float> partial_;
};

}  // namespace splat
