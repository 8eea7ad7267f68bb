//! Plugins: operator libraries registered as one unit, either linked in (like the standard
//! library) or loaded from a shared library at run time after an ABI handshake.
//!
//! A plugin is a type implementing [`Plugin`]: a name, a version and a registration entry
//! that calls [`Registry::register`] and [`Registry::register_pattern`]. Linked in, it is
//! added with [`Registry::add_plugin`]. Built as a `cdylib` with [`export_plugin!`], it is
//! loaded with [`load_plugin`], which first reads the library's [`PluginDescriptor`] and
//! refuses any build whose ABI can differ from this program's (see `docs/plugins.md`).
//!
//! [`export_plugin!`]: crate::export_plugin

use crate::error::{OpError, Result, RuntimeError};
use crate::fusion::{ChainMatch, FusedNode, FusionPattern, PatternShape, SiblingMatch};
use crate::npu::{kernel_of, KernelWork, NpuBinding, NpuCaps, NpuKernel};
use crate::op::{Attrs, EvalContext, OpDef, Operator, ValueType};
pub use crate::registry::PluginInfo;
use crate::registry::Registry;
use crate::tensor::Tensor;
use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An operator library: a name, a version and one registration entry.
pub trait Plugin: Send + Sync {
    /// The plugin's name, shown in registry errors (usually the crate name).
    fn name(&self) -> &'static str;

    /// The plugin's version (usually the crate version).
    fn version(&self) -> &'static str;

    /// Registers the plugin's ops and fusion patterns.
    fn register(&self, registry: &mut Registry) -> Result<()>;
}

/// Why a shared library was not loaded as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The dynamic loader could not open the file.
    #[error("plugin {}: cannot open it as a shared library: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// The library opened but does not carry a plugin descriptor.
    #[error("plugin {}: not an amanuensis plugin: {reason}", path.display())]
    NotAPlugin { path: PathBuf, reason: String },
    /// The descriptor describes a build whose ABI may differ from this program's.
    #[error(
        "plugin {} ({plugin}): refused, it was built for a different runtime build: {}. \
         Rust has no stable ABI, so a plugin must be built by the same rustc against the same \
         amanuensis-runtime version as the program that loads it; rebuild it from this checkout \
         with the program, in one cargo invocation (e.g. cargo build --release --workspace)",
        path.display(),
        mismatches.join("; ")
    )]
    Mismatch {
        path: PathBuf,
        plugin: String,
        mismatches: Vec<String>,
    },
    /// The handshake passed but the plugin's registration failed (e.g. a duplicate op name).
    #[error("plugin {} ({plugin}): {source}", path.display())]
    Register {
        path: PathBuf,
        plugin: String,
        #[source]
        source: RuntimeError,
    },
}

/// The version of the plugin interface ([`PluginDescriptor`] layout and the exported
/// symbols); bumped whenever either changes.
pub const PLUGIN_ABI_VERSION: u32 = 3;

/// The first bytes of every [`PluginDescriptor`].
pub const PLUGIN_MAGIC: [u8; 8] = *b"AMNSPLG\0";

/// The `amanuensis-runtime` version this program was built with.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The compiler that built this crate (first line of `rustc -vV`).
pub const RUSTC_VERSION: &str = env!("AMANUENSIS_RUSTC_VERSION");

/// The target triple this crate was built for.
pub const TARGET: &str = env!("AMANUENSIS_TARGET");

/// Name of the `extern "C"` function returning the plugin's descriptor.
pub const DESCRIPTOR_SYMBOL: &str = "amanuensis_plugin_descriptor";

/// Name of the Rust-ABI registration entry, called only after the handshake.
pub const REGISTER_SYMBOL: &str = "amanuensis_plugin_register";

/// Name of the Rust-ABI function returning the plugin's [`boundary_type_ids`], called
/// after the handshake and before registration.
pub const TYPE_IDS_SYMBOL: &str = "amanuensis_plugin_type_ids";

/// Longest string a descriptor may carry (anything longer is not a descriptor).
const MAX_DESCRIPTOR_STR: usize = 4096;

