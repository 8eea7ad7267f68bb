//! Tests of the XRT device layer: the recording shim, dry runs, call logs, runlists, the
//! manifest and detection; one module per area, in one binary (one link).

mod common;

mod calllog;
mod detect;
mod double;
mod dry;
mod manifest;
mod real_xrt;
mod runlist;
