// How the C ABI reports C++ failures: every entry point runs its body in
// `guarded`, which turns an exception into -1 and one line in the caller's
// buffer (a Rust error there, never an abort).
#pragma once

#include <cstdio>
#include <exception>
#include <string>

namespace carto {

// Keep the first line: libtorch appends C++ stack traces. NCCL's own reason
// (e.g. "Duplicate GPU detected : rank 1 and rank 0 both on CUDA device
// 1b000") comes on the line after "Last error:"; keep that too.
inline void set_err(char* err, size_t len, const std::string& msg) {
  if (err == nullptr || len == 0) return;
  std::string line = msg.substr(0, msg.find('\n'));
  const std::string marker = "Last error:\n";
  auto at = msg.find(marker);
  if (at != std::string::npos) {
    auto start = at + marker.size();
    std::string reason = msg.substr(start, msg.find('\n', start) - start);
    if (!reason.empty()) line += " (" + reason + ")";
  }
  std::snprintf(err, len, "%s", line.c_str());
}

// 0 when `f` returns, -1 with the message in `err` when it throws.
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

}  // namespace carto