const fn fnv1a(mut h: u64, v: u64) -> u64 {
    let bytes = v.to_le_bytes();
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! layouts {
    ($($t:ty),* $(,)?) => {
        [$((std::mem::size_of::<$t>(), std::mem::align_of::<$t>())),*]
    };
}

/// Size and alignment of the types that cross the plugin boundary.
const BOUNDARY_LAYOUTS: [(usize, usize); 25] = layouts!(
    Registry,
    Attrs,
    Tensor,
    crate::tensor::Data,
    ValueType,
    crate::format::Dim,
    crate::format::NodeDef,
    OpError,
    RuntimeError,
    Result<()>,
    Result<Box<dyn Operator>, OpError>,
    Result<Vec<Tensor>, OpError>,
    Box<dyn Operator>,
    Arc<dyn OpDef>,
    Arc<dyn FusionPattern>,
    Option<&'static (dyn std::any::Any + Send + Sync)>,
    NpuBinding,
    EvalContext<'static>,
    KernelWork,
    NpuCaps,
    ChainMatch<'static>,
    FusedNode,
    serde_json::Value,
    PluginInfo,
    PluginDescriptor,
);

/// A digest of the sizes and alignments of the types plugins exchange with the runtime,
/// of the ABI version and of the panic strategy: a cheap guard against a plugin built
/// with different dependency features or a locally modified runtime.
pub const LAYOUT_FINGERPRINT: u64 = {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    h = fnv1a(h, PLUGIN_ABI_VERSION as u64);
    let mut i = 0;
    while i < BOUNDARY_LAYOUTS.len() {
        h = fnv1a(h, BOUNDARY_LAYOUTS[i].0 as u64);
        h = fnv1a(h, BOUNDARY_LAYOUTS[i].1 as u64);
        i += 1;
    }
    fnv1a(h, cfg!(panic = "unwind") as u64)
};

/// A digest of the [`TypeId`](std::any::TypeId)s of the types the runtime recovers from a
/// plugin's objects by downcasting (an op's [`NpuBinding`]). Sizes and layouts can agree
/// while the type identities do not (the plugin built against another build of
/// `amanuensis-runtime`, with other features or from another checkout); every downcast
/// would then fail and the plugin's NPU kernels would be lost without an error, so the
/// loader compares this digest too. It is computed at run time (`TypeId::of` is not
/// `const`), in the plugin's own copy of the runtime and in the program's.
pub fn boundary_type_ids() -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same digest in every process built by the same compiler (which
    // the descriptor checks first).
    let mut h = std::hash::DefaultHasher::new();
    std::any::TypeId::of::<NpuBinding>().hash(&mut h);
    h.finish()
}

/// A borrowed UTF-8 string in C layout (pointer and byte length).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RawStr {
    /// First byte.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl RawStr {
    /// Points at a string that lives for the whole program.
    pub const fn new(s: &'static str) -> Self {
        RawStr {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Copies the string out, checking bounds and UTF-8; `field` names it in the error.
    ///
    /// # Safety
    /// `ptr` must be null or point at `len` readable bytes.
    unsafe fn read(&self, field: &str) -> std::result::Result<String, String> {
        if self.ptr.is_null() {
            return Err(format!("descriptor field '{field}' is null"));
        }
        if self.len > MAX_DESCRIPTOR_STR {
            return Err(format!(
                "descriptor field '{field}' claims {} bytes",
                self.len
            ));
        }
        // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.len) };
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| format!("descriptor field '{field}' is not UTF-8"))
    }
}

/// What a plugin library says about its build, in C layout so that any build (or any
/// library at all) can be inspected safely before Rust code of the plugin is called.
///
/// The first three fields are fixed for every ABI version: a reader checks `magic`, then
/// `abi_version`, then `size`, and reads the rest only when all three match.
#[repr(C)]
#[derive(Debug)]
pub struct PluginDescriptor {
    /// Always [`PLUGIN_MAGIC`].
    pub magic: [u8; 8],
    /// [`PLUGIN_ABI_VERSION`] of the runtime the plugin was built against.
    pub abi_version: u32,
    /// `size_of::<PluginDescriptor>()` in that build.
    pub size: u32,
    /// [`RUNTIME_VERSION`] of that build.
    pub runtime_version: RawStr,
    /// [`RUSTC_VERSION`] of that build.
    pub rustc_version: RawStr,
    /// [`TARGET`] of that build.
    pub target: RawStr,
    /// [`LAYOUT_FINGERPRINT`] of that build.
    pub layout_fingerprint: u64,
    /// The plugin's name.
    pub plugin_name: RawStr,
    /// The plugin's version.
    pub plugin_version: RawStr,
}

// SAFETY: every pointer in a descriptor points at immutable 'static data.
unsafe impl Sync for PluginDescriptor {}
// SAFETY: as above.
unsafe impl Send for PluginDescriptor {}

impl PluginDescriptor {
    /// The descriptor of a plugin compiled in this build (used by [`export_plugin!`]).
    ///
    /// [`export_plugin!`]: crate::export_plugin
    pub const fn for_this_build(name: &'static str, version: &'static str) -> Self {
        PluginDescriptor {
            magic: PLUGIN_MAGIC,
            abi_version: PLUGIN_ABI_VERSION,
            size: std::mem::size_of::<PluginDescriptor>() as u32,
            runtime_version: RawStr::new(RUNTIME_VERSION),
            rustc_version: RawStr::new(RUSTC_VERSION),
            target: RawStr::new(TARGET),
            layout_fingerprint: LAYOUT_FINGERPRINT,
            plugin_name: RawStr::new(name),
            plugin_version: RawStr::new(version),
        }
    }
}

/// Exports a [`Plugin`] from a `cdylib` crate: the C descriptor function the loader
/// inspects first, and the Rust registration entry it calls once the build matches.
///
/// ```
/// use amanuensis_runtime::{Plugin, Registry, RuntimeError};
///
/// pub struct MyPlugin;
/// impl Plugin for MyPlugin {
///     fn name(&self) -> &'static str { "my-plugin" }
///     fn version(&self) -> &'static str { "0.1.0" }
///     fn register(&self, _registry: &mut Registry) -> Result<(), RuntimeError> { Ok(()) }
/// }
/// amanuensis_runtime::export_plugin!(MyPlugin);
///
/// let d = unsafe { &*amanuensis_plugin_descriptor() };
/// assert_eq!(d.abi_version, amanuensis_runtime::plugin::PLUGIN_ABI_VERSION);
/// ```
///
/// The argument is an expression of the plugin type (a unit struct's name works). A
/// crate exports at most one plugin.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:expr) => {
        /// The plugin's build descriptor (C ABI; read before anything else is called).
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub extern "C" fn amanuensis_plugin_descriptor() -> *const $crate::plugin::PluginDescriptor
        {
            static DESCRIPTOR: ::std::sync::OnceLock<$crate::plugin::PluginDescriptor> =
                ::std::sync::OnceLock::new();
            DESCRIPTOR.get_or_init(|| {
                let plugin = $plugin;
                $crate::plugin::PluginDescriptor::for_this_build(
                    $crate::plugin::Plugin::name(&plugin),
                    $crate::plugin::Plugin::version(&plugin),
                )
            })
        }

        /// The plugin's [`boundary_type_ids`](
        /// $crate::plugin::boundary_type_ids) (Rust ABI; called only after the handshake).
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub fn amanuensis_plugin_type_ids() -> u64 {
            $crate::plugin::boundary_type_ids()
        }

        /// The plugin's registration entry (Rust ABI; called only after the handshake).
        #[doc(hidden)]
        #[unsafe(no_mangle)]
        pub fn amanuensis_plugin_register(
            registry: &mut $crate::Registry,
        ) -> ::std::result::Result<(), $crate::RuntimeError> {
            $crate::plugin::register_exported(&$plugin, registry)
        }
    };
}

