// Backward of the compositing pass, one 16x16 tile per task.
//
// Each pixel replays its tile's list back to front starting from the last Gaussian it blended,
// recovering T_i = T_{i+1} / (1 - alpha_i) from the stored final transmittance and accumulating
// the colour of everything behind. For a blended pair (pixel, Gaussian i), with out = rendered
// colour and A = rendered alpha:
//   d out / d c_i     = alpha_i T_i
//   d out / d alpha_i = c_i T_i - (sum_{j>i} c_j alpha_j T_j + T_final bg) / (1 - alpha_i)
//   d A / d alpha_i   = T_final / (1 - alpha_i)
// and alpha_i = o_i exp(-sigma) (no gradient where the 0.999 clamp is active).
//
// A Gaussian's gradient is the sum over its tiles. Each tile writes its per-Gaussian sums into
// the Gaussian's own slot of the intersection list (one writer per slot, no races, no atomics);
// a final pass adds the slots up per Gaussian. Results do not depend on the thread count.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>

#include <vector>

#include "composite_common.h"

namespace splat {
namespace {

// Per intersection slot: d/d(mean2d x, y), d/d(conic a, b, c), d/d(opacity), d/d(colour 0..D-1).
constexpr int kRecordHead = 6;

struct Image {
  const PackedSplat* splats;      // [N]
  const float* colors;            // [N, D]
  const float* background;        // [D] or null
  const int64_t* tile_offsets;    // [tiles + 1] of this image
  const int32_t* tile_ids;
  const float* final_T;           // [H, W]
  const int32_t* n_contrib;       // [H, W]
  const float *v_colors, *v_alphas;  // [H, W, D], [H, W]
  float* records;                 // [n_isects, kRecordHead + D] (global slots)
  float* bg_partials;             // [tiles, D] per-tile sums of T_final * d out
};

template <int CD>
struct BackwardTile {
  int64_t D, width, height, tiles_w;

  // Per-pixel state, planar ([channel][pixel]) so the row loops vectorise. Gradient sums are
  // kept per tile column ("lane") while a Gaussian is processed and reduced once at its end,
  // which keeps the inner loop free of cross-iteration float sums.
  struct State {
    std::vector<float> T, buf, v_out, v_alpha_out, T_final;  // [kPlane], [D][kPlane] x 2, [kPlane] x 2
    std::vector<int32_t> last;                                // [kPlane]
    std::vector<float> lanes;                                 // [kRecordHead + D][kLaneSlots]
  };

  State make_state() const {
    return {std::vector<float>(kPlane),     std::vector<float>(kPlane * D), std::vector<float>(kPlane * D),
            std::vector<float>(kPlane),     std::vector<float>(kPlane),     std::vector<int32_t>(kPlane),
            std::vector<float>((kRecordHead + D) * kLaneSlots)};
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
    float* __restrict buf = st.buf.data();
    float* __restrict v_out = st.v_out.data();
    float* __restrict v_alpha_out = st.v_alpha_out.data();
    float* __restrict T_final = st.T_final.data();
    int32_t* __restrict last = st.last.data();
    float* __restrict lanes = st.lanes.data();
    // Columns past the image edge still run through the (masked) vector lanes: keep them finite.
    for (auto* v : {&st.T, &st.buf, &st.v_out, &st.v_alpha_out, &st.T_final, &st.lanes})
      std::fill(v->begin(), v->end(), 0.f);
    std::fill(st.last.begin(), st.last.end(), 0);

    float* bg_sum = im.bg_partials + tile * D;
    for (int64_t d = 0; d < D; ++d) bg_sum[d] = 0.f;
    int32_t max_last = 0;
    int32_t row_last[kTile] = {};  // per row, the longest list prefix any pixel blended
    for (int y = r.y0; y < r.y1; ++y) {
      for (int x = r.x0; x < r.x1; ++x) {
        const int p = (y - r.y0) * kTile + (x - r.x0);
        const int64_t pix = y * width + x;
        T_final[p] = T[p] = im.final_T[pix];
        last[p] = im.n_contrib[pix];
        row_last[y - r.y0] = std::max(row_last[y - r.y0], last[p]);
        max_last = std::max(max_last, last[p]);
        // The background enters through T_final like an extra, fully opaque layer at the back.
        float bg_dot = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          const float v = im.v_colors[pix * D + d];
          v_out[d * kPlane + p] = v;
          bg_sum[d] += T_final[p] * v;
          if (im.background) bg_dot += im.background[d] * v;
        }
        v_alpha_out[p] = im.v_alphas[pix] - bg_dot;
      }
    }

