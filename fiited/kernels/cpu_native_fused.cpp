// The fused FIITED step for the native CPU core: compiled as one unit after cpu_native.cpp and
// cpu_native_rows.cpp (cpu_native.py joins them), so it uses their templates. Each call walks
// the B*F*K occurrences once, reading addresses through the entry table (Translated) instead of
// a materialised [N, K] address tensor, and the updates credit the utility in the same pass.

namespace {

// Linear-probing lookup in a hashed index: out[i] = the slot whose key is rows[i], or -1 (an
// empty slot ends the probe, and so does max_probe). home = (row * mult) mod E with int64
// wrap-around and a non-negative remainder, as torch computes it.
template <typename K>
void hash_find_impl(const K* keys, int64_t E, const int64_t* rows, int64_t n, int64_t mult,
                    int64_t max_probe, int64_t* out, int threads) {
  parallel_for(n, threads, 8192, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = rows[i];
      int64_t h = int64_t(uint64_t(r) * uint64_t(mult)) % E;
      if (h < 0) h += E;
      int64_t found = -1;
      for (int64_t step = 0; step <= max_probe; ++step) {
        int64_t slot = h + step;
        if (slot >= E) slot -= E;
        const int64_t k = (int64_t)keys[slot];
        if (k == r) { found = slot; break; }
        if (k < 0) break;
      }
      out[i] = found;
    }
  });
}

// Entries [N] must lie in [-1, E): the index of the first that does not, or -1.
inline int64_t bad_entry(const int64_t* entries, int64_t N, int64_t E) {
  for (int64_t n = 0; n < N; ++n)
    if (entries[n] < -1 || entries[n] >= E) return n;
  return -1;
}

}  // namespace

extern "C" {

void fiited_hash_find(const void* keys, int keys64, int64_t E, const int64_t* rows, int64_t n,
                      int64_t mult, int64_t max_probe, int64_t* out, int threads) {
  if (keys64) hash_find_impl((const int64_t*)keys, E, rows, n, mult, max_probe, out, threads);
  else hash_find_impl((const int32_t*)keys, E, rows, n, mult, max_probe, out, threads);
}

// out[n, k] = pool[addr[entries[n], k]], zeros where the entry is -1 or the chunk absent.
// Returns -1, or -3 - n for the first bad entry n, or the first occurrence with a bad address.
int64_t fiited_fused_gather(const float* pool, int64_t P, int64_t C, const int32_t* addr,
                            int64_t E, int64_t K, const int64_t* entries, int64_t N, float* out,
                            int threads) {
  const int64_t bad = bad_entry(entries, N, E);
  if (bad >= 0) return -3 - bad;
  const Translated rows{addr, entries, K};
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return gather_impl<Translated, CC>(pool, P, C, rows, N * K, out, threads);
  });
}

// The fused update of gather's occurrences: per-slot state (row_state 0: SGD or row-wise Adagrad
// per chunk), or one accumulator per entry (row_state 1, state [S = E]). util [E, K] (or null)
// gets each occurrence's credit (freq 0: norm * uscale; 1: uscale), rows without an entry none.
int64_t fiited_fused_update(float* pool, int64_t P, int64_t C, float* state, int64_t S,
                            const int32_t* addr, int64_t K, const int64_t* entries, int64_t N,
                            const float* grad, float* norms, int adagrad, int row_state,
                            float lr, float eps, float* util, float uscale, int freq,
                            int threads) {
  const Translated rows{addr, entries, K};
  const Credit credit{util, uscale, freq};
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    if (row_state)
      return row_update_impl<Translated, CC, false>(pool, P, C, state, S, rows, N, K, entries,
                                                    grad, norms, lr, eps, threads, nullptr,
                                                    nullptr, credit);
    return update_impl<Translated, CC, false>(pool, P, C, state, rows, N * K, grad, norms,
                                              adagrad, lr, eps, threads, 1, nullptr, nullptr,
                                              credit);
  });
}
}
