//! Decoding several 30-s windows in lockstep: one run of the
//! [`DECODER_WINDOWS`](crate::graph::DECODER_WINDOWS) graph per token serves every window
//! (the idea of faster-whisper's batched pipeline). Each window's decoding policy (beam
//! search, or greedy for one beam) runs unchanged on a thread of its own against a
//! [`WindowStepper`] that forwards its calls to the coordinator; once every window still
//! decoding has asked for a step, one graph run answers them all. The threads only wait
//! and pick tokens; the graph run uses the kernels' own threads.
//!
//! Layout of the decoder's batch: each window still decoding owns a block of R rows (R =
//! beam size), block b rows `b·R .. (b+1)·R`, blocks in window order. A window holding
//! fewer sequences (one, before its beams fan out) pads its block with copies of its first
//! row. A window that finishes leaves the batch before the next run: its rows of the KV
//! caches and its cross K/V are dropped, so the windows still decoding do not carry its
//! work for the rest of the decode. All windows share the step `offset`, so they must start
//! from prompts of one length (no previous-text conditioning), and a window that would
//! restart (a temperature fallback) is decoded on its own afterwards instead.

use crate::decoding::{
    beam_search, BatchStepModel, BeamOptions, DecodeError, DecodeOptions, DecodeResult, SpecialIds,
    StepError,
};
use crate::error::{Error, Result};
use crate::graph::DECODER_WINDOWS;
use amanuensis_runtime::{Session, Tensor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Logits per sequence, per requested position.
type Logits = Vec<Vec<Vec<f32>>>;
/// A window's waiting step: its token rows and the positions it wants logits at.
type StepRequest = (Vec<Vec<u32>>, Vec<usize>);
type Answer = std::result::Result<Logits, String>;

enum Call {
    Reset,
    Step {
        rows: Vec<Vec<u32>>,
        positions: Vec<usize>,
    },
    Reorder(Vec<usize>),
    /// The window's policy returned (or its thread unwound).
    Done,
}

struct Request {
    window: usize,
    call: Call,
}

/// One window's view of the shared decoder: each call waits for the coordinator.
struct WindowStepper {
    window: usize,
    calls: mpsc::Sender<Request>,
    answers: mpsc::Receiver<Answer>,
}

impl WindowStepper {
    fn call(&mut self, call: Call) -> std::result::Result<Logits, StepError> {
        let stopped = || Error::graph(DECODER_WINDOWS, "the lockstep decoder stopped");
        self.calls
            .send(Request {
                window: self.window,
                call,
            })
            .map_err(|_| stopped())?;
        match self.answers.recv() {
            Ok(Ok(logits)) => Ok(logits),
            Ok(Err(reason)) => Err(Error::graph(DECODER_WINDOWS, reason).into()),
            Err(_) => Err(stopped().into()),
        }
    }
}

impl Drop for WindowStepper {
    /// Says the window is done even when its thread unwinds, so the others never wait
    /// for it.
    fn drop(&mut self) {
        let _ = self.calls.send(Request {
            window: self.window,
            call: Call::Done,
        });
    }
}

impl BatchStepModel for WindowStepper {
    fn step(
        &mut self,
        tokens: &[Vec<u32>],
        logit_positions: &[usize],
    ) -> std::result::Result<Logits, StepError> {
        self.call(Call::Step {
            rows: tokens.to_vec(),
            positions: logit_positions.to_vec(),
        })
    }

    fn reorder(&mut self, src: &[usize]) -> std::result::Result<(), StepError> {
        self.call(Call::Reorder(src.to_vec())).map(|_| ())
    }

    fn reset(&mut self) -> std::result::Result<(), StepError> {
        self.call(Call::Reset).map(|_| ())
    }
}

/// What one lockstep decode did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LockstepStats {
    /// Runs of the decoder graph (each served every window still decoding).
    pub steps: usize,
    /// Decoder rows of the first run: windows × beam size.
    pub rows: usize,
    /// Decoder rows over all runs (finished windows leave the batch).
    pub row_steps: usize,
}

