/*
 * npu_shim.h: a C ABI over the XRT C++ API, enough to run mlir-aie kernels (xclbin +
 * instruction stream) on an AMD Ryzen AI NPU through the amdxdna driver.
 *
 * Every object is an opaque handle owned by the caller. Every function that can fail
 * returns an NPU_SHIM_* code and, on failure, fills `err` (code + NUL-terminated message);
 * no C++ exception ever crosses this boundary. Destroy objects in reverse order of
 * creation: runs, buffers and kernels, then hardware contexts and xclbins, then devices.
 */
#ifndef AMANUENSIS_NPU_SHIM_H
#define AMANUENSIS_NPU_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped when a signature below changes; the Rust side checks it. */
#define NPU_SHIM_ABI_VERSION 3

#define NPU_SHIM_OK 0
/* XRT threw a std::exception (message holds what()). */
#define NPU_SHIM_ERR_XRT 1
/* The XRT this shim was compiled against lacks the entry point (e.g. XRT 2.13: no hw_context). */
#define NPU_SHIM_ERR_UNSUPPORTED 2
/* A null handle, an empty name, a zero size or an invalid flag. */
#define NPU_SHIM_ERR_ARGUMENT 3
/* Something other than a std::exception was thrown. */
#define NPU_SHIM_ERR_UNKNOWN 4

#define NPU_SHIM_MESSAGE_CAPACITY 512

/* Buffer flags (amdxdna rejects XRT's "normal" flag 0). */
#define NPU_BO_CACHEABLE 1u
#define NPU_BO_HOST_ONLY 2u

/* Sync directions. */
#define NPU_SYNC_TO_DEVICE 0
#define NPU_SYNC_FROM_DEVICE 1

typedef struct npu_shim_error {
  int code;
  char message[NPU_SHIM_MESSAGE_CAPACITY];
} npu_shim_error;

typedef struct npu_device npu_device;
typedef struct npu_xclbin npu_xclbin;
typedef struct npu_hwctx npu_hwctx;
typedef struct npu_kernel npu_kernel;
typedef struct npu_bo npu_bo;
typedef struct npu_run npu_run;
typedef struct npu_runlist npu_runlist;

/* NPU_SHIM_ABI_VERSION of the compiled shim. */
int npu_shim_abi_version(void);
/* "major.minor[.patch]" of the XRT headers the shim was compiled against. */
const char* npu_shim_xrt_version(void);
/* 1 when hw_context and register_xclbin were compiled in (XRT >= 2.14), else 0. */
int npu_shim_has_hwctx(void);
/* 1 when xrt::runlist was compiled in (XRT >= 2.18), else 0. */
int npu_shim_has_runlist(void);

int npu_device_open(unsigned index, npu_device** out, npu_shim_error* err);
/* Writes the device name (not NUL-terminated) into buf[0..cap) and its full length to *len. */
int npu_device_name(npu_device* dev, char* buf, size_t cap, size_t* len, npu_shim_error* err);
void npu_device_close(npu_device* dev);

int npu_xclbin_load(const char* path, npu_xclbin** out, npu_shim_error* err);
/* Kernel names separated by '\n' into buf[0..cap), full length in *len. */
int npu_xclbin_kernel_names(npu_xclbin* xclbin, char* buf, size_t cap, size_t* len,
                            npu_shim_error* err);
/* Number of arguments of the named kernel (opcode, instructions, count, then data BOs). */
int npu_xclbin_num_args(npu_xclbin* xclbin, const char* kernel, unsigned* out,
                        npu_shim_error* err);
void npu_xclbin_free(npu_xclbin* xclbin);

int npu_register_xclbin(npu_device* dev, npu_xclbin* xclbin, npu_shim_error* err);
int npu_hwctx_create(npu_device* dev, npu_xclbin* xclbin, npu_hwctx** out, npu_shim_error* err);
void npu_hwctx_destroy(npu_hwctx* ctx);

int npu_kernel_open(npu_hwctx* ctx, const char* name, npu_kernel** out, npu_shim_error* err);
int npu_kernel_group_id(npu_kernel* kernel, int argno, int* out, npu_shim_error* err);
void npu_kernel_close(npu_kernel* kernel);

int npu_bo_alloc(npu_device* dev, size_t bytes, unsigned flags, unsigned group, npu_bo** out,
                 npu_shim_error* err);
/* A sub-buffer: bytes [offset, offset+size) of `parent` (xrt::bo's sub-buffer constructor),
 * with its own handle for run arguments, syncs and mapping. It shares the parent's memory;
 * free it before the parent. */
int npu_bo_sub(npu_bo* parent, size_t size, size_t offset, npu_bo** out, npu_shim_error* err);
int npu_bo_map(npu_bo* bo, void** out, npu_shim_error* err);
int npu_bo_sync(npu_bo* bo, int direction, size_t size, size_t offset, npu_shim_error* err);
/* Copies src[0..size) into the buffer's host storage at offset (xrt::bo::write; no sync). */
int npu_bo_write(npu_bo* bo, const void* src, size_t size, size_t offset, npu_shim_error* err);
/* Copies the buffer's host storage [offset, offset+size) into dst (xrt::bo::read; no sync). */
int npu_bo_read(npu_bo* bo, void* dst, size_t size, size_t offset, npu_shim_error* err);
void npu_bo_free(npu_bo* bo);

int npu_run_create(npu_kernel* kernel, npu_run** out, npu_shim_error* err);
int npu_run_set_arg_u32(npu_run* run, int index, uint32_t value, npu_shim_error* err);
int npu_run_set_arg_u64(npu_run* run, int index, uint64_t value, npu_shim_error* err);
int npu_run_set_arg_bo(npu_run* run, int index, npu_bo* bo, npu_shim_error* err);
int npu_run_start(npu_run* run, npu_shim_error* err);
/* Waits up to timeout_ms (0 = forever) and stores the ert_cmd_state in *state
 * (4 completed, 5 error, 6 abort, 8 timeout, 9 no response). */
int npu_run_wait(npu_run* run, unsigned timeout_ms, int* state, npu_shim_error* err);
void npu_run_free(npu_run* run);

/*
 * Runlists (xrt::runlist, XRT >= 2.18): runs of kernels of one hardware context submitted
 * as one chained command and executed in order. A run added to a runlist must not be
 * started on its own (XRT leaves that undefined). Without runlist support these return
 * NPU_SHIM_ERR_UNSUPPORTED.
 */
int npu_runlist_create(npu_hwctx* ctx, npu_runlist** out, npu_shim_error* err);
/* Appends a run; fails if the run is in a runlist already, belongs to another context, or
 * the list is executing. */
int npu_runlist_add(npu_runlist* list, npu_run* run, npu_shim_error* err);
/* Submits every run of the list (xrt::runlist::execute). */
int npu_runlist_execute(npu_runlist* list, npu_shim_error* err);
/* Waits up to timeout_ms (0 = forever). *state is 4 when every run completed, 8 when the
 * wait timed out, or the failing run's ert_cmd_state; *failed is that run's position in
 * the list (0-based), or -1. */
int npu_runlist_wait(npu_runlist* list, unsigned timeout_ms, int* state, long long* failed,
                     npu_shim_error* err);
/* Removes every run (the list must not be executing). */
int npu_runlist_reset(npu_runlist* list, npu_shim_error* err);
void npu_runlist_free(npu_runlist* list);

#ifdef __cplusplus
}
#endif

#endif