/// The body of an exported registration entry; it runs inside the plugin's library.
///
/// A dynamically loaded plugin carries its own copy of the standard library, and a panic
/// raised by one copy cannot be caught by another (the process aborts). So the entry
/// catches panics of the registration here, and wraps every op, NPU kernel and fusion
/// pattern the plugin adds in guards that turn their panics into errors while still
/// inside the plugin's code.
#[doc(hidden)]
pub fn register_exported(plugin: &dyn Plugin, registry: &mut Registry) -> Result<()> {
    let mut staged = registry.clone();
    match panic::catch_unwind(AssertUnwindSafe(|| plugin.register(&mut staged))) {
        Ok(result) => result?,
        Err(payload) => {
            return Err(RuntimeError::Registry(format!(
                "plugin '{}' panicked while registering: {}",
                plugin.name(),
                panic_message(&*payload)
            )))
        }
    }
    staged.wrap_added(
        registry,
        |def| Arc::new(GuardedOpDef(def)),
        |p| Arc::new(GuardedPattern(p)),
    );
    *registry = staged;
    Ok(())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Runs `f`, turning a panic into an error that says where it happened.
fn guard<T>(
    what: &str,
    f: impl FnOnce() -> std::result::Result<T, OpError>,
) -> std::result::Result<T, OpError> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(OpError(format!(
            "plugin code panicked in {what}: {}",
            panic_message(&*payload)
        ))),
    }
}

