// Tile binning: which Gaussians may touch each 16x16 tile, sorted front to back.
//
// A Gaussian covers the tiles overlapped by its box mean2d +- radii (the same rule as gsplat), so
// every pixel where its alpha can reach 1/255 is in one of its tiles. The result is a CSR layout
// over all tiles of all images: tile_offsets [I * TH * TW + 1] (int64) and tile_ids [n_isects]
// (int32, the Gaussian's index within its image), each tile's run sorted by (depth, index), the
// order gsplat's stable radix sort produces.
//
// Each image's visible Gaussians are put in depth order once (a stable radix sort, so equal
// depths keep index order); a counting sort then deals them out to the tiles in that order, so
// every tile's run comes out sorted with no per-tile sort. Memory is O(Gaussians + tiles +
// intersections).
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <utility>
#include <vector>

#include "splat.h"

namespace splat {
namespace {

// Float depth bits mapped so that unsigned integer order is float order.
inline uint32_t ordered_bits(float depth) {
  const uint32_t bits = std::bit_cast<uint32_t>(depth);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Stable LSD radix sort of ids by keys, 8 bits per pass; passes where every key has the same
// digit are skipped (depths of one scene share their top bits). keys/ids are sorted in place,
// using tmp_keys/tmp_ids of the same length as scratch.
void radix_sort(std::vector<uint32_t>& keys, std::vector<int32_t>& ids, std::vector<uint32_t>& tmp_keys,
                std::vector<int32_t>& tmp_ids) {
  const size_t n = keys.size();
  std::array<std::array<size_t, 256>, 4> hist{};
  for (const uint32_t k : keys)
    for (int pass = 0; pass < 4; ++pass) ++hist[pass][(k >> (8 * pass)) & 0xffu];
  tmp_keys.resize(n);
  tmp_ids.resize(n);
  for (int pass = 0; pass < 4; ++pass) {
    auto& h = hist[pass];
    if (n == 0 || h[(keys[0] >> (8 * pass)) & 0xffu] == n) continue;
    size_t running = 0;
    for (auto& count : h) running += std::exchange(count, running);  // counts -> start offsets
    for (size_t i = 0; i < n; ++i) {
      const size_t dst = h[(keys[i] >> (8 * pass)) & 0xffu]++;
      tmp_keys[dst] = keys[i];
      tmp_ids[dst] = ids[i];
    }
    keys.swap(tmp_keys);
    ids.swap(tmp_ids);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> bin_tiles(const at::Tensor& means2d, const at::Tensor& radii,
                                             const at::Tensor& depths, int64_t width, int64_t height) {
  const int64_t I = means2d.size(0), N = means2d.size(1);
  const int64_t TW = (width + kTile - 1) / kTile, TH = (height + kTile - 1) / kTile, TT = TW * TH;
  const float* m2 = means2d.data_ptr<float>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const float* depth = depths.data_ptr<float>();
  TORCH_CHECK(TW <= 0xffff && TH <= 0xffff, "images are limited to 65535 tiles (", 0xffff * kTile,
              " pixels) across and down, got ", width, "x", height);

  // Tile rectangle [x0, x1) x [y0, y1) of a visible Gaussian g (flat index over images), packed
  // as four 16-bit fields x0 | x1 << 16 | y0 << 32 | y1 << 48.
  auto tile_rect_of = [&](int64_t g) -> uint64_t {
    const float rx = static_cast<float>(rad[2 * g]), ry = static_cast<float>(rad[2 * g + 1]);
    const float tx = m2[2 * g] / kTile, ty = m2[2 * g + 1] / kTile;
    const float trx = rx / kTile, try_ = ry / kTile;
    auto clampi = [](float v, int64_t hi) {
      return static_cast<uint64_t>(std::min<float>(std::max(v, 0.f), static_cast<float>(hi)));
    };
    return clampi(std::floor(tx - trx), TW) | clampi(std::ceil(tx + trx), TW) << 16 |
           clampi(std::floor(ty - try_), TH) << 32 | clampi(std::ceil(ty + try_), TH) << 48;
  };
  auto visible = [&](int64_t g) { return rad[2 * g] > 0 && rad[2 * g + 1] > 0; };

  // Every image's visible Gaussians in depth order, image after image: positions
  // image_start[i] .. image_start[i + 1] hold image i's, as order_ids (index within the image)
  // and order_rects. Sorting carries only a rank into per-image arrays filled in index order, so
  // the scattered reads of means and radii happen once, in memory order.
  std::vector<int64_t> image_start(static_cast<size_t>(I + 1), 0);
  for (int64_t img = 0; img < I; ++img) {
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) count += visible(img * N + n);
    image_start[img + 1] = image_start[img] + count;
  }
  const int64_t P = image_start[I];
  std::vector<int32_t> order_ids(static_cast<size_t>(P));
  std::vector<uint64_t> order_rects(static_cast<size_t>(P));
  at::parallel_for(0, I, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> keys, tmp_keys;
    std::vector<int32_t> ranks, tmp_ranks, ids;
    std::vector<uint64_t> rects;
    for (int64_t img = begin; img < end; ++img) {
      keys.clear();
      ranks.clear();
      ids.clear();
      rects.clear();
      for (int64_t n = 0; n < N; ++n) {
        const int64_t g = img * N + n;
        if (!visible(g)) continue;
        ranks.push_back(static_cast<int32_t>(ids.size()));
        ids.push_back(static_cast<int32_t>(n));
        rects.push_back(tile_rect_of(g));
        keys.push_back(ordered_bits(depth[g]));
      }
      radix_sort(keys, ranks, tmp_keys, tmp_ranks);
      const int64_t first = image_start[img];
      for (size_t k = 0; k < ranks.size(); ++k) {
        order_ids[first + k] = ids[ranks[k]];
        order_rects[first + k] = rects[ranks[k]];
      }
    }
  });

  // Parallel counting sort into tiles over the depth order: each chunk of positions counts its
  // own tile hits, a prefix sum gives every (tile, chunk) pair its own output range, then chunks
  // scatter independently. Chunks are consecutive stretches of the order, so every tile's run
  // stays in depth order.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), P / 4096 + 1));
  const int64_t per_chunk = (P + chunks - 1) / chunks;
  std::vector<int64_t> cursor(static_cast<size_t>(chunks * I * TT), 0);  // [chunk][tile]
  auto for_each_hit = [&](int64_t chunk, auto&& fn) {
    const int64_t begin = chunk * per_chunk, end = std::min(P, begin + per_chunk);
    int64_t img = std::upper_bound(image_start.begin(), image_start.end(), begin) - image_start.begin() - 1;
    for (int64_t pos = begin; pos < end; ++pos) {
      while (pos >= image_start[img + 1]) ++img;
      const uint64_t r = order_rects[pos];
      const int64_t x0 = r & 0xffffu, x1 = (r >> 16) & 0xffffu, y0 = (r >> 32) & 0xffffu, y1 = r >> 48;
      for (int64_t y = y0; y < y1; ++y)
        for (int64_t x = x0; x < x1; ++x) fn(pos, img * TT + y * TW + x);
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
      for_each_hit(c, [&](int64_t pos, int64_t t) { ids[cur[t]++] = order_ids[pos]; });
    }
  });
  return {tile_offsets, tile_ids};
}

}  // namespace splat
