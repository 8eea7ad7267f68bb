// npu_shim.cpp: the C ABI of npu_shim.h over the XRT C++ API.
//
// Built by xrt/build.rs only when XRT headers are found. NPU_SHIM_HAVE_HWCTX is defined
// when the headers offer xrt::hw_context and xrt::device::register_xclbin (XRT >= 2.14);
// without them (Debian's XRT 2.13) those entry points compile to a clear error, because the
// amdxdna driver cannot load an xclbin any other way. NPU_SHIM_HAVE_RUNLIST is defined when
// they also offer xrt::runlist (XRT >= 2.18); without it the runlist entry points compile to
// a clear error and the caller chains start/wait instead.

#include "npu_shim.h"

#include <xrt/xrt_bo.h>
#include <xrt/xrt_device.h>
#include <xrt/xrt_kernel.h>

#if defined(NPU_SHIM_HAVE_HWCTX)
#if defined(NPU_SHIM_HWCTX_IN_EXPERIMENTAL)
#include <experimental/xrt_hw_context.h>
#else
#include <xrt/xrt_hw_context.h>
#endif
#endif

#if defined(NPU_SHIM_HAVE_RUNLIST)
#if !defined(NPU_SHIM_HAVE_HWCTX)
#error "NPU_SHIM_HAVE_RUNLIST needs NPU_SHIM_HAVE_HWCTX (a runlist lives on a hw_context)"
#endif
#if defined(NPU_SHIM_RUNLIST_IN_TOP_EXPERIMENTAL)
#include <experimental/xrt_kernel.h>
#else
#include <xrt/experimental/xrt_kernel.h>
#endif
#endif

#include <chrono>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <vector>

#ifndef NPU_SHIM_XRT_VERSION
#define NPU_SHIM_XRT_VERSION "unknown"
#endif

struct npu_device {
  xrt::device dev;
};
struct npu_xclbin {
  xrt::xclbin xclbin;
};
#if defined(NPU_SHIM_HAVE_HWCTX)
struct npu_hwctx {
  xrt::hw_context ctx;
};
#else
struct npu_hwctx {
  int unused;
};
#endif
struct npu_kernel {
  xrt::kernel kernel;
};
struct npu_bo {
  xrt::bo bo;
};
struct npu_run {
  xrt::run run;
};
#if defined(NPU_SHIM_HAVE_RUNLIST)
struct npu_runlist {
  xrt::runlist list;
  // The runs in order, to name the position of a failing one.
  std::vector<xrt::run> runs;
};
#else
struct npu_runlist {
  int unused;
};
#endif

namespace {

const char* const kNoHwctx =
    "XRT " NPU_SHIM_XRT_VERSION
    " has no hw_context; the NPU needs XRT >= 2.14 (>= 2.17 in practice)";

const char* const kNoRunlist =
    "XRT " NPU_SHIM_XRT_VERSION " has no runlist (needs >= 2.18)";

int fail(npu_shim_error* err, int code, const char* message) {
  if (err != nullptr) {
    err->code = code;
    std::strncpy(err->message, message, NPU_SHIM_MESSAGE_CAPACITY - 1);
    err->message[NPU_SHIM_MESSAGE_CAPACITY - 1] = '\0';
  }
  return code;
}

int ok(npu_shim_error* err) {
  if (err != nullptr) {
    err->code = NPU_SHIM_OK;
    err->message[0] = '\0';
  }
  return NPU_SHIM_OK;
}

// Runs `body` and turns every exception into a code + message: nothing may unwind into C
// or Rust frames.
template <typename F>
int guarded(npu_shim_error* err, F&& body) {
  try {
    body();
    return ok(err);
  } catch (const std::bad_alloc&) {
    return fail(err, NPU_SHIM_ERR_XRT, "out of host memory");
  } catch (const std::exception& e) {
    return fail(err, NPU_SHIM_ERR_XRT, e.what());
  } catch (...) {
    return fail(err, NPU_SHIM_ERR_UNKNOWN, "unknown C++ exception from XRT");
  }
}

int copy_out(const std::string& s, char* buf, size_t cap, size_t* len) {
  if (len != nullptr) {
    *len = s.size();
  }
  if (buf != nullptr && cap > 0) {
    std::memcpy(buf, s.data(), s.size() < cap ? s.size() : cap);
  }
  return NPU_SHIM_OK;
}

const xrt::xclbin::kernel* find_kernel(const std::vector<xrt::xclbin::kernel>& ks,
                                       const std::string& name) {
  for (const auto& k : ks) {
    if (k.get_name() == name) {
      return &k;
    }
  }
  return nullptr;
}

}  // namespace