/// The next request of a window's thread, `None` once every window has hung up.
///
/// The coordinator runs on a thread of the kernels' pool (the caller's `rayon::scope`),
/// and the windows' threads, outside the pool, hand it parallel work (their beam rows):
/// blocked in `recv`, the coordinator would hold a pool thread those jobs need. With one
/// kernel thread (`--threads 1`), or two coordinators on a pool of two (two server
/// workers batching), no thread was left to run them and the decode hung. So while it
/// waits, it runs the pool's pending jobs.
fn next_request(rx: &mpsc::Receiver<Request>) -> Option<Request> {
    loop {
        match rx.try_recv() {
            Ok(r) => return Some(r),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            // Not on a pool thread: nothing of the pool's waits on this one.
            None => return rx.recv().ok(),
            // Nothing to run now: wait a little for a request, then look again.
            Some(rayon::Yield::Idle) => match rx.recv_timeout(POOL_POLL) {
                Ok(r) => return Some(r),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            },
        }
    }
}

/// How long a waiting coordinator sleeps before looking for pool work again.
const POOL_POLL: std::time::Duration = std::time::Duration::from_micros(100);

/// The coordinator's state between calls.
struct Coordinator<'a> {
    session: &'a mut Session,
    cross: Vec<Tensor>,
    rows_per_window: usize,
    n_vocab: usize,
    eot: u32,
    /// Sequences each window holds now.
    held: Vec<usize>,
    alive: Vec<bool>,
    pending: Vec<Option<StepRequest>>,
    offset: usize,
    started: bool,
    steps: usize,
    row_steps: usize,
    /// The windows the decoder's batch and `cross` hold, block by block.
    blocks: Vec<usize>,
}