// The guards forward every method of the operator traits; a method added to those traits
// must be forwarded here too, or plugins silently get its default.

/// An op kind of a loaded plugin, with panics turned into errors.
struct GuardedOpDef(Arc<dyn OpDef>);

impl OpDef for GuardedOpDef {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn summary(&self) -> &str {
        self.0.summary()
    }

    fn build(&self, attrs: &Attrs) -> std::result::Result<Box<dyn Operator>, OpError> {
        let op: Arc<dyn Operator> = Arc::from(guard("build", || self.0.build(attrs))?);
        let has_kernel = guard("kernel", || {
            Ok(matches!(kernel_of(op.as_ref()), Ok(Some(_))))
        })
        .unwrap_or(false);
        let kernel = has_kernel.then(|| NpuBinding::owned(GuardedKernel(op.clone())));
        Ok(Box::new(GuardedOp { op, kernel }))
    }
}

/// An operator of a loaded plugin, with panics turned into errors.
struct GuardedOp {
    op: Arc<dyn Operator>,
    /// The op's NPU kernel behind the same guard (other device families' kernels are
    /// forwarded as they are).
    kernel: Option<NpuBinding>,
}

impl fmt::Debug for GuardedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.op.fmt(f)
    }
}

impl Operator for GuardedOp {
    fn infer(
        &self,
        inputs: &[ValueType],
        states: &[ValueType],
    ) -> std::result::Result<Vec<ValueType>, OpError> {
        guard("infer", || self.op.infer(inputs, states))
    }

    fn eval(
        &self,
        ctx: &mut EvalContext,
        inputs: &[&Tensor],
    ) -> std::result::Result<Vec<Tensor>, OpError> {
        guard("eval", || self.op.eval(ctx, inputs))
    }

    fn kernel(&self, target: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        match &self.kernel {
            Some(k) if target == crate::npu::TARGET => k.offer(target),
            _ => guard("kernel", || Ok(self.op.kernel(target)))
                .ok()
                .flatten(),
        }
    }
}

/// The NPU kernel of a guarded operator (asked of the operator on every call, so no
/// reference into the operator is stored).
struct GuardedKernel(Arc<dyn Operator>);

impl GuardedKernel {
    fn kernel(&self) -> std::result::Result<&dyn NpuKernel, OpError> {
        kernel_of(self.0.as_ref())
            .ok()
            .flatten()
            .ok_or_else(|| OpError::new("the operator no longer offers an NPU kernel"))
    }
}

impl fmt::Debug for GuardedKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kernel() {
            Ok(k) => k.fmt(f),
            Err(_) => f.write_str("(no kernel)"),
        }
    }
}

impl NpuKernel for GuardedKernel {
    fn name(&self) -> &str {
        self.kernel().map_or("(no kernel)", |k| k.name())
    }

    fn check(&self, inputs: &[ValueType]) -> std::result::Result<(), String> {
        guard("check", || Ok(self.kernel()?.check(inputs))).unwrap_or_else(|e| Err(e.0))
    }

    // `work` cannot report an error; a plugin's cost model must not panic (a panic
    // here aborts the process, see `docs/plugins.md`).
    fn work(&self, inputs: &[ValueType], caps: &NpuCaps) -> KernelWork {
        match self.kernel() {
            Ok(k) => k.work(inputs, caps),
            Err(_) => KernelWork {
                steps: 0,
                step: Default::default(),
                resident_bytes: 0,
                footprint_double: 0,
                footprint_single: 0,
                shim_bds: 0,
                macs: 0,
            },
        }
    }

    fn eval(&self, inputs: &[&Tensor]) -> std::result::Result<Vec<Tensor>, OpError> {
        guard("NPU kernel eval", || self.kernel()?.eval(inputs))
    }
}

/// A fusion pattern of a loaded plugin; a panic declines the match.
struct GuardedPattern(Arc<dyn FusionPattern>);