    const int64_t start = im.tile_offsets[tile];
    const int64_t R = kRecordHead + D;
    float* l_mx = lanes;
    float* l_my = lanes + kLaneSlots;
    float* l_a = lanes + 2 * kLaneSlots;
    float* l_b = lanes + 3 * kLaneSlots;
    float* l_c = lanes + 4 * kLaneSlots;
    float* l_o = lanes + 5 * kLaneSlots;
    float* l_col = lanes + kRecordHead * kLaneSlots;  // [D][kLaneSlots]
    Box box;
    for (int64_t k = start + max_last - 1; k >= start; --k) {
      // Splats are visited in depth order, i.e. scattered in memory: fetch a few ahead.
      if (k - kPrefetch >= start) __builtin_prefetch(im.splats + im.tile_ids[k - kPrefetch]);
      const int32_t rank = static_cast<int32_t>(k - start);
      const int64_t g = im.tile_ids[k];
      const PackedSplat s = im.splats[g];  // a local copy: no aliasing with the pixel state
      if (!splat_box(s, r.x0, r.y0, r.x1, r.y1, box)) continue;
      const float* col_src = kInline ? s.color : im.colors + g * D;
      float col[CD > 0 ? CD : 1];  // a local copy the compiler knows is not aliased
      if constexpr (CD > 0)
        for (int d = 0; d < CD; ++d) col[d] = col_src[d];
      bool touched = false;
      for (int y = box.y0; y <= box.y1; ++y) {
        if (row_last[y - r.y0] <= rank) continue;
        const float dy = s.my - (y + 0.5f);
        Span span;
        if (!row_span(s, box, r.x0, dy, span)) continue;
        touched = true;
        const RowTerms terms = row_terms(s, dy);
        const int row = (y - r.y0) * kTile;
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
            const float vis = exp_neg<kFma>(-sigma);
            const float raw = s.opacity * vis;
            const float alpha = std::min(kAlphaMax, raw);
            const bool valid = (last[p] > rank) & (sigma >= 0.f) & (raw >= kAlphaMin) & (xf >= span.lo) & (xf <= span.hi);
            const float ra = 1.f / (1.f - alpha);
            const float T_i = T[p] * ra;  // transmittance in front of this Gaussian
            T[p] = select(valid, T_i, T[p]);
            const float fac = select(valid, alpha * T_i, 0.f);
            float v_alpha = T_final[p] * ra * v_alpha_out[p];
            if constexpr (CD > 0) {
              for (int d = 0; d < CD; ++d) {
                const float vo = v_out[d * kPlane + p];
                l_col[d * kLaneSlots + lx] += fac * vo;
                v_alpha += (col[d] * T_i - buf[d * kPlane + p] * ra) * vo;
                buf[d * kPlane + p] += col[d] * fac;
              }
            } else {
              for (int64_t d = 0; d < D; ++d) {
                const float vo = v_out[d * kPlane + p];
                l_col[d * kLaneSlots + lx] += fac * vo;
                v_alpha += (col_src[d] * T_i - buf[d * kPlane + p] * ra) * vo;
                buf[d * kPlane + p] += col_src[d] * fac;
              }
            }
            // No gradient through alpha where the 0.999 clamp is active.
            const float v_opacity = select(valid & (raw <= kAlphaMax), vis * v_alpha, 0.f);
            const float v_sigma = -s.opacity * v_opacity;
            l_mx[lx] += v_sigma * (s.a * dx + s.b * dy);
            l_my[lx] += v_sigma * (s.b * dx + s.c * dy);
            l_a[lx] += 0.5f * v_sigma * dx * dx;
            l_b[lx] += v_sigma * dx * dy;
            l_c[lx] += 0.5f * v_sigma * dy * dy;
            l_o[lx] += v_opacity;
          }
        }
      }
      if (!touched) continue;  // the slot stays zero
      float* rec = im.records + k * R;
      for (int64_t q = 0; q < R; ++q) {
        float sum = 0.f;
        for (int lane = 0; lane < kLaneSlots; ++lane) sum += lanes[q * kLaneSlots + lane];
        rec[q] = sum;
      }
      std::fill(st.lanes.begin(), st.lanes.end(), 0.f);
    }
  }
};

