// Tile binning: which Gaussians may touch each 16x16 tile, sorted front to back.
//
// A Gaussian covers the tiles overlapped by its box mean2d +- radii (the same rule as gsplat), so
// every pixel where its alpha can reach 1/255 is in one of its tiles. The result is a CSR layout
// over all tiles of all images: tile_offsets [I * TH * TW + 1] (int64) and tile_ids [n_isects]
// (int32, the Gaussian's index within its image), each tile's run sorted by (depth, index), the
// order gsplat's stable radix sort produces.
// Memory is O(tiles + intersections).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "for_each_tile.h"
#include "splat.h"

namespace splat {

std::tuple<at::Tensor, at::Tensor> bin_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                             const at::Tensor& depths, int64_t width, int64_t height) {
  const int64_t I = means2d.size(0), N = means2d.size(1);
  const int64_t TW = (width + kTile - 1) / kTile, TH = (height + kTile - 1) / kTile, TT = TW * TH;
  const float* m2 = means2d.data_ptr<float>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const float* depth = depths.data_ptr<float>();

  // Tile rectangle [x0, x1) x [y0, y1) of Gaussian g (flat index over images); empty when culled.
  auto tile_rect_of = [&](int64_t g, int32_t r[4]) {
    const float rx = static_cast<float>(rad[2 * g]), ry = static_cast<float>(rad[2 * g + 1]);
    if (rx <= 0.f || ry <= 0.f) {
      r[0] = r[1] = r[2] = r[3] = 0;
      return;
    }
    const float tx = m2[2 * g] / kTile, ty = m2[2 * g + 1] / kTile;
    const float trx = rx / kTile, try_ = ry / kTile;
    auto clampi = [](float v, int64_t hi) {
      return static_cast<int32_t>(std::min<float>(std::max(v, 0.f), static_cast<float>(hi)));
    };
    r[0] = clampi(std::floor(tx - trx), TW);
    r[1] = clampi(std::ceil(tx + trx), TW);
    r[2] = clampi(std::floor(ty - try_), TH);
    r[3] = clampi(std::ceil(ty + try_), TH);
  };

  // Parallel counting sort into tiles: each chunk of Gaussians counts its own tile hits, a prefix
  // sum gives every (tile, chunk) pair its own output range, then chunks scatter independently.
  const int64_t G = I * N;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), G / 4096 + 1));
  const int64_t per_chunk = (G + chunks - 1) / chunks;
  std::vector<int64_t> cursor(static_cast<size_t>(chunks * I * TT), 0);  // [chunk][tile]
  auto for_each_hit = [&](int64_t chunk, auto&& fn) {
    for (int64_t g = chunk * per_chunk; g < std::min(G, (chunk + 1) * per_chunk); ++g) {
      int32_t r[4];
      tile_rect_of(g, r);
      const int64_t first_tile = (g / N) * TT;
      for (int32_t y = r[2]; y < r[3]; ++y)
        for (int32_t x = r[0]; x < r[1]; ++x) fn(g, first_tile + y * TW + x);
    }
  };
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      int64_t* count = cursor.data() + c * I * TT;
      for_each_hit(c, [&](int64_t, int64_t t) { ++count[t]; });
    }
  });
  at::Tensor tile_offsets = at::empty({I * TT + 1}, means2d.options().dtype(at::kLong));
  int64_t* off = tile_offsets.data_ptr<int64_t>();
  int64_t running = 0;
  for (int64_t t = 0; t < I * TT; ++t) {
    off[t] = running;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n = cursor[c * I * TT + t];
      cursor[c * I * TT + t] = running;
      running += n;
    }
  }
  off[I * TT] = running;

  at::Tensor tile_ids = at::empty({running}, means2d.options().dtype(at::kInt));
  int32_t* ids = tile_ids.data_ptr<int32_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      int64_t* cur = cursor.data() + c * I * TT;
      for_each_hit(c, [&](int64_t g, int64_t t) { ids[cur[t]++] = static_cast<int32_t>(g % N); });
    }
  });

  // Sort each tile by (depth, index) through 64-bit keys: depth bits mapped to an unsigned
  // order-preserving form, index below, so plain integer sorting gives a deterministic order.
  for_each_tile(
      I * TT, [] { return std::vector<uint64_t>(); },
      [&](int64_t t, std::vector<uint64_t>& keys) {
        const float* d = depth + (t / TT) * N;
        keys.clear();
        for (int64_t k = off[t]; k < off[t + 1]; ++k) {
          const uint32_t bits = std::bit_cast<uint32_t>(d[ids[k]]);
          const uint32_t ordered = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
          keys.push_back((static_cast<uint64_t>(ordered) << 32) | static_cast<uint32_t>(ids[k]));
        }
        std::sort(keys.begin(), keys.end());
        for (size_t k = 0; k < keys.size(); ++k) ids[off[t] + k] = static_cast<int32_t>(keys[k] & 0xffffffffu);
      });
  return {tile_offsets, tile_ids};
}

}  // namespace splat
