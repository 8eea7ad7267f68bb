//! The library entry point: load a model once, transcribe files or samples.

use crate::error::Result;
use crate::model::{find_model_dir, WhisperModel};
use crate::transcript::Transcript;
use crate::window_loop::{Progress, TranscribeOptions};
use std::path::Path;

/// A loaded Whisper model with the standard operators, ready to transcribe.
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
        Self::load(model, None)
    }

    /// Loads a model with an explicit graph file.
    pub fn with_graph(model: &str, graph: &Path) -> Result<Transcriber> {
        Self::load(model, Some(graph))
    }

    fn load(model: &str, graph: Option<&Path>) -> Result<Transcriber> {
        let dir = find_model_dir(model)?;
        let registry = amanuensis_operators::standard_registry();
        let model = WhisperModel::load(&dir, graph, &registry)?;
        Ok(Transcriber { model })
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