impl FusionPattern for GuardedPattern {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn chain(&self) -> &[&str] {
        self.0.chain()
    }

    fn fuse(&self, m: &ChainMatch) -> Option<FusedNode> {
        guard("fuse", || Ok(self.0.fuse(m))).ok().flatten()
    }

    fn shape(&self) -> PatternShape {
        // A panic here is a pattern that matches nothing: a chain of its ops, if any.
        guard("shape", || Ok(self.0.shape())).unwrap_or(PatternShape::Chain)
    }

    fn fuse_siblings(&self, m: &SiblingMatch) -> Option<FusedNode> {
        guard("fuse_siblings", || Ok(self.0.fuse_siblings(m)))
            .ok()
            .flatten()
    }
}

/// A library that passed the handshake; kept open until the process exits because the
/// ops it registered point into its code.
struct Loaded {
    path: PathBuf,
    _library: libloading::Library,
}

static LOADED: Mutex<Vec<Loaded>> = Mutex::new(Vec::new());

/// Paths of the plugin libraries loaded so far, in load order.
pub fn loaded_libraries() -> Vec<PathBuf> {
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|l| l.path.clone())
        .collect()
}

type DescriptorFn = unsafe extern "C" fn() -> *const PluginDescriptor;
type RegisterFn = fn(&mut Registry) -> Result<()>;
type TypeIdsFn = fn() -> u64;

/// What to tell the user when a plugin's [`boundary_type_ids`] differ from this
/// program's, or `None` when they agree. Not a refusal: the layouts agree, so the plugin's
/// CPU ops run as they should; only its NPU kernels cannot be recognised, and its ops
/// then run on the host (the plan gives that reason for each).
pub fn type_ids_mismatch(plugin_type_ids: u64) -> Option<String> {
    (plugin_type_ids != boundary_type_ids()).then(|| {
        "it was built against another build of amanuensis-runtime (same version and \
         layouts, but other dependency features or another cargo invocation): its CPU ops \
         work, but its NPU kernels cannot be recognised, so its ops will run on the host; \
         build the plugin and this program in one cargo invocation (e.g. cargo build \
         --release --workspace) to use them on the NPU"
            .to_string()
    })
}

/// A descriptor's claims, read and checked against this build.
struct Handshake {
    name: String,
    version: String,
}

enum Refusal {
    NotAPlugin(String),
    Mismatch {
        plugin: String,
        mismatches: Vec<String>,
    },
}

/// Reads a descriptor field by field, checking the fixed prefix before the rest.
///
/// # Safety
/// `p` must be null or point at readable memory of at least the fixed prefix (16 bytes),
/// and, when the prefix matches this build, of a whole [`PluginDescriptor`].
unsafe fn read_descriptor(p: *const PluginDescriptor) -> std::result::Result<Handshake, Refusal> {
    if p.is_null() {
        return Err(Refusal::NotAPlugin(format!(
            "`{DESCRIPTOR_SYMBOL}` returned a null descriptor"
        )));
    }
    // SAFETY: the prefix is readable (caller); read field by field, unaligned-safe.
    let (magic, abi, size) = unsafe {
        (
            std::ptr::addr_of!((*p).magic).read_unaligned(),
            std::ptr::addr_of!((*p).abi_version).read_unaligned(),
            std::ptr::addr_of!((*p).size).read_unaligned(),
        )
    };
    if magic != PLUGIN_MAGIC {
        return Err(Refusal::NotAPlugin(format!(
            "`{DESCRIPTOR_SYMBOL}` returned a descriptor without the plugin magic (got {magic:02x?})"
        )));
    }
    if abi != PLUGIN_ABI_VERSION {
        return Err(Refusal::Mismatch {
            plugin: "(name unreadable under a different ABI)".into(),
            mismatches: vec![format!(
                "plugin ABI version {abi}, this program speaks version {PLUGIN_ABI_VERSION}"
            )],
        });
    }
    let want = std::mem::size_of::<PluginDescriptor>();
    if size as usize != want {
        return Err(Refusal::Mismatch {
            plugin: "(name unreadable)".into(),
            mismatches: vec![format!(
                "descriptor of {size} bytes, this program's is {want}"
            )],
        });
    }
    // SAFETY: magic, ABI version and size match, so the caller guarantees a whole descriptor.
    let d = unsafe { &*p };
    let not = Refusal::NotAPlugin;
    // SAFETY (all reads): the descriptor's strings point at `len` bytes by its contract.
    let name = unsafe { d.plugin_name.read("plugin_name") }.map_err(not)?;
    let version = unsafe { d.plugin_version.read("plugin_version") }.map_err(not)?;
    let runtime = unsafe { d.runtime_version.read("runtime_version") }.map_err(not)?;
    let rustc = unsafe { d.rustc_version.read("rustc_version") }.map_err(not)?;
    let target = unsafe { d.target.read("target") }.map_err(not)?;
    let mut mismatches = Vec::new();
    if runtime != RUNTIME_VERSION {
        mismatches.push(format!(
            "amanuensis-runtime {runtime}, this program has {RUNTIME_VERSION}"
        ));
    }
    if rustc != RUSTC_VERSION {
        mismatches.push(format!(
            "compiler '{rustc}', this program was built by '{RUSTC_VERSION}'"
        ));
    }
    if target != TARGET {
        mismatches.push(format!("target {target}, this program is {TARGET}"));
    }
    if d.layout_fingerprint != LAYOUT_FINGERPRINT {
        mismatches.push(format!(
            "type layout fingerprint {:016x}, this program's is {LAYOUT_FINGERPRINT:016x} \
             (different dependency features, panic strategy or a modified runtime)",
            d.layout_fingerprint
        ));
    }
    if !mismatches.is_empty() {
        return Err(Refusal::Mismatch {
            plugin: format!("{name} {version}"),
            mismatches,
        });
    }
    Ok(Handshake { name, version })
}

