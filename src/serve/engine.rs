//! The transcription engine of the server: one model loaded once, a replica of it per
//! worker thread (sessions of their own on the same weights), and a bounded queue in
//! front of the workers. A worker that takes a request also takes those already waiting
//! or arriving within [`COLLECT_WINDOW`], up to the batch size, and transcribes them
//! together: their first 30-s windows are decoded in lockstep
//! ([`WhisperModel::transcribe_together`]), each keeping its own result and cancellation.

use super::error::{ApiError, ServeError};
use super::metrics::Metrics;
use amanuensis_runtime::Registry;
use amanuensis_vad::{speech_segments, SpeechMap, VadModel, VadOptions};
use amanuensis_whisper::graph::CHUNK_SECONDS;
use amanuensis_whisper::speech_filter::restore_times;
use amanuensis_whisper::window_loop::TogetherItem;
use amanuensis_whisper::{Error, Progress, TranscribeOptions, Transcript, WhisperModel};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a worker that took a request waits for more to batch with it: long enough
/// for requests sent together to arrive together, short against a transcription.
pub const COLLECT_WINDOW: Duration = Duration::from_millis(5);
use tokio::sync::{mpsc, oneshot};

/// One accepted request's work.
pub struct Job {
    /// The uploaded file, decoded by the worker.
    pub audio: Vec<u8>,
    /// The file name's extension, a hint for the container.
    pub extension: Option<String>,
    pub options: TranscribeOptions,
    /// Plain text is wanted (json or text without word times): audio that fits one
    /// window is then decoded without timestamp tokens, as the CLI does.
    pub plain_text: bool,
    /// Set when the client has gone or the deadline passed: the worker stops.
    pub cancel: Arc<AtomicBool>,
    /// For `stream=true`: each window's text as soon as it is decoded. The sender is
    /// dropped with the job, after the reply is sent, which closes the stream.
    pub deltas: Option<mpsc::UnboundedSender<String>>,
    pub reply: oneshot::Sender<Result<Done, ApiError>>,
}

/// A finished transcription.
pub struct Done {
    pub transcript: Transcript,
    /// Seconds of audio.
    pub audio_seconds: f64,
}

/// Sets the flag when dropped: a request's handler holds one, so that its work stops
/// when the handler is dropped (client disconnect) or gives up (timeout).
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The queue's sending side and what the handlers need to know about the model.
pub struct Engine {
    queue: mpsc::Sender<Job>,
    pub capacity: usize,
    pub workers: usize,
    pub model_name: String,
    pub languages: Vec<String>,
    pub metrics: Arc<Metrics>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Starts `workers` threads, each on a replica of `model`. Called by
    /// [`super::Server::bind`] after [`super::ServeOptions::check`], which bounds `workers`,
    /// `capacity` (the queue) and `batch_size`.
    pub(crate) fn start(
        model: WhisperModel,
        registry: Registry,
        workers: usize,
        capacity: usize,
        batch_size: usize,
        vad: Option<super::VadFilter>,
        metrics: Arc<Metrics>,
    ) -> Result<Engine, ServeError> {
        let languages = model
            .tokenizer
            .language_codes()
            .into_iter()
            .map(String::from)
            .collect();
        let model_name = model.name.clone();
        let (tx, rx) = mpsc::channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let mut replicas = Vec::with_capacity(workers);
        for w in 0..workers {
            replicas.push(
                model
                    .replica(&registry)
                    .map_err(|source| ServeError::Worker { worker: w, source })?,
            );
        }
        // Each worker runs its own VAD session (its LSTM state is per recording).
        let mut vads = Vec::with_capacity(workers);
        for w in 0..workers {
            vads.push(match &vad {
                Some(f) => {
                    let device = model
                        .device
                        .open()
                        .map_err(|source| ServeError::Worker { worker: w, source })?;
                    let m = VadModel::load(
                        &f.dir,
                        None,
                        &registry,
                        device.as_ref(),
                        &model.device.options,
                    )
                    .map_err(|e| ServeError::Worker {
                        worker: w,
                        source: Error::Vad(e),
                    })?;
                    Some((m, f.options.clone()))
                }
                None => None,
            });
        }
        // The loaded model stays as the template a worker's model is remade from after a
        // panic; its sessions never run.
        let template = Arc::new(Mutex::new((model, registry)));
        let mut threads = Vec::with_capacity(workers);
        for (w, (replica, vad)) in replicas.into_iter().zip(vads).enumerate() {
            let rx = rx.clone();
            let metrics = metrics.clone();
            let template = template.clone();
            let h = std::thread::Builder::new()
                .name(format!("transcribe-{w}"))
                .spawn(move || worker(replica, vad, rx, metrics, template, batch_size))
                .map_err(ServeError::Thread)?;
            threads.push(h);
        }
        Ok(Engine {
            queue: tx,
            capacity,
            workers,
            model_name,
            languages,
            metrics,
            threads: Mutex::new(threads),
        })
    }