impl Coordinator<'_> {
    fn windows(&self) -> usize {
        self.held.len()
    }

    fn reset(&mut self, window: usize) -> Answer {
        if self.started {
            return Err(format!(
                "window {window} restarted after the lockstep decode began"
            ));
        }
        self.held[window] = 1;
        Ok(Vec::new())
    }

    /// Window `window`'s sequence i becomes its old sequence src[i], within its block.
    fn reorder(&mut self, window: usize, src: &[usize]) -> Answer {
        let (held, r) = (self.held[window], self.rows_per_window);
        if src.len() > r || src.iter().any(|&s| s >= held) {
            return Err(format!(
                "window {window}: reorder {src:?} does not fit {held} sequences in {r} rows"
            ));
        }
        self.held[window] = src.len();
        if !self.started || self.offset == 0 {
            return Ok(Vec::new());
        }
        let Some(block) = self.blocks.iter().position(|&w| w == window) else {
            return Err(format!("window {window} reordered after it left the batch"));
        };
        let base = block * r;
        let moved: Vec<usize> = (0..src.len()).filter(|&i| src[i] != i).collect();
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let offset = self.offset;
        let rows: Vec<usize> = moved.iter().map(|&i| base + i).collect();
        crate::model::CacheRuns::move_in_states(self.session.states_mut(), offset, &rows, |row| {
            base + src[row - base]
        })?;
        Ok(Vec::new())
    }

    /// Whether every window still decoding waits for a step.
    fn ready(&self) -> bool {
        (0..self.windows()).any(|w| self.alive[w])
            && (0..self.windows()).all(|w| !self.alive[w] || self.pending[w].is_some())
    }

    /// Drops from the batch the windows that finished: their rows of every KV cache (the
    /// positions filled so far) and their cross K/V.
    fn leave_finished(&mut self) -> std::result::Result<(), String> {
        let keep: Vec<usize> = (0..self.blocks.len())
            .filter(|&b| self.alive[self.blocks[b]])
            .collect();
        if keep.len() == self.blocks.len() {
            return Ok(());
        }
        if self.started {
            let r = self.rows_per_window;
            let rows: Vec<usize> = keep.iter().flat_map(|&b| b * r..(b + 1) * r).collect();
            for state in self.session.states_mut() {
                crate::model::gather_sequences(state, &rows, self.offset)?;
            }
        }
        for t in &mut self.cross {
            *t = t.select_outer(&keep).map_err(|e| e.to_string())?;
        }
        self.blocks = keep.iter().map(|&b| self.blocks[b]).collect();
        Ok(())
    }

    /// One decoder run for every window; the logits of each waiting window's sequences.
    fn step(&mut self) -> std::result::Result<Vec<Option<Logits>>, String> {
        self.leave_finished()?;
        let (w_count, r) = (self.windows(), self.rows_per_window);
        let requests: Vec<&StepRequest> = self.pending.iter().flatten().collect();
        let (first_rows, positions) = requests
            .first()
            .map(|(rows, pos)| (rows, pos.clone()))
            .ok_or("no window asked for a step")?;
        let n = first_rows.first().map_or(0, Vec::len);
        for (rows, pos) in &requests {
            if *pos != positions || rows.iter().any(|row| row.len() != n) {
                return Err(
                    "windows decoding in lockstep fed different numbers of tokens or positions"
                        .into(),
                );
            }
        }
        let blocks = self.blocks.len();
        let mut ids: Vec<i32> = Vec::with_capacity(blocks * r * n);
        for &w in &self.blocks {
            match &self.pending[w] {
                Some((rows, _)) => {
                    if rows.len() != self.held[w] || rows.is_empty() {
                        return Err(format!(
                            "window {w} fed {} sequences but holds {}",
                            rows.len(),
                            self.held[w]
                        ));
                    }
                    // Padding rows repeat the first, so that a fan-out finds them filled.
                    for k in 0..r {
                        let row = rows.get(k).unwrap_or(&rows[0]);
                        ids.extend(row.iter().map(|&t| t as i32));
                    }
                }
                None => ids.extend(std::iter::repeat_n(self.eot as i32, r * n)),
            }
        }
        if !self.started {
            let mut bindings = HashMap::new();
            bindings.insert("batch", blocks * r);
            self.session
                .reset_states(&bindings)
                .map_err(|e| e.to_string())?;
            self.started = true;
        }
        let err = |e: amanuensis_runtime::OpError| e.to_string();
        let tokens = Tensor::from_i32(&[blocks * r, n], ids).map_err(err)?;
        let offset = Tensor::scalar_i32(self.offset as i32);
        let idx: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let idx = Tensor::from_i32(&[idx.len()], idx).map_err(err)?;
        let mut inputs: Vec<&Tensor> = vec![&tokens, &offset, &idx];
        inputs.extend(self.cross.iter());
        // As a window's step (`GraphStepper`): the pool's other threads spin through it.
        let session = &mut self.session;
        let mut out =
            crate::warm_pool::keep_warm(|| session.run(&inputs)).map_err(|e| e.to_string())?;
        self.offset += n;
        self.steps += 1;
        self.row_steps += blocks * r;
        let logits = out.pop().ok_or("the decoder returned no logits")?;
        let v = logits.f32s().map_err(err)?;
        let per_row = positions.len() * self.n_vocab;
        if v.len() != blocks * r * per_row {
            return Err(format!(
                "the decoder returned {} logits for {} rows of {per_row}",
                v.len(),
                blocks * r
            ));
        }
        let mut answers: Vec<Option<Logits>> = vec![None; w_count];
        for (b, &w) in self.blocks.iter().enumerate() {
            answers[w] = self.pending[w].take().map(|_| {
                (0..self.held[w])
                    .map(|k| {
                        let row = &v[(b * r + k) * per_row..(b * r + k + 1) * per_row];
                        row.chunks_exact(self.n_vocab.max(1))
                            .map(<[f32]>::to_vec)
                            .collect()
                    })
                    .collect()
            });
        }
        let last = self.session.graph().outputs.len() - 1;
        self.session.recycle(last, logits);
        Ok(answers)
    }
}