/// The handshake of [`load_plugin`] on a descriptor already in memory: checks its fixed
/// prefix, then its strings and build claims against this build; returns the plugin's
/// name and version. `path` names the library in errors.
///
/// # Safety
/// `p` must be null or point at readable memory of at least the fixed prefix (16 bytes),
/// and, when the prefix matches this build, of a whole [`PluginDescriptor`] whose
/// non-null string pointers point at `len` readable bytes (or whose `len` exceeds the
/// descriptor string limit of 4096 bytes).
#[allow(clippy::result_large_err)]
pub unsafe fn check_descriptor(
    p: *const PluginDescriptor,
    path: &Path,
) -> std::result::Result<(String, String), PluginError> {
    // SAFETY: forwarded from the caller.
    match unsafe { read_descriptor(p) } {
        Ok(h) => Ok((h.name, h.version)),
        Err(Refusal::NotAPlugin(reason)) => Err(PluginError::NotAPlugin {
            path: path.to_path_buf(),
            reason,
        }),
        Err(Refusal::Mismatch { plugin, mismatches }) => Err(PluginError::Mismatch {
            path: path.to_path_buf(),
            plugin,
            mismatches,
        }),
    }
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// Loads a plugin from a shared library and registers it: opens the library, checks its
/// descriptor against this build, and only then calls its registration entry. The
/// library stays loaded for the rest of the process. On any error the registry is
/// unchanged.
// The error is large, but this runs once per plugin at start-up.
#[allow(clippy::result_large_err)]
pub fn load_plugin(
    path: &Path,
    registry: &mut Registry,
) -> std::result::Result<PluginInfo, PluginError> {
    let path_buf = path.to_path_buf();
    // SAFETY: opening a library runs its initialisers; that is the inherent risk of
    // loading code, which the user asked for by naming the file.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Open {
        path: path_buf.clone(),
        reason: e.to_string(),
    })?;
    let not_a_plugin = |reason: String| PluginError::NotAPlugin {
        path: path_buf.clone(),
        reason,
    };
    // SAFETY: the symbol, if present, is the descriptor function `export_plugin!` defines
    // with this signature; the magic check below catches an unrelated symbol of that name.
    let describe: DescriptorFn =
        unsafe { library.get::<DescriptorFn>(&nul_terminated(DESCRIPTOR_SYMBOL)) }
            .map(|s| *s)
            .map_err(|_| {
                not_a_plugin(format!(
                "it does not export `{DESCRIPTOR_SYMBOL}` (a plugin crate is built with crate-type \
                 \"cdylib\" and calls `amanuensis_runtime::export_plugin!`)"
            ))
            })?;
    // SAFETY: a C function without arguments; the result is checked field by field.
    let (name, version) = unsafe { check_descriptor(describe(), path) }?;
    let handshake = Handshake { name, version };
    // SAFETY: the handshake established the same compiler, runtime version and type
    // layouts, so the Rust-ABI entries have exactly these signatures.
    let type_ids: TypeIdsFn = unsafe { library.get::<TypeIdsFn>(&nul_terminated(TYPE_IDS_SYMBOL)) }
        .map(|s| *s)
        .map_err(|_| {
            not_a_plugin(format!(
                "it has a descriptor but does not export `{TYPE_IDS_SYMBOL}`"
            ))
        })?;
    let register: RegisterFn =
        unsafe { library.get::<RegisterFn>(&nul_terminated(REGISTER_SYMBOL)) }
            .map(|s| *s)
            .map_err(|_| {
                not_a_plugin(format!(
                    "it has a descriptor but does not export `{REGISTER_SYMBOL}`"
                ))
            })?;
    // Both entries found before either is called.
    if let Some(why) = type_ids_mismatch(type_ids()) {
        tracing::warn!("plugin {}: {why}", path.display());
    }
    // From here on the plugin's code may have created objects: never unload it.
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Loaded {
            path: path_buf.clone(),
            _library: library,
        });
    registry
        .add_plugin_entry(&handshake.name, &handshake.version, Some(path), register)
        .map_err(|source| PluginError::Register {
            path: path_buf.clone(),
            plugin: format!("{} {}", handshake.name, handshake.version),
            source,
        })
}

