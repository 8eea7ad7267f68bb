//! The library entry point: load a model once, transcribe files or samples.

use crate::compute::ComputeType;
use crate::devices::DeviceSpec;
use crate::error::Result;
use crate::model::{find_model_dir, WhisperModel};
use crate::transcript::Transcript;
use crate::window_loop::{Progress, TranscribeOptions};
use std::path::Path;

/// A loaded Whisper model with the standard operators, ready to transcribe.
///
/// On the CPU it computes as `amanuensis transcribe` does by default: `ComputeType::Auto`,
/// the fastest type that keeps Whisper's accuracy on this CPU (int8 where the CPU has a
/// vector int8 path, else f32). [`Transcriber::with_compute_type`] picks another, and
/// [`Transcriber::with_spec`] a device as well. (The lower-level [`WhisperModel::load`]
/// keeps f32, the type the reference fixtures are compared in.)
///
/// ```no_run
/// use amanuensis_whisper::{Transcriber, TranscribeOptions};
///
/// let mut t = Transcriber::new("base")?; // ./models/whisper-base or $AMANUENSIS_MODELS
/// let opts = TranscribeOptions { word_timestamps: true, ..Default::default() };
/// let transcript = t.transcribe("samples/jfk.wav", &opts)?;
/// for s in &transcript.segments {
///     println!("[{:.2} → {:.2}]{}", s.start, s.end, s.text);
/// }
/// # Ok::<(), amanuensis_whisper::Error>(())
/// ```
pub struct Transcriber {
    model: WhisperModel,
}

impl Transcriber {
    /// Loads a model by name (`base`, `whisper-base`) or directory, with the graph found
    /// as the CLI finds it (`graphs/<model>.graph`, else the built-in one).
    pub fn new(model: &str) -> Result<Transcriber> {
        Self::with_compute_type(model, ComputeType::Auto)
    }

    /// Loads a model with an explicit graph file.
    pub fn with_graph(model: &str, graph: &Path) -> Result<Transcriber> {
        Self::with_spec(model, Some(graph), &Self::cpu(ComputeType::Auto))
    }

    /// Loads a model whose linear layers compute in `compute` on the CPU (the CLI's
    /// `--compute-type`): `F32` gives the reference's tokens, `Int8` and `Bf16` are
    /// faster, `Auto` picks for this CPU.
    pub fn with_compute_type(model: &str, compute: ComputeType) -> Result<Transcriber> {
        Self::with_spec(model, None, &Self::cpu(compute))
    }

    /// Loads a model for a device and compute type (the CLI's `--device` and
    /// `--compute-type`; see [`DeviceSpec`]), with the graph file `graph` or the one found
    /// as the CLI finds it.
    pub fn with_spec(model: &str, graph: Option<&Path>, spec: &DeviceSpec) -> Result<Transcriber> {
        let dir = find_model_dir(model)?;
        let registry = amanuensis_operators::standard_registry();
        let model = WhisperModel::load_on(&dir, graph, &registry, spec)?;
        Ok(Transcriber { model })
    }

    fn cpu(compute: ComputeType) -> DeviceSpec {
        DeviceSpec {
            compute,
            ..DeviceSpec::default()
        }
    }

    /// The type the model's linear layers compute in (`Auto` resolved).
    pub fn compute_type(&self) -> ComputeType {
        self.model.device.compute
    }

    /// Decodes an audio file (any supported format and rate; `-` is stdin) and
    /// transcribes it. A file is read twice, a window at a time
    /// ([`WhisperModel::transcribe_streamed`]), so that memory does not grow with its
    /// length; standard input is read into memory.
    pub fn transcribe(
        &mut self,
        path: impl AsRef<Path>,
        options: &TranscribeOptions,
    ) -> Result<Transcript> {
        let path = path.as_ref();
        // On a thread of rayon's pool: called from any other thread, each parallel kernel
        // hands its work to the pool and sleeps until it is done (two context switches
        // each, about 70 a decoder step). Within the pool this runs in place.
        rayon::scope(|_| {
            if self.model.can_stream(path) {
                let audio = self.model.scan_file(path)?;
                return self.model.transcribe_streamed(audio, options, &mut |_| {});
            }
            let pcm = amanuensis_audio::load_audio(path)?;
            self.model.transcribe_pcm(&pcm, options)
        })
    }

    /// Transcribes 16 kHz mono samples, reporting progress after every window. Called from
    /// a thread of rayon's pool (`rayon::scope(|_| t.transcribe_pcm(..))`, as
    /// [`Transcriber::transcribe`] does itself) its kernels split their work without putting
    /// the caller to sleep each time: 0.5–1 ms a decoder token on a 2-core machine.
    pub fn transcribe_pcm(
        &mut self,
        pcm: &[f32],
        options: &TranscribeOptions,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Transcript> {
        self.model
            .transcribe_pcm_with_progress(pcm, options, progress)
    }

    /// The underlying model: graphs, sessions, tokenizer, config.
    pub fn model(&mut self) -> &mut WhisperModel {
        &mut self.model
    }
}