extern "C" {

int npu_shim_abi_version(void) { return NPU_SHIM_ABI_VERSION; }

const char* npu_shim_xrt_version(void) { return NPU_SHIM_XRT_VERSION; }

int npu_shim_has_hwctx(void) {
#if defined(NPU_SHIM_HAVE_HWCTX)
  return 1;
#else
  return 0;
#endif
}

int npu_shim_has_runlist(void) {
#if defined(NPU_SHIM_HAVE_RUNLIST)
  return 1;
#else
  return 0;
#endif
}

int npu_device_open(unsigned index, npu_device** out, npu_shim_error* err) {
  if (out == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_device_open: null output");
  *out = nullptr;
  return guarded(err, [&] { *out = new npu_device{xrt::device(index)}; });
}

int npu_device_name(npu_device* dev, char* buf, size_t cap, size_t* len, npu_shim_error* err) {
  if (dev == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_device_name: null device");
  return guarded(err, [&] {
    copy_out(dev->dev.get_info<xrt::info::device::name>(), buf, cap, len);
  });
}

void npu_device_close(npu_device* dev) {
  try {
    delete dev;
  } catch (...) {
  }
}

int npu_xclbin_load(const char* path, npu_xclbin** out, npu_shim_error* err) {
  if (out == nullptr || path == nullptr || path[0] == '\0')
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_xclbin_load: null or empty path");
  *out = nullptr;
  return guarded(err, [&] { *out = new npu_xclbin{xrt::xclbin(std::string(path))}; });
}

int npu_xclbin_kernel_names(npu_xclbin* xclbin, char* buf, size_t cap, size_t* len,
                            npu_shim_error* err) {
  if (xclbin == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_xclbin_kernel_names: null xclbin");
  return guarded(err, [&] {
    std::string names;
    for (const auto& k : xclbin->xclbin.get_kernels()) {
      if (!names.empty()) names.push_back('\n');
      names += k.get_name();
    }
    copy_out(names, buf, cap, len);
  });
}

int npu_xclbin_num_args(npu_xclbin* xclbin, const char* kernel, unsigned* out,
                        npu_shim_error* err) {
  if (xclbin == nullptr || kernel == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_xclbin_num_args: null argument");
  int missing = 0;
  int rc = guarded(err, [&] {
    const auto kernels = xclbin->xclbin.get_kernels();
    const auto* k = find_kernel(kernels, kernel);
    if (k == nullptr) {
      missing = 1;
      return;
    }
    *out = static_cast<unsigned>(k->get_num_args());
  });
  if (rc == NPU_SHIM_OK && missing) {
    std::string msg = std::string("kernel '") + kernel + "' is not in the xclbin";
    return fail(err, NPU_SHIM_ERR_ARGUMENT, msg.c_str());
  }
  return rc;
}

void npu_xclbin_free(npu_xclbin* xclbin) {
  try {
    delete xclbin;
  } catch (...) {
  }
}

int npu_register_xclbin(npu_device* dev, npu_xclbin* xclbin, npu_shim_error* err) {
#if defined(NPU_SHIM_HAVE_HWCTX)
  if (dev == nullptr || xclbin == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_register_xclbin: null argument");
  // Never load_xclbin: the amdxdna shim does not implement it.
  return guarded(err, [&] { dev->dev.register_xclbin(xclbin->xclbin); });
#else
  (void)dev;
  (void)xclbin;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoHwctx);
#endif
}

int npu_hwctx_create(npu_device* dev, npu_xclbin* xclbin, npu_hwctx** out, npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
#if defined(NPU_SHIM_HAVE_HWCTX)
  if (dev == nullptr || xclbin == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_hwctx_create: null argument");
  return guarded(err, [&] {
    *out = new npu_hwctx{xrt::hw_context(dev->dev, xclbin->xclbin.get_uuid())};
  });
#else
  (void)dev;
  (void)xclbin;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoHwctx);
#endif
}

void npu_hwctx_destroy(npu_hwctx* ctx) {
  try {
    delete ctx;
  } catch (...) {
  }
}

int npu_kernel_open(npu_hwctx* ctx, const char* name, npu_kernel** out, npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
#if defined(NPU_SHIM_HAVE_HWCTX)
  if (ctx == nullptr || name == nullptr || name[0] == '\0' || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_kernel_open: null argument or empty name");
  return guarded(err, [&] { *out = new npu_kernel{xrt::kernel(ctx->ctx, std::string(name))}; });
#else
  (void)ctx;
  (void)name;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoHwctx);
#endif
}

int npu_kernel_group_id(npu_kernel* kernel, int argno, int* out, npu_shim_error* err) {
  if (kernel == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_kernel_group_id: null argument");
  return guarded(err, [&] { *out = static_cast<int>(kernel->kernel.group_id(argno)); });
}

void npu_kernel_close(npu_kernel* kernel) {
  try {
    delete kernel;
  } catch (...) {
  }
}

int npu_bo_alloc(npu_device* dev, size_t bytes, unsigned flags, unsigned group, npu_bo** out,
                 npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
  if (dev == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_alloc: null argument");
  if (bytes == 0) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_alloc: zero size");
  xrt::bo::flags f;
  if (flags == NPU_BO_CACHEABLE) {
    f = xrt::bo::flags::cacheable;
  } else if (flags == NPU_BO_HOST_ONLY) {
    f = xrt::bo::flags::host_only;
  } else {
    // XRT's "normal" (0) is rejected by the amdxdna driver; refuse it here with a clear word.
    return fail(err, NPU_SHIM_ERR_ARGUMENT,
                "npu_bo_alloc: flags must be NPU_BO_CACHEABLE or NPU_BO_HOST_ONLY");
  }
  return guarded(err, [&] {
    *out = new npu_bo{xrt::bo(dev->dev, bytes, f, static_cast<xrt::memory_group>(group))};
  });
}

int npu_bo_sub(npu_bo* parent, size_t size, size_t offset, npu_bo** out, npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
  if (parent == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_sub: null argument");
  if (size == 0) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_sub: zero size");
  return guarded(err, [&] { *out = new npu_bo{xrt::bo(parent->bo, size, offset)}; });
}

int npu_bo_map(npu_bo* bo, void** out, npu_shim_error* err) {
  if (bo == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_map: null argument");
  *out = nullptr;
  return guarded(err, [&] { *out = bo->bo.map(); });
}

int npu_bo_sync(npu_bo* bo, int direction, size_t size, size_t offset, npu_shim_error* err) {
  if (bo == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_sync: null buffer");
  xclBOSyncDirection dir;
  if (direction == NPU_SYNC_TO_DEVICE) {
    dir = XCL_BO_SYNC_BO_TO_DEVICE;
  } else if (direction == NPU_SYNC_FROM_DEVICE) {
    dir = XCL_BO_SYNC_BO_FROM_DEVICE;
  } else {
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_sync: invalid direction");
  }
  return guarded(err, [&] { bo->bo.sync(dir, size, offset); });
}

int npu_bo_write(npu_bo* bo, const void* src, size_t size, size_t offset, npu_shim_error* err) {
  if (bo == nullptr || (src == nullptr && size > 0))
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_write: null argument");
  return guarded(err, [&] { bo->bo.write(src, size, offset); });
}

int npu_bo_read(npu_bo* bo, void* dst, size_t size, size_t offset, npu_shim_error* err) {
  if (bo == nullptr || (dst == nullptr && size > 0))
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_bo_read: null argument");
  return guarded(err, [&] { bo->bo.read(dst, size, offset); });
}

void npu_bo_free(npu_bo* bo) {
  try {
    delete bo;
  } catch (...) {
  }
}

int npu_run_create(npu_kernel* kernel, npu_run** out, npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
  if (kernel == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_create: null argument");
  return guarded(err, [&] { *out = new npu_run{xrt::run(kernel->kernel)}; });
}

int npu_run_set_arg_u32(npu_run* run, int index, uint32_t value, npu_shim_error* err) {
  if (run == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_set_arg_u32: null run");
  return guarded(err, [&] { run->run.set_arg(index, value); });
}

int npu_run_set_arg_u64(npu_run* run, int index, uint64_t value, npu_shim_error* err) {
  if (run == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_set_arg_u64: null run");
  return guarded(err, [&] { run->run.set_arg(index, value); });
}

int npu_run_set_arg_bo(npu_run* run, int index, npu_bo* bo, npu_shim_error* err) {
  if (run == nullptr || bo == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_set_arg_bo: null argument");
  return guarded(err, [&] { run->run.set_arg(index, bo->bo); });
}

int npu_run_start(npu_run* run, npu_shim_error* err) {
  if (run == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_start: null run");
  return guarded(err, [&] { run->run.start(); });
}

int npu_run_wait(npu_run* run, unsigned timeout_ms, int* state, npu_shim_error* err) {
  if (run == nullptr || state == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_run_wait: null argument");
  return guarded(err, [&] {
    *state = static_cast<int>(run->run.wait(std::chrono::milliseconds(timeout_ms)));
  });
}

void npu_run_free(npu_run* run) {
  try {
    delete run;
  } catch (...) {
  }
}

int npu_runlist_create(npu_hwctx* ctx, npu_runlist** out, npu_shim_error* err) {
  if (out != nullptr) *out = nullptr;
#if defined(NPU_SHIM_HAVE_RUNLIST)
  if (ctx == nullptr || out == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_runlist_create: null argument");
  return guarded(err, [&] { *out = new npu_runlist{xrt::runlist(ctx->ctx), {}}; });
#else
  (void)ctx;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoRunlist);
#endif
}

int npu_runlist_add(npu_runlist* list, npu_run* run, npu_shim_error* err) {
#if defined(NPU_SHIM_HAVE_RUNLIST)
  if (list == nullptr || run == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_runlist_add: null argument");
  return guarded(err, [&] {
    list->runs.reserve(list->runs.size() + 1);  // so push_back cannot throw after add()
    list->list.add(run->run);
    list->runs.push_back(run->run);
  });
#else
  (void)list;
  (void)run;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoRunlist);
#endif
}

int npu_runlist_execute(npu_runlist* list, npu_shim_error* err) {
#if defined(NPU_SHIM_HAVE_RUNLIST)
  if (list == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_runlist_execute: null list");
  return guarded(err, [&] { list->list.execute(); });
#else
  (void)list;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoRunlist);
#endif
}

int npu_runlist_wait(npu_runlist* list, unsigned timeout_ms, int* state, long long* failed,
                     npu_shim_error* err) {
#if defined(NPU_SHIM_HAVE_RUNLIST)
  if (list == nullptr || state == nullptr || failed == nullptr)
    return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_runlist_wait: null argument");
  *failed = -1;
  return guarded(err, [&] {
    try {
      const auto status = list->list.wait(std::chrono::milliseconds(timeout_ms));
      *state = status == std::cv_status::timeout ? static_cast<int>(ERT_CMD_STATE_TIMEOUT)
                                                 : static_cast<int>(ERT_CMD_STATE_COMPLETED);
    } catch (const xrt::runlist::command_error& e) {
      // A run ended badly: report which one and how, as a state rather than an error, so
      // the caller can tell a failing kernel from a failing runtime.
      *state = static_cast<int>(e.get_command_state());
      const auto failed_run = e.get_run();
      for (size_t i = 0; i < list->runs.size(); ++i) {
        if (list->runs[i].get_handle() == failed_run.get_handle()) {
          *failed = static_cast<long long>(i);
          break;
        }
      }
    }
  });
#else
  (void)list;
  (void)timeout_ms;
  (void)state;
  (void)failed;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoRunlist);
#endif
}

int npu_runlist_reset(npu_runlist* list, npu_shim_error* err) {
#if defined(NPU_SHIM_HAVE_RUNLIST)
  if (list == nullptr) return fail(err, NPU_SHIM_ERR_ARGUMENT, "npu_runlist_reset: null list");
  return guarded(err, [&] {
    list->list.reset();
    list->runs.clear();
  });
#else
  (void)list;
  return fail(err, NPU_SHIM_ERR_UNSUPPORTED, kNoRunlist);
#endif
}

void npu_runlist_free(npu_runlist* list) {
  try {
    delete list;
  } catch (...) {
  }
}

}  // extern "C"