/// One window of a lockstep decode.
pub struct LockstepWindow<'a> {
    /// Its cross K/V (from `cross_kv`: one `[n_audio_ctx, s]` tensor per layer and kind).
    pub cross: &'a [Tensor],
    /// Its prompt; every window's must have the same length and layout.
    pub prompt: &'a [u32],
    pub opts: &'a DecodeOptions,
    /// Checked before every step: once set, this window stops with
    /// [`Error::Interrupted`] and the others go on.
    pub interrupt: Option<&'a AtomicBool>,
}

/// Stacks each layer's cross K/V of every window, `[n_audio_ctx, s]` each, into one
/// `[windows, n_audio_ctx, s]` tensor per layer.
fn stack_cross(windows: &[LockstepWindow]) -> Result<Vec<Tensor>> {
    let first = windows
        .first()
        .ok_or_else(|| Error::graph(DECODER_WINDOWS, "no window to decode"))?
        .cross;
    let mut stacked = Vec::with_capacity(first.len());
    for (layer, t) in first.iter().enumerate() {
        let shape = t.shape().to_vec();
        // `[n_audio_ctx, s]`, or stored by head `[heads, n_audio_ctx, s / heads]`.
        if !(2..=3).contains(&shape.len()) {
            return Err(Error::graph(
                DECODER_WINDOWS,
                format!(
                    "cross K/V {layer} has shape {shape:?}, expected [n_audio_ctx, s] or \
                     [heads, n_audio_ctx, s / heads]"
                ),
            ));
        }
        let mut parts = Vec::with_capacity(windows.len());
        for (w, win) in windows.iter().enumerate() {
            let part = win
                .cross
                .get(layer)
                .filter(|p| {
                    p.shape() == shape && p.dtype() == t.dtype() && win.cross.len() == first.len()
                })
                .ok_or_else(|| {
                    Error::graph(
                        DECODER_WINDOWS,
                        format!("window {w}'s cross K/V {layer} differs from window 0's"),
                    )
                })?;
            parts.push(part);
        }
        stacked.push(Tensor::stack(&parts)?);
    }
    Ok(stacked)
}

/// `stacked` when it holds, per layer, each window's cross K/V in its place.
fn check_stacked(stacked: Vec<Tensor>, windows: &[LockstepWindow]) -> Result<Vec<Tensor>> {
    let first = windows
        .first()
        .ok_or_else(|| Error::graph(DECODER_WINDOWS, "no window to decode"))?
        .cross;
    if stacked.len() != first.len() {
        return Err(Error::graph(
            DECODER_WINDOWS,
            format!(
                "{} stacked cross K/V tensors for {} per window",
                stacked.len(),
                first.len()
            ),
        ));
    }
    for (layer, (s, t)) in stacked.iter().zip(first).enumerate() {
        let mut want = vec![windows.len()];
        want.extend_from_slice(t.shape());
        if s.shape() != want {
            return Err(Error::graph(
                DECODER_WINDOWS,
                format!(
                    "stacked cross K/V {layer} is {:?}, expected {want:?}",
                    s.shape()
                ),
            ));
        }
    }
    Ok(stacked)
}

