// Dynamic scheduling of tiles over torch's intra-op threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <numeric>
#include <vector>

namespace splat {

// Runs fn(tile, worker_state) for tiles 0..n-1 on all threads; tile t's cost is taken to grow with
// its list length offsets[t + 1] - offsets[t]. Tiles are handed out one at a time from a shared
// counter because their costs differ wildly (empty sky vs. dense foreground), longest list first
// so that no long tile is left to run alone at the end while the other threads idle.
// make_state() builds each worker's scratch buffers once. Called inside another parallel region,
// at::parallel_for runs inline and the one worker takes every tile.
template <typename MakeState, typename Fn>
void for_each_tile(int64_t n, const int64_t* offsets, const MakeState& make_state, const Fn& fn) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return offsets[a + 1] - offsets[a] > offsets[b + 1] - offsets[b];
  });
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(order[i], state);
  });
}

}  // namespace splat
