// Pieces shared by the compositing forward and backward passes, so that both make exactly the
// same skip decisions for every (pixel, Gaussian) pair.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "for_each_tile.h"
#include "simd.h"
#include "splat.h"

namespace splat {

// The pixel loops work on groups of kLanes tile columns at once: 4 floats (SSE2, NEON) by default,
// 8 in a second copy compiled for AVX2 + FMA and picked at run time (simd.h). The FMA copy fuses the
// multiply-adds of the falloff and of exp (fewer instructions and one rounding instead of two);
// the default copy rounds each operation. Forward and backward always take the same copy, so
// they agree on every skip decision; -ffp-contract=off keeps the compiler from fusing anything
// on its own, which would break that agreement.

// Per-pixel state of a tile lives in planes of kPlane floats: the kPix pixels plus room for one
// vector group that starts at a span's first column and runs past the tile's last pixel. Columns
// past the span are masked, so those extra or wrapped-around slots are only ever rewritten with
// their own values.
constexpr int kMaxLanes = 8;
constexpr int kPix = kTile * kTile;
constexpr int kPlane = kPix + kMaxLanes;
constexpr int kLaneSlots = kTile + kMaxLanes;  // per-column accumulators, same reason

// Everything the compositor needs about one Gaussian, precomputed once per image and packed into
// one cache line. Tile lists visit Gaussians in depth order, i.e. at random in memory; one line
// per visit instead of four scattered arrays is what keeps the pixel loops fed.
constexpr int kInlineColors = 6;
// Pixels (of their centres) added around the exact extent of sigma <= sigma_cut before the
// per-pixel test. The cut itself already carries a 1e-4 relative margin; this covers the rounding
// of the extents' own square roots. Each extra column or row is work on pixels that never pass.
constexpr float kExtentSlack = 0.05f;
constexpr int kPrefetch = 4;  // how many list entries ahead to prefetch splats
struct alignas(64) PackedSplat {
  float mx, my;            // 2D mean in pixels
  float a, b, c;           // conic: sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
  float opacity;
  float sigma_cut;         // beyond this sigma alpha < 1/255 for sure (with slack); < 0: invisible
  float inv_a;             // 1 / a
  float half_w, half_h;    // half extent of the region sigma <= sigma_cut, plus kExtentSlack
  float color[kInlineColors];  // the first channels, when D is small enough
};

// Packs Gaussians [0, N) of one image (D channels; colours inlined when D <= kInlineColors).
inline void pack_splats(const float* means2d, const float* conics, const float* opacities,
                        const float* colors, int64_t N, int64_t D, PackedSplat* out) {
  at::parallel_for(0, N, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      PackedSplat& s = out[g];
      s.mx = means2d[2 * g];
      s.my = means2d[2 * g + 1];
      s.a = conics[3 * g];
      s.b = conics[3 * g + 1];
      s.c = conics[3 * g + 2];
      s.opacity = opacities[g];
      for (int64_t d = 0; d < std::min<int64_t>(D, kInlineColors); ++d) s.color[d] = colors[g * D + d];
      // Culled Gaussians have a zero conic and stop here.
      const float det = s.a * s.c - s.b * s.b;
      // alpha >= 1/255 needs sigma <= ln(255 o); the slack keeps the exact per-pixel test in charge.
      const float cut = det > 0.f ? std::log(s.opacity / kAlphaMin) : -1.f;
      if (!(cut >= 0.f) || !(det > 0.f) || !(s.a > 0.f)) {
        s.sigma_cut = -1.f;
        continue;
      }
      s.sigma_cut = cut * 1.0001f + 1e-6f;
      s.inv_a = 1.f / s.a;
      // The ellipse sigma <= cut spans sqrt(2 cut cov_xx) around the mean (cov = conic^-1).
      s.half_w = std::sqrt(2.f * s.sigma_cut * s.c / det) + kExtentSlack;
      s.half_h = std::sqrt(2.f * s.sigma_cut * s.a / det) + kExtentSlack;
    }
  });
}

// Pixel rows y0..y1 and columns x0..x1 (inclusive) of a tile a splat can reach.
struct Box {
  int x0, x1, y0, y1;
};

