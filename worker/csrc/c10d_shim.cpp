// A small C ABI over PyTorch's own c10d collectives, so the Rust worker uses
// the same engine as torch DDP: a TCPStore hosted by rank 0, a PrefixStore per
// job generation, and ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU, with
// CARTO_NCCL). Every entry point catches C++ exceptions and returns -1 with
// the message in `err`, so a failed collective is a Rust error, never an abort.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef CARTO_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int world;
};

void set_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  // Keep the first line: libtorch appends C++ stack traces.
  std::string first = msg.substr(0, msg.find('\n'));
  std::snprintf(err, len, "%s", first.c_str());
}

template <typename F>
int guarded(char* err, size_t errlen, F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
  } catch (...) {
    set_err(err, errlen, "unknown C++ exception");
  }
  return -1;
}

}  // namespace

extern "C" {

// Builds the store and process group. Rank 0 hosts the TCPStore on
// master_port (taking over the bound socket listen_fd when it is >= 0);
// other ranks connect to master_host:master_port. `backend`: "gloo" or "nccl".
int carto_group_new(const char* backend, const char* master_host, int master_port, int listen_fd,
                    int rank, int world, const char* prefix, const char* bind_host, int timeout_ms,
                    void** out, char* err, size_t errlen) {
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
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
      throw std::runtime_error("this carto-worker was built without NCCL (cargo feature `nccl`)");
#endif
    } else {
      throw std::runtime_error("unknown backend " + name);
    }
    *out = new Group{tcp, pg, timeout, world};
  });
}

int carto_group_allreduce_sum(void* group, void* tensor, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    std::vector<at::Tensor> ts{*static_cast<at::Tensor*>(tensor)};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = g->timeout;
    g->backend->allreduce(ts, o)->wait(g->timeout);
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
    g->backend->broadcast(ts, o)->wait(g->timeout);
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
    g->backend->allgather(outs, ins, o)->wait(g->timeout);
  });
}

int carto_group_barrier(void* group, char* err, size_t errlen) {
  return guarded(err, errlen, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions o;
    o.timeout = g->timeout;
    g->backend->barrier(o)->wait(g->timeout);
  });
}

void carto_group_free(void* group) {
  try {
    delete static_cast<Group*>(group);
  } catch (...) {
  }
}

}  // extern "C"