    /// Queues a job, or refuses it at once when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        self.metrics.queue_depth.fetch_add(1, Ordering::SeqCst);
        match self.queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::SeqCst);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.metrics.rejected.fetch_add(1, Ordering::Relaxed);
                        Err(ApiError::queue_full(self.capacity, 1))
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        Err(ApiError::unavailable("the server is shutting down"))
                    }
                }
            }
        }
    }

    /// Whether a request would be queued now.
    pub fn ready(&self) -> bool {
        self.queue.capacity() > 0
    }

    /// Closes the queue and waits for the workers to finish what they hold.
    pub fn shutdown(self) {
        drop(self.queue);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

type Template = Arc<Mutex<(WhisperModel, Registry)>>;

/// Takes the next job, then those waiting or arriving within [`COLLECT_WINDOW`], up to
/// `batch_size` in all. `None` once the queue is closed and empty.
fn collect(rx: &Mutex<mpsc::Receiver<Job>>, batch_size: usize) -> Option<Vec<Job>> {
    // One worker at a time waits on the queue; the others wait for the lock.
    let mut guard = rx.lock().unwrap_or_else(|e| e.into_inner());
    let mut jobs = vec![guard.blocking_recv()?];
    let until = Instant::now() + COLLECT_WINDOW;
    while jobs.len() < batch_size {
        match guard.try_recv() {
            Ok(job) => jobs.push(job),
            Err(mpsc::error::TryRecvError::Empty) if Instant::now() < until => {
                std::thread::sleep(Duration::from_micros(500));
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

/// A worker's Silero VAD session and parameters, when the server filters by voice
/// activity.
type Vad = Option<(VadModel, VadOptions)>;

fn worker(
    mut model: WhisperModel,
    mut vad: Vad,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    metrics: Arc<Metrics>,
    template: Template,
    batch_size: usize,
) {
    while let Some(jobs) = collect(&rx, batch_size) {
        // Counted in progress before leaving the queue's count, so that queue depth plus
        // requests in progress never misses a live request (`answer` counts each out).
        metrics.in_progress.fetch_add(jobs.len(), Ordering::SeqCst);
        metrics.queue_depth.fetch_sub(jobs.len(), Ordering::SeqCst);
        let mut live = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.cancel.load(Ordering::Relaxed) || job.reply.is_closed() {
                metrics.cancelled.fetch_add(1, Ordering::Relaxed);
                metrics.in_progress.fetch_sub(1, Ordering::SeqCst);
            } else {
                live.push(job);
            }
        }
        if live.is_empty() {
            continue;
        }
        metrics.busy_workers.fetch_add(1, Ordering::SeqCst);
        // A streamed request reports each window's text as it is decoded, so it runs alone.
        let (streamed, batchable): (Vec<Job>, Vec<Job>) =
            live.into_iter().partition(|j| j.deltas.is_some());
        if batchable.len() > 1 {
            run_batch(&mut model, &mut vad, batchable, &metrics, &template);
        } else {
            for job in batchable {
                run_alone(&mut model, &mut vad, job, &metrics, &template);
            }
        }
        for job in streamed {
            run_alone(&mut model, &mut vad, job, &metrics, &template);
        }
        metrics.busy_workers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After a panic the model's state may be half-updated: continue on a fresh replica.
fn remake(model: &mut WhisperModel, template: &Template, metrics: &Metrics) {
    metrics.worker_panics.fetch_add(1, Ordering::Relaxed);
    let guard = template.lock().unwrap_or_else(|e| e.into_inner());
    match guard.0.replica(&guard.1) {
        Ok(m) => *model = m,
        Err(e) => tracing::error!("cannot remake the worker's model: {e}"),
    }
}

fn panicked() -> ApiError {
    ApiError::internal("the transcription failed unexpectedly; the request was not completed")
}

/// Answers a job and counts it. Every job a worker keeps is answered here exactly once.
fn answer(job: Job, result: Result<Done, ApiError>, seconds: f64, metrics: &Metrics) {
    metrics.in_progress.fetch_sub(1, Ordering::SeqCst);
    if job.cancel.load(Ordering::Relaxed) {
        metrics.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    if let Ok(done) = &result {
        metrics.record_transcription(done.audio_seconds, seconds);
    }
    let _ = job.reply.send(result);
}

fn run_alone(
    model: &mut WhisperModel,
    vad: &mut Vad,
    job: Job,
    metrics: &Metrics,
    template: &Template,
) {
    let t0 = Instant::now();
    model.interrupt = Some(job.cancel.clone());
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(model, vad, &job)));
    model.interrupt = None;
    let result = outcome.unwrap_or_else(|_| {
        remake(model, template, metrics);
        Err(panicked())
    });
    answer(job, result, t0.elapsed().as_secs_f64(), metrics);
}

/// Transcribes several jobs together. A job whose audio does not decode is answered at
/// once; if the batch panics, the worker gets a fresh model and runs each job alone, so
/// one bad request still affects no other.
fn run_batch(
    model: &mut WhisperModel,
    vad: &mut Vad,
    jobs: Vec<Job>,
    metrics: &Metrics,
    template: &Template,
) {
    let t0 = Instant::now();
    let mut ready = Vec::with_capacity(jobs.len());
    for job in jobs {
        match decode(&job, vad) {
            Ok(p) => ready.push((job, p)),
            Err(e) => answer(job, Err(e), t0.elapsed().as_secs_f64(), metrics),
        }
    }
    if ready.len() < 2 {
        for (job, _) in ready {
            run_alone(model, vad, job, metrics, template);
        }
        return;
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let items: Vec<TogetherItem> = ready
            .iter()
            .map(|(job, p)| TogetherItem {
                pcm: &p.pcm,
                opts: &p.options,
                interrupt: Some(job.cancel.clone()),
            })
            .collect();
        // On a pool thread: see `run`.
        rayon::scope(|_| model.transcribe_together(&items))
    }));
    model.interrupt = None;
    let (results, stats) = match outcome {
        Ok(r) => r,
        Err(_) => {
            remake(model, template, metrics);
            for (job, _) in ready {
                run_alone(model, vad, job, metrics, template);
            }
            return;
        }
    };
    metrics.record_batch(stats.batches, stats.windows);
    // Each request's processing time is the batch's share: the batch took this long for
    // all of them.
    let share = t0.elapsed().as_secs_f64() / ready.len() as f64;
    for ((job, p), result) in ready.into_iter().zip(results) {
        let result = result.map(|t| p.done(t)).map_err(|e| api_error(&job, e));
        answer(job, result, share, metrics);
    }
}

/// A request's audio ready to transcribe.
struct Prepared {
    /// 16 kHz mono samples: the recording, or its speech joined when the server filters
    /// by voice activity.
    pcm: Vec<f32>,
    options: TranscribeOptions,
    /// Maps times of the joined speech back to the recording.
    speech: Option<SpeechMap>,
    /// Seconds of the recording.
    audio_seconds: f64,
}

impl Prepared {
    /// The answer of a transcript of `pcm`: times and duration the recording's.
    fn done(&self, mut transcript: Transcript) -> Done {
        if let Some(map) = &self.speech {
            restore_times(&mut transcript, map);
            transcript.duration = self.audio_seconds as f32;
        }
        Done {
            transcript,
            audio_seconds: self.audio_seconds,
        }
    }
}

/// The job's audio as 16 kHz mono samples and the options it is transcribed with.
fn decode(job: &Job, vad: &mut Vad) -> Result<Prepared, ApiError> {
    let pcm = amanuensis_audio::decode_audio_bytes(job.audio.clone(), job.extension.as_deref())
        .map_err(|e| {
            ApiError::invalid(
                "file",
                "invalid_audio",
                format!("the file could not be read as audio: {e}"),
            )
        })?;
    if pcm.is_empty() {
        return Err(ApiError::invalid(
            "file",
            "invalid_audio",
            "the file holds no audio samples",
        ));
    }
    let audio_seconds = pcm.len() as f64 / amanuensis_audio::SAMPLE_RATE as f64;
    let (pcm, speech) = match vad {
        Some((model, options)) => {
            let probs = model
                .speech_probs(&pcm)
                .map_err(|e| ApiError::internal(format!("voice activity detection failed: {e}")))?;
            let map = SpeechMap::new(&speech_segments(&probs, pcm.len(), options));
            (map.join(&pcm), Some(map))
        }
        None => (pcm, None),
    };
    let mut options = job.options.clone();
    if job.plain_text && pcm.len() <= CHUNK_SECONDS * amanuensis_audio::SAMPLE_RATE as usize {
        options.without_timestamps = true;
    }
    Ok(Prepared {
        pcm,
        options,
        speech,
        audio_seconds,
    })
}

/// The answer to a failed transcription.
fn api_error(job: &Job, e: Error) -> ApiError {
    match e {
        _ if job.cancel.load(Ordering::Relaxed) => {
            ApiError::internal("the transcription was stopped")
        }
        Error::Audio(e) => ApiError::invalid(
            "file",
            "invalid_audio",
            format!("the file could not be read as audio: {e}"),
        ),
        e => ApiError::internal(format!("transcription failed: {e}")),
    }
}

fn run(model: &mut WhisperModel, vad: &mut Vad, job: &Job) -> Result<Done, ApiError> {
    let p = decode(job, vad)?;
    let mut report = |p: Progress<'_>| {
        if let Some(tx) = &job.deltas {
            if !p.text.is_empty() {
                // A closed receiver is a client that went away; the cancel flag stops us.
                let _ = tx.send(p.text.to_string());
            }
        }
    };
    // On a thread of the kernels' pool (as the CLI does): called from outside it, every
    // parallel kernel would hand its work over and put this thread to sleep until done,
    // two context switches each (about 70 a decoder step).
    rayon::scope(|_| model.transcribe_pcm_with_progress(&p.pcm, &p.options, &mut report))
        .map(|t| p.done(t))
        .map_err(|e| api_error(job, e))
}