/// Decodes `windows` in lockstep on `session` (a [`DECODER_WINDOWS`] session), each with
/// [`beam_search`] as it would run alone, all with the same beam options. Results are in
/// the windows' order; a window whose own interrupt flag was set gets
/// [`Error::Interrupted`], a window whose policy failed its error. The whole call fails
/// only when the shared decoder does (or `interrupt`, checked before every step, is set).
///
/// `stacked`, when given, is the windows' cross K/V already stacked per layer
/// (`[windows, n_audio_ctx, s]`, as the batched encoder returns it); otherwise each
/// window's is copied into such a stack.
pub fn decode_lockstep(
    session: &mut Session,
    windows: &[LockstepWindow],
    stacked: Option<Vec<Tensor>>,
    ids: &SpecialIds,
    beam: &BeamOptions,
    interrupt: Option<&AtomicBool>,
) -> Result<(Vec<Result<DecodeResult>>, LockstepStats)> {
    let count = windows.len();
    let rows_per_window = beam.beam_size.max(1);
    let mut co = Coordinator {
        session,
        cross: match stacked {
            Some(stacked) => check_stacked(stacked, windows)?,
            None => stack_cross(windows)?,
        },
        rows_per_window,
        n_vocab: ids.n_vocab,
        eot: ids.eot,
        held: vec![1; count],
        alive: vec![true; count],
        pending: vec![None; count],
        offset: 0,
        started: false,
        steps: 0,
        row_steps: 0,
        blocks: (0..count).collect(),
    };
    let mut failure: Option<Error> = None;
    let mut interrupted = vec![false; count];
    let set = |f: Option<&AtomicBool>| f.is_some_and(|f| f.load(Ordering::Relaxed));
    let results: Vec<std::thread::Result<std::result::Result<DecodeResult, DecodeError>>> =
        std::thread::scope(|scope| {
            let (call_tx, call_rx) = mpsc::channel::<Request>();
            let mut answer_txs = Vec::with_capacity(count);
            let mut threads = Vec::with_capacity(count);
            for (window, win) in windows.iter().enumerate() {
                let (answer_tx, answer_rx) = mpsc::channel();
                answer_txs.push(answer_tx);
                let mut stepper = WindowStepper {
                    window,
                    calls: call_tx.clone(),
                    answers: answer_rx,
                };
                let (prompt, opts) = (win.prompt, win.opts);
                threads
                    .push(scope.spawn(move || beam_search(&mut stepper, prompt, ids, opts, beam)));
            }
            drop(call_tx);
            let mut remaining = count;
            while remaining > 0 {
                let Some(Request { window, call }) = next_request(&call_rx) else {
                    break;
                };
                let answer = match call {
                    Call::Done => {
                        if co.alive[window] {
                            co.alive[window] = false;
                            remaining -= 1;
                        }
                        None
                    }
                    Call::Reset => Some(co.reset(window)),
                    Call::Reorder(src) => Some(co.reorder(window, &src)),
                    Call::Step { rows, positions } => {
                        co.pending[window] = Some((rows, positions));
                        None
                    }
                };
                if let Some(a) = answer {
                    let _ = answer_txs[window].send(a);
                }
                // A window whose request was stopped leaves; the others go on.
                for (w, win) in windows.iter().enumerate() {
                    if co.pending[w].is_some() && set(win.interrupt) {
                        co.pending[w] = None;
                        interrupted[w] = true;
                        let _ = answer_txs[w].send(Err("interrupted".into()));
                    }
                }
                if !co.ready() {
                    continue;
                }
                let outcome = if set(interrupt) {
                    failure.get_or_insert(Error::Interrupted);
                    Err("interrupted".to_string())
                } else {
                    co.step()
                };
                match outcome {
                    Ok(answers) => {
                        for (w, a) in answers.into_iter().enumerate() {
                            if let Some(logits) = a {
                                let _ = answer_txs[w].send(Ok(logits));
                            }
                        }
                    }
                    Err(reason) => {
                        for (pending, tx) in co.pending.iter_mut().zip(&answer_txs) {
                            if pending.take().is_some() {
                                let _ = tx.send(Err(reason.clone()));
                            }
                        }
                        failure.get_or_insert_with(|| Error::graph(DECODER_WINDOWS, reason));
                    }
                }
            }
            drop(answer_txs);
            threads.into_iter().map(|t| t.join()).collect()
        });
    if let Some(e) = failure {
        return Err(e);
    }
    let out = results
        .into_iter()
        .zip(interrupted)
        .map(|(r, stopped)| match r {
            _ if stopped => Err(Error::Interrupted),
            Ok(result) => result.map_err(Error::from),
            Err(_) => Err(Error::graph(
                DECODER_WINDOWS,
                "a window's decoding policy panicked",
            )),
        })
        .collect();
    let stats = LockstepStats {
        steps: co.steps,
        rows: count * rows_per_window,
        row_steps: co.row_steps,
    };
    Ok((out, stats))
}
