//! `--trace FILE`: one Chrome trace-event file with the host's spans (written by
//! `tracing-chrome`) and the simulated device lanes (recorded by the runtime), so Perfetto
//! and chrome://tracing show both on one time axis.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A trace being recorded; [`finish`](TraceFile::finish) writes the merged file.
pub struct TraceFile {
    path: PathBuf,
    host_part: PathBuf,
    guard: tracing_chrome::FlushGuard,
}

impl TraceFile {
    /// Starts recording into `path`; returns the layer to install in the subscriber.
    pub fn start<S>(path: &Path) -> Result<(tracing_chrome::ChromeLayer<S>, TraceFile)>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
    {
        if path.is_dir() {
            anyhow::bail!(
                "cannot write trace {}: it is a directory (name a file, e.g. {})",
                path.display(),
                path.join("trace.json").display()
            );
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Made, and found writable, before the run rather than after it: tracing-chrome
        // opens its file on a thread of its own, where a failure would be a panic.
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot write trace {}: cannot create folder {}",
                path.display(),
                dir.display()
            )
        })?;
        let host_part = path.with_extension("host.json.part");
        std::fs::File::create(&host_part).with_context(|| {
            format!(
                "cannot write trace {}: cannot create {}",
                path.display(),
                host_part.display()
            )
        })?;
        let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
            .file(&host_part)
            .include_args(true)
            // tracing-chrome writes the host spans as process 1.
            .trace_style(tracing_chrome::TraceStyle::Threaded)
            .build();
        // The device lanes share the host layer's time origin (both start now).
        amanuensis_runtime::trace::start(Instant::now());
        Ok((
            layer,
            TraceFile {
                path: path.to_path_buf(),
                host_part,
                guard,
            },
        ))
    }

    /// Flushes the host spans, appends the device lanes and writes the file.
    pub fn finish(self) -> Result<PathBuf> {
        drop(self.guard);
        let text = std::fs::read_to_string(&self.host_part)
            .with_context(|| format!("reading {}", self.host_part.display()))?;
        let mut events: Vec<serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a trace-event array", self.host_part.display()))?;
        events.push(serde_json::json!({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "host (wall time)"}}));
        events.extend(amanuensis_runtime::trace::finish());
        crate::output::write_atomically(&self.path, &serde_json::to_vec(&events)?)?;
        let _ = std::fs::remove_file(&self.host_part);
        Ok(self.path)
    }
}
