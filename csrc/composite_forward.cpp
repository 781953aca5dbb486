// Front-to-back alpha compositing of depth-sorted Gaussians, one 16x16 tile per task.
//
// Per pixel: C = sum_i c_i alpha_i T_i + T_final * background, T_{i+1} = T_i (1 - alpha_i).
// Pairs with sigma < 0 or alpha < 1/255 are skipped; a pixel stops at the first Gaussian that
// would bring T to 1e-4 or below (that Gaussian is not blended). Only the final transmittance and
// the number of list entries up to the last blended one are stored per pixel: the backward pass
// replays the list from there, back to front.
#include <ATen/ops/empty.h>

#include <atomic>
#include <vector>

#include "composite_common.h"

namespace splat {
namespace {

struct Image {
  const PackedSplat* splats;            // [N]
  const float* colors;                  // [N, D]
  const float* background;              // [D] or null
  const int64_t* tile_offsets;          // [tiles + 1] of this image
  const int32_t* tile_ids;
  float *out_colors, *out_alphas, *out_T;  // [H, W, D], [H, W], [H, W]
  int32_t* out_n_contrib;               // [H, W]
};

// CD > 0: channel count known at compile time (unrolled); CD == 0: run-time D.
template <int CD>
struct Compositor {
  int64_t D, width, height, tiles_w;

  // Per-pixel state of the tile being drawn, planar so the row loops vectorise.
  struct State {
    std::vector<float> T, acc;  // [kPlane], [D][kPlane]
    std::vector<float> done;    // [kPlane] 0 or 1; float so every mask in the row loop has one width
    std::vector<int32_t> last;  // [kPlane]
    std::vector<int32_t> blended;  // [kPlane] pairs blended per pixel (a count per lane, no reduction per row)
    int64_t blends = 0;
  };

  State make_state() const {
    return {std::vector<float>(kPlane), std::vector<float>(kPlane * D), std::vector<float>(kPlane),
            std::vector<int32_t>(kPlane), std::vector<int32_t>(kPlane), 0};
  }

  void run(const Image& im, int64_t tile, State& st) const {
    if (cpu_has_avx2())
      run_avx2(im, tile, st);
    else
      run_lanes<4>(im, tile, st);
  }

  SPLAT_TARGET_AVX2 void run_avx2(const Image& im, int64_t tile, State& st) const { run_lanes<8>(im, tile, st); }