inline bool splat_box(const PackedSplat& s, int tile_x0, int tile_y0, int tile_x1, int tile_y1, Box& box) {
  if (s.sigma_cut < 0.f) return false;
  // Pixel j has its centre at j + 0.5. The tile bound comes first so that a NaN picks it.
  const float fx0 = std::max(static_cast<float>(tile_x0), std::ceil(s.mx - s.half_w - 0.5f));
  const float fx1 = std::min(static_cast<float>(tile_x1 - 1), std::floor(s.mx + s.half_w - 0.5f));
  const float fy0 = std::max(static_cast<float>(tile_y0), std::ceil(s.my - s.half_h - 0.5f));
  const float fy1 = std::min(static_cast<float>(tile_y1 - 1), std::floor(s.my + s.half_h - 0.5f));
  if (!(fx0 <= fx1) || !(fy0 <= fy1)) return false;
  box = {static_cast<int>(fx0), static_cast<int>(fx1), static_cast<int>(fy0), static_cast<int>(fy1)};
  return true;
}

// Gaussian falloff sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 at offset (dx, dy) = mean - pixel
// centre, evaluated as (0.5 a dx + b dy) dx + 0.5 c dy^2 with the terms of the row precomputed.
struct RowTerms {
  float half_a, bdy, half_cdy2;
};

inline RowTerms row_terms(const PackedSplat& s, float dy) { return {0.5f * s.a, s.b * dy, 0.5f * s.c * dy * dy}; }

template <bool kFma>
inline float splat_sigma(const RowTerms& t, float dx) {
  return mul_add<kFma>(mul_add<kFma>(t.half_a, dx, t.bdy), dx, t.half_cdy2);
}

// Pixels x of row y (offset dy = my - y - 0.5) where sigma <= sigma_cut can hold are those with
// lo <= x <= hi (kExtentSlack of slack, clipped to the box); the exact alpha test still decides each
// pixel. lane0..lane1 are the same columns counted from the tile's left edge.
struct Span {
  float lo, hi;
  int lane0, lane1;
};

inline bool row_span(const PackedSplat& s, const Box& box, int tile_x0, float dy, Span& span) {
  // Boxes narrower than the tile take their own columns on every row: on scenes of small splats
  // the per-row square root costs more than the lanes it would trim (bench/bench_render.py). Rows
  // of boxes as wide as the tile are trimmed, which pays for long, thin Gaussians crossing it.
  if (box.x1 - box.x0 + 1 < kTile) {
    span = {static_cast<float>(box.x0), static_cast<float>(box.x1), box.x0 - tile_x0, box.x1 - tile_x0};
    return true;
  }
  const float bdy = s.b * dy;
  const float disc = bdy * bdy - s.a * (s.c * dy * dy - 2.f * s.sigma_cut);
  if (!(disc >= 0.f)) return false;
  const float root = std::sqrt(disc);
  // sigma(dx) <= cut for dx in [(-bdy - root) / a, (-bdy + root) / a]; pixel x has dx = mx - x - 0.5.
  span.lo = std::max(static_cast<float>(box.x0), s.mx - 0.5f - (root - bdy) * s.inv_a - kExtentSlack);
  span.hi = std::min(static_cast<float>(box.x1), s.mx - 0.5f + (root + bdy) * s.inv_a + kExtentSlack);
  if (!(span.lo <= span.hi)) return false;
  // Both offsets are >= 0 here, where truncation is floor: no library rounding call per row.
  span.lane0 = static_cast<int>(span.lo - tile_x0);
  span.lane1 = static_cast<int>(span.hi - tile_x0);
  return true;
}

// Image-space extent of tile t of an image: [x0, x1) x [y0, y1).
struct TileRect {
  int x0, y0, x1, y1;
};

inline TileRect tile_rect(int64_t tile_in_image, int64_t tiles_w, int64_t width, int64_t height) {
  const int ty = static_cast<int>(tile_in_image / tiles_w), tx = static_cast<int>(tile_in_image % tiles_w);
  return {tx * kTile, ty * kTile, static_cast<int>(std::min<int64_t>((tx + 1) * kTile, width)),
          static_cast<int>(std::min<int64_t>((ty + 1) * kTile, height))};
}

}  // namespace splat