template <int CD>
void backward_image(const BackwardTile<CD>& bt, const Image& im, int64_t n_tiles) {
  for_each_tile(
      n_tiles, im.tile_offsets, [&] { return bt.make_state(); },
      [&](int64_t t, typename BackwardTile<CD>::State& st) { bt.run(im, t, st); });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>>
composite_backward(const at::Tensor& means2d, const at::Tensor& conics, const at::Tensor& colors,
                   const at::Tensor& opacities, const std::optional<at::Tensor>& backgrounds,
                   const at::Tensor& tile_offsets, const at::Tensor& tile_ids,
                   const at::Tensor& final_T, const at::Tensor& n_contrib,
                   const at::Tensor& v_render_colors, const at::Tensor& v_render_alphas,
                   int64_t width, int64_t height) {
  const int64_t I = means2d.size(0), N = means2d.size(1), D = colors.size(2);
  const int64_t tiles_w = (width + kTile - 1) / kTile, tiles_h = (height + kTile - 1) / kTile;
  const int64_t tiles = tiles_w * tiles_h;
  const int64_t n_isects = tile_ids.size(0), R = kRecordHead + D;

  // Slots of Gaussians a tile never reaches (behind every pixel's stop) stay zero.
  at::Tensor records = at::zeros({n_isects, R}, means2d.options());
  at::Tensor bg_partials = at::empty({I * tiles, D}, means2d.options());
  std::vector<PackedSplat> splats(static_cast<size_t>(N));
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
                   final_T.data_ptr<float>() + pix,
                   n_contrib.data_ptr<int32_t>() + pix,
                   v_render_colors.data_ptr<float>() + pix * D,
                   v_render_alphas.data_ptr<float>() + pix,
                   records.data_ptr<float>(),
                   bg_partials.data_ptr<float>() + img * tiles * D};
    switch (D) {
      case 1: backward_image(BackwardTile<1>{D, width, height, tiles_w}, im, tiles); break;
      case 3: backward_image(BackwardTile<3>{D, width, height, tiles_w}, im, tiles); break;
      case 4: backward_image(BackwardTile<4>{D, width, height, tiles_w}, im, tiles); break;
      default: backward_image(BackwardTile<0>{D, width, height, tiles_w}, im, tiles); break;
    }
  }

  at::Tensor v_means2d = at::zeros_like(means2d);
  at::Tensor v_conics = at::zeros_like(conics);
  at::Tensor v_colors = at::zeros_like(colors);
  at::Tensor v_opacities = at::zeros_like(opacities);
  float* gm = v_means2d.data_ptr<float>();
  float* gc = v_conics.data_ptr<float>();
  float* gcol = v_colors.data_ptr<float>();
  float* go = v_opacities.data_ptr<float>();
  const float* rec = records.data_ptr<float>();
  const int64_t* off = tile_offsets.data_ptr<int64_t>();
  const int32_t* ids = tile_ids.data_ptr<int32_t>();
  // Sum the slots per Gaussian. Threads own disjoint ranges of Gaussians and each scans the slots
  // of the images its range touches, in list order, so the sums are race-free and deterministic.
  const int64_t G = I * N;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), G / 4096 + 1));
  const int64_t per_chunk = (G + chunks - 1) / chunks;
  at::parallel_for(0, G > 0 ? chunks : 0, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t g0 = c * per_chunk, g1 = std::min(G, g0 + per_chunk);
      for (int64_t img = g0 / N; img < I && img * N < g1; ++img) {
        for (int64_t k = off[img * tiles]; k < off[(img + 1) * tiles]; ++k) {
          const int64_t g = img * N + ids[k];
          if (g < g0 || g >= g1) continue;
          const float* r = rec + k * R;
          gm[2 * g] += r[0];
          gm[2 * g + 1] += r[1];
          gc[3 * g] += r[2];
          gc[3 * g + 1] += r[3];
          gc[3 * g + 2] += r[4];
          go[g] += r[5];
          for (int64_t d = 0; d < D; ++d) gcol[g * D + d] += r[kRecordHead + d];
        }
      }
    }
  });

  std::optional<at::Tensor> v_backgrounds;
  if (backgrounds) v_backgrounds = bg_partials.view({I, tiles, D}).sum(1);
  return {v_means2d, v_conics, v_colors, v_opacities, v_backgrounds};
}

}  // namespace splat