impl Registry {
    /// Registers a plugin as one unit: all of its ops and patterns, or (on error) none.
    /// Duplicate names are reported with the plugin's name and version.
    pub fn add_plugin(&mut self, plugin: &dyn Plugin) -> Result<PluginInfo> {
        self.add_plugin_entry(plugin.name(), plugin.version(), None, |reg| {
            plugin.register(reg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_descriptor_passes_the_handshake() {
        let d = PluginDescriptor::for_this_build("p", "1.2.3");
        let h = unsafe { read_descriptor(&d) }
            .ok()
            .expect("own build accepted");
        assert_eq!((h.name.as_str(), h.version.as_str()), ("p", "1.2.3"));
    }

    #[test]
    fn type_ids_of_another_runtime_build_are_reported() {
        assert_eq!(type_ids_mismatch(boundary_type_ids()), None);
        let why = type_ids_mismatch(boundary_type_ids() ^ 1).expect("a mismatch");
        assert!(
            why.contains("another build of amanuensis-runtime")
                && why.contains("will run on the host")
                && why.contains("one cargo invocation"),
            "{why}"
        );
    }

    #[test]
    fn every_mismatch_is_listed() {
        let mut d = PluginDescriptor::for_this_build("p", "1.2.3");
        d.runtime_version = RawStr::new("0.0.1");
        d.rustc_version = RawStr::new("rustc 1.0.0 (a28077b28 2015-05-13)");
        d.layout_fingerprint ^= 1;
        match unsafe { read_descriptor(&d) } {
            Err(Refusal::Mismatch { plugin, mismatches }) => {
                assert_eq!(plugin, "p 1.2.3");
                assert_eq!(mismatches.len(), 3, "{mismatches:?}");
                assert!(
                    mismatches[0].contains("amanuensis-runtime 0.0.1"),
                    "{}",
                    mismatches[0]
                );
                assert!(mismatches[1].contains("rustc 1.0.0"), "{}", mismatches[1]);
                assert!(mismatches[2].contains("fingerprint"), "{}", mismatches[2]);
            }
            _ => panic!("a foreign build must be refused"),
        }
    }

    #[test]
    fn bad_magic_and_abi_are_refused_before_reading_strings() {
        let mut d = PluginDescriptor::for_this_build("p", "1");
        d.plugin_name = RawStr {
            ptr: std::ptr::null(),
            len: 99,
        };
        d.abi_version = PLUGIN_ABI_VERSION + 1;
        assert!(matches!(
            unsafe { read_descriptor(&d) },
            Err(Refusal::Mismatch { .. })
        ));
        d.magic = *b"ELF\0\0\0\0\0";
        assert!(matches!(
            unsafe { read_descriptor(&d) },
            Err(Refusal::NotAPlugin(_))
        ));
    }
}
