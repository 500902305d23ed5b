// A small C ABI over PyTorch's own c10d collectives, so the Rust worker uses
// the same engine as torch DDP: a TCPStore hosted by rank 0, a PrefixStore per
// job generation, and ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU, with
// CARTO_NCCL). Every entry point catches C++ exceptions and returns -1 with
// the message in `err`, so a failed collective is a Rust error, never an abort.
//
// NCCL needs more than that: by default ProcessGroupNCCL's wait() only makes
// the CUDA stream wait, and its watchdog thread handles a timed-out
// collective by tearing the whole process down (TORCH_NCCL_ASYNC_ERROR_HANDLING
// defaults to 3, SkipCleanUp). carto runs NCCL in blocking-wait mode instead:
// wait() blocks the calling thread, and on an error or after the collective
// timeout (the same --collective-timeout-secs as Gloo's) it aborts the
// communicator and throws here, where it becomes the worker's error; the
// coordinator then re-forms the job as it does after a Gloo failure.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CARTO_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "errors.h"

using carto::guarded;

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int world;
  bool nccl;
  // A collective failed or the group was aborted: free() aborts rather than
  // shuts down (which would wait on communicators that are gone).
  std::atomic<bool> failed{false};
};

// ProcessGroupNCCL reads these in its constructor, from the environment only.
// Blocking wait: wait() blocks until the collective completes, fails, or
// times out, then aborts the communicator and throws (and no watchdog thread
// is started, so nothing tears the process down behind our back).
// CleanUpOnly: should someone switch blocking wait off, the watchdog still
// only aborts communicators, never the process. A value the user set wins.
void configure_nccl_error_handling() {
  static std::once_flag once;
  std::call_once(once, [] {
    setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);
    setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", 0);
  });
}

// Runs one collective; when an NCCL one fails, aborts every communicator of
// the group (the failed work aborts only its own) so that nothing is left
// spinning on the GPU and later calls fail at once instead of hanging.
template <typename F>
void collective(Group* g, F&& f) {
  try {
    f();
  } catch (...) {
    g->failed = true;
    if (g->nccl) {
      try {
        g->backend->abort();
      } catch (...) {
      }
    }
    throw;
  }
}

}  // namespace

extern "C" {

// Sets NCCL's error handling (see configure_nccl_error_handling); called at
// worker start, before other threads read the environment, and again (a
// no-op then) before any NCCL group is made.
void carto_nccl_configure() { configure_nccl_error_handling(); }

// Whether this library was compiled with ProcessGroupNCCL.
int carto_nccl_compiled() {
#ifdef CARTO_NCCL
  return 1;
#else
  return 0;
#endif
}

// Builds the store and process group. Rank 0 hosts the TCPStore on
// master_port (taking over the bound socket listen_fd when it is >= 0);
// other ranks connect to master_host:master_port. `backend`: "gloo" or "nccl";
// `cuda_device`: the GPU of this rank (nccl only).
int carto_group_new(const char* backend, const char* master_host, int master_port, int listen_fd,
                    int rank, int world, const char* prefix, const char* bind_host, int timeout_ms,
                    int cuda_device, void** out, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(master_port);
    opts.isServer = rank == 0;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = timeout;
    if (rank == 0 && listen_fd >= 0) {
      opts.masterListenFd = listen_fd;
    }
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(master_host), opts);
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    c10::intrusive_ptr<c10d::Backend> pg;
    std::string name(backend);
    if (name == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(bind_host)));
      pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    } else if (name == "nccl") {
#ifdef CARTO_NCCL
      if (cuda_device < 0) throw std::runtime_error("the nccl backend needs a CUDA device");
      configure_nccl_error_handling();
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
      // Bind the group to this rank's GPU and create the communicator now,
      // as init_process_group(device_id=...) does: a barrier would otherwise
      // guess the GPU from the rank, and placement errors (two ranks on one
      // GPU) surface while joining instead of at the first step.
      at::Device device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device));
      nccl->setBoundDeviceId(device);
      try {
        nccl->eagerConnectSingleDevice(device);
      } catch (...) {
        try {
          nccl->abort();
        } catch (...) {
        }
        throw;
      }
      pg = nccl;
#else
      throw std::runtime_error(
          "this carto-worker was built without NCCL: install the CUDA headers (pip install -r "
          "scripts/requirements.txt into the torch environment) and rebuild it");
#endif
    } else {
      throw std::runtime_error("unknown backend " + name);
    }
    auto* g = new Group{tcp, pg, timeout, world, name == "nccl"};
    *out = g;
  });
}

int carto_group_allreduce_sum(void* group, void* tensor, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    collective(g, [&] { g->backend->allreduce(ts, o)->wait(g->timeout); });
  });
}

int carto_group_broadcast(void* group, void* tensor, int root, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    o.timeout = g->timeout;
    collective(g, [&] { g->backend->broadcast(ts, o)->wait(g->timeout); });
  });
}

// Gathers every rank's `input` (same shape everywhere) into `output`, whose
// first dimension is world × input's; rank r's block comes r-th.
int carto_group_allgather(void* group, void* input, void* output, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    at::Tensor& in = *static_cast<at::Tensor*>(input);
    at::Tensor& out = *static_cast<at::Tensor*>(output);
    std::vector<std::vector<at::Tensor>> outs(1);
    for (auto& chunk : out.chunk(g->world, 0)) outs[0].push_back(chunk);
    std::vector<at::Tensor> ins{in};
    c10d::AllgatherOptions o;
    o.timeout = g->timeout;
    collective(g, [&] { g->backend->allgather(outs, ins, o)->wait(g->timeout); });
  });
}

int carto_group_barrier(void* group, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    collective(g, [&] { g->backend->barrier(o)->wait(g->timeout); });
  });
}

// Aborts the group's pending and future collectives from any thread: the
// coordinator ended this generation (a peer was lost), and NCCL would only
// notice a lost peer on the same host when the collective times out. The
// blocked wait() then throws. A no-op for Gloo, which sees a lost peer's
// closed connection at once.
void carto_group_abort(void* group) {
  try {
    auto* g = static_cast<Group*>(group);
    g->failed = true;
    if (g->nccl) g->backend->abort();
  } catch (...) {
  }
}

void carto_group_free(void* group) {
  auto* g = static_cast<Group*>(group);
  // NCCL: shutdown() is destroy_process_group()'s normal exit (it flushes
  // what the network proxies still send to peers, so a rank that finishes
  // first does not cut off a slower one); after a failure, abort() instead:
  // flushing towards a lost peer could wait forever. Either way the
  // destructor then finds nothing left to tear down.
  if (g->nccl) {
    try {
      if (g->failed) {
        g->backend->abort();
      } else {
        g->backend->shutdown();
      }
    } catch (...) {
      try {
        g->backend->abort();
      } catch (...) {
      }
    }
  }
  try {
    delete g;
  } catch (...) {
  }
}

}  // extern "C"