  // Always inlined, so the AVX2 copy compiles the whole body for AVX2.
  template <int kLanes>
  __attribute__((always_inline)) inline void run_lanes(const Image& im, int64_t tile, State& st) const {
    constexpr bool kInline = CD > 0 && CD <= kInlineColors;
    constexpr bool kFma = kLanes == 8;  // the AVX2 + FMA copy
    const TileRect r = tile_rect(tile, tiles_w, width, height);
    float* __restrict T = st.T.data();
    float* __restrict acc = st.acc.data();
    float* __restrict done = st.done.data();
    int32_t* __restrict last = st.last.data();
    int32_t* __restrict blended = st.blended.data();
    std::fill(st.T.begin(), st.T.end(), 1.f);
    std::fill(st.blended.begin(), st.blended.end(), 0);
    std::fill(st.acc.begin(), st.acc.end(), 0.f);
    std::fill(st.last.begin(), st.last.end(), 0);
    std::fill(st.done.begin(), st.done.end(), 0.f);

    const int64_t start = im.tile_offsets[tile], end = im.tile_offsets[tile + 1];
    int alive = (r.x1 - r.x0) * (r.y1 - r.y0);
    int row_alive[kTile];  // pixels of each row still drawing: finished rows are skipped
    std::fill(row_alive, row_alive + kTile, r.x1 - r.x0);
    Box box;
    for (int64_t k = start; k < end && alive > 0; ++k) {
      // Splats are visited in depth order, i.e. scattered in memory: fetch a few ahead.
      if (k + kPrefetch < end) __builtin_prefetch(im.splats + im.tile_ids[k + kPrefetch]);
      const int64_t g = im.tile_ids[k];
      const PackedSplat s = im.splats[g];  // a local copy: no aliasing with the pixel state
      if (!splat_box(s, r.x0, r.y0, r.x1, r.y1, box)) continue;
      const float* col_src = kInline ? s.color : im.colors + g * D;
      float col[CD > 0 ? CD : 1];  // a local copy the compiler knows is not aliased
      if constexpr (CD > 0)
        for (int d = 0; d < CD; ++d) col[d] = col_src[d];
      const int32_t rank = static_cast<int32_t>(k - start + 1);
      for (int y = box.y0; y <= box.y1; ++y) {
        if (row_alive[y - r.y0] == 0) continue;
        const float dy = s.my - (y + 0.5f);
        Span span;
        if (!row_span(s, box, r.x0, dy, span)) continue;
        const RowTerms terms = row_terms(s, dy);
        const int row = (y - r.y0) * kTile;
        int32_t stops = 0;
        // Groups of kLanes columns from the span's first one, one vector each, so there is no
        // scalar remainder loop: columns outside the span (even past the tile, see kPlane) are
        // masked out. The body is branch-free: every column computes, masks decide what is kept.
        for (int base = span.lane0; base <= span.lane1; base += kLanes) {
          // Each column touches only its own pixel's state: no dependence between iterations,
          // which ivdep tells GCC so it need not guard the vector code with aliasing checks.
#pragma GCC ivdep
          for (int j = 0; j < kLanes; ++j) {
            const int lx = base + j, x = r.x0 + lx, p = row + lx;
            const float xf = static_cast<float>(x);
            const float dx = s.mx - (xf + 0.5f);
            const float sigma = splat_sigma<kFma>(terms, dx);
            const float raw = s.opacity * exp_neg<kFma>(-sigma);
            const float alpha = std::min(kAlphaMax, raw);
            // raw >= 1/255 is alpha >= 1/255 (the clamp is far above), in a form GCC vectorises.
            const bool pass = (sigma >= 0.f) & (raw >= kAlphaMin) & (done[p] == 0.f) & (xf >= span.lo) & (xf <= span.hi);
            const float next_T = T[p] * (1.f - alpha);
            const bool stop = pass & (next_T <= kTMin);
            const bool blend = pass & !stop;
            const float w = select(blend, alpha * T[p], 0.f);
            if constexpr (CD > 0) {
              for (int d = 0; d < CD; ++d) acc[d * kPlane + p] += w * col[d];
            } else {
              for (int64_t d = 0; d < D; ++d) acc[d * kPlane + p] += w * col_src[d];
            }
            T[p] = select(blend, next_T, T[p]);
            last[p] = select(blend, rank, last[p]);
            done[p] = select(stop, 1.f, done[p]);
            blended[p] += blend;
            stops += stop;
          }
        }
        alive -= stops;
        row_alive[y - r.y0] -= stops;
      }
    }

    // Planar tile state to the interleaved [H, W, D] image, a row at a time through local pointers
    // (stores through the Image's pointers would otherwise make GCC reload them every pixel).
    const int64_t Dn = CD > 0 ? CD : D;
    const float* __restrict bg = im.background;
    int64_t blends = 0;
    for (int y = r.y0; y < r.y1; ++y) {
      const int64_t pix0 = y * width + r.x0;
      float* __restrict out_c = im.out_colors + pix0 * Dn;
      float* __restrict out_a = im.out_alphas + pix0;
      float* __restrict out_T = im.out_T + pix0;
      int32_t* __restrict out_n = im.out_n_contrib + pix0;
      const int row = (y - r.y0) * kTile;
      for (int lx = 0; lx < r.x1 - r.x0; ++lx) {
        const int p = row + lx;
        for (int64_t d = 0; d < Dn; ++d)
          out_c[lx * Dn + d] = acc[d * kPlane + p] + (bg ? T[p] * bg[d] : 0.f);
        out_a[lx] = 1.f - T[p];
        out_T[lx] = T[p];
        out_n[lx] = last[p];
        blends += blended[p];
      }
    }
    st.blends += blends;
  }
};

template <int CD>
int64_t composite_image(const Compositor<CD>& comp, const Image& im, int64_t n_tiles) {
  std::atomic<int64_t> blends{0};
  for_each_tile(
      n_tiles, im.tile_offsets, [&] { return comp.make_state(); },
      [&](int64_t t, typename Compositor<CD>::State& st) {
        comp.run(im, t, st);
        blends.fetch_add(st.blends);
        st.blends = 0;
      });
  return blends.load();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
composite_forward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                  const at::Tensor& opacities, const std::optional<at::Tensor>& backgrounds,
                  const at::Tensor& radii, const at::Tensor& depths, int64_t width, int64_t height) {
  const int64_t I = means2d.size(0), N = means2d.size(1), D = colors.size(2);
  auto [tile_offsets, tile_ids] = bin_tiles(means2d, radii, depths, width, height);
  const int64_t tiles_w = (width + kTile - 1) / kTile, tiles_h = (height + kTile - 1) / kTile;
  const int64_t tiles = tiles_w * tiles_h;

  auto opt = means2d.options();
  at::Tensor render_colors = at::empty({I, height, width, D}, opt);
  at::Tensor render_alphas = at::empty({I, height, width, 1}, opt);
  at::Tensor final_T = at::empty({I, height, width}, opt);
  at::Tensor n_contrib = at::empty({I, height, width}, opt.dtype(at::kInt));

  std::vector<PackedSplat> splats(static_cast<size_t>(N));
  int64_t blends = 0;
  for (int64_t img = 0; img < I; ++img) {
    const float* img_colors = colors.data_ptr<float>() + img * N * D;
    pack_splats(means2d.data_ptr<float>() + img * N * 2, conics.data_ptr<float>() + img * N * 3,
                opacities.data_ptr<float>() + img * N, img_colors, N, D, splats.data());
    const int64_t pix = img * height * width;
    const Image im{splats.data(),
                   img_colors,
                   backgrounds ? backgrounds->data_ptr<float>() + img * D : nullptr,
                   tile_offsets.data_ptr<int64_t>() + img * tiles,
                   tile_ids.data_ptr<int32_t>(),
                   render_colors.data_ptr<float>() + pix * D,
                   render_alphas.data_ptr<float>() + pix,
                   final_T.data_ptr<float>() + pix,
                   n_contrib.data_ptr<int32_t>() + pix};
    switch (D) {
      case 1: blends += composite_image(Compositor<1>{D, width, height, tiles_w}, im, tiles); break;
      case 3: blends += composite_image(Compositor<3>{D, width, height, tiles_w}, im, tiles); break;
      case 4: blends += composite_image(Compositor<4>{D, width, height, tiles_w}, im, tiles); break;
      default: blends += composite_image(Compositor<0>{D, width, height, tiles_w}, im, tiles); break;
    }
  }
  // (blended pairs, tile intersections), reported by benchmarks.
  at::Tensor stats = at::empty({2}, opt.dtype(at::kLong));
  stats.data_ptr<int64_t>()[0] = blends;
  stats.data_ptr<int64_t>()[1] = tile_ids.size(0);
  return {render_colors, render_alphas, tile_offsets, tile_ids, final_T, n_contrib, stats};
}

}  // namespace splat
