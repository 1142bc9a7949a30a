// Where a pipeline's CPU goes: process-wide totals of the operator's host CPU time by k (its
// planning and, on the CPU backend, every pixel task), batches and samples; read from Python
// with dst_dali.host_cpu_stats.
#include <atomic>
#include <cstdint>

#include "collage_stitch.h"

namespace dst_dali {

namespace {

struct HostCpuTotals {
  std::atomic<uint64_t> ns{0}, batches{0}, samples{0};
};
HostCpuTotals host_cpu[kMaxComponents + 1];  // by k

}  // namespace

void RecordHostCpu(int k, uint64_t ns, int batches, int samples) {
  host_cpu[k].ns += ns;
  host_cpu[k].batches += batches;
  host_cpu[k].samples += samples;
}

}  // namespace dst_dali

// Totals since the library was loaded: three arrays of dst_dali_host_cpu_slots() entries,
// indexed by k.
extern "C" __attribute__((visibility("default"))) int dst_dali_host_cpu_slots() {
  return ::dst_dali::kMaxComponents + 1;
}

extern "C" __attribute__((visibility("default"))) void dst_dali_host_cpu(uint64_t *ns,
                                                                         uint64_t *batches,
                                                                         uint64_t *samples) {
  for (int k = 0; k < dst_dali_host_cpu_slots(); k++) {
    ns[k] = ::dst_dali::host_cpu[k].ns;
    batches[k] = ::dst_dali::host_cpu[k].batches;
    samples[k] = ::dst_dali::host_cpu[k].samples;
  }
}
