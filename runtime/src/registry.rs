//! The operator registry: op name → [`OpDef`], plus fusion patterns. The standard library
//! and third-party crates register through the same [`Registry::register`]; a
//! [`Plugin`] registers as one unit through [`Registry::add_plugin`] (linked in) or
//! [`crate::plugin::load_plugin`] (a shared library).

use crate::error::{Result, RuntimeError};
use crate::fusion::{FusionPattern, PatternShape};
use crate::op::{OpCatalog, OpDef};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Registered op kinds by name.
#[derive(Default, Clone)]
pub struct Registry {
    ops: BTreeMap<String, Arc<dyn OpDef>>,
    /// Which library registered each op (for duplicate-name errors).
    origins: BTreeMap<String, String>,
    patterns: Vec<Arc<dyn FusionPattern>>,
    /// Which library registered each pattern (parallel to `patterns`).
    pattern_origins: Vec<String>,
    /// Plugins added so far, in order.
    plugins: Vec<PluginInfo>,
    /// Library currently registering (set by [`Registry::registering`]).
    current: String,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the library whose registrations follow (used in duplicate-name errors).
    pub fn registering(&mut self, library: &str) -> &mut Self {
        self.current = library.to_string();
        self
    }

    fn origin(&self) -> String {
        if self.current.is_empty() {
            "an unnamed library".to_string()
        } else {
            format!("'{}'", self.current)
        }
    }

    /// Adds an op kind; a name registered twice is an error naming both libraries.
    pub fn register(&mut self, def: impl OpDef + 'static) -> Result<()> {
        self.register_arc(Arc::new(def))
    }

    /// Adds a shared op kind (as [`register`](Self::register)).
    pub fn register_arc(&mut self, def: Arc<dyn OpDef>) -> Result<()> {
        let name = def.name().to_string();
        if let Some(prev) = self.origins.get(&name) {
            return Err(RuntimeError::Registry(format!(
                "operator '{name}' is registered twice: first by {prev}, again by {}",
                self.origin()
            )));
        }
        self.origins.insert(name.clone(), self.origin());
        self.ops.insert(name, def);
        Ok(())
    }

    /// Adds a fusion pattern; its ops need not be registered yet, but its name must be new.
    pub fn register_pattern(&mut self, p: impl FusionPattern + 'static) -> Result<()> {
        self.register_pattern_arc(Arc::new(p))
    }

    /// Adds a shared fusion pattern (as [`register_pattern`](Self::register_pattern)).
    pub fn register_pattern_arc(&mut self, p: Arc<dyn FusionPattern>) -> Result<()> {
        if let Some(i) = self.patterns.iter().position(|q| q.name() == p.name()) {
            return Err(RuntimeError::Registry(format!(
                "fusion pattern '{}' is registered twice: first by {}, again by {}",
                p.name(),
                self.pattern_origins[i],
                self.origin()
            )));
        }
        match p.shape() {
            PatternShape::Chain if p.chain().len() < 2 => {
                return Err(RuntimeError::Registry(format!(
                    "fusion pattern '{}' must chain at least two ops",
                    p.name()
                )));
            }
            PatternShape::Siblings { .. } if p.chain().len() != 1 => {
                return Err(RuntimeError::Registry(format!(
                    "sibling pattern '{}' must name exactly one op",
                    p.name()
                )));
            }
            _ => {}
        }
        self.pattern_origins.push(self.origin());
        self.patterns.push(p);
        Ok(())
    }

    /// Runs a plugin's registration entry on a copy of the registry and keeps the copy
    /// only when the entry succeeds.
    pub(crate) fn add_plugin_entry(
        &mut self,
        name: &str,
        version: &str,
        path: Option<&Path>,
        entry: impl FnOnce(&mut Registry) -> Result<()>,
    ) -> Result<PluginInfo> {
        let mut staged = self.clone();
        staged.current = format!("{name} {version}");
        entry(&mut staged)?;
        staged.current = self.current.clone();
        let info = PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            path: path.map(Path::to_path_buf),
            ops: staged
                .names()
                .filter(|n| !self.ops.contains_key(*n))
                .map(str::to_string)
                .collect(),
            patterns: staged.patterns[self.patterns.len().min(staged.patterns.len())..]
                .iter()
                .map(|p| p.name().to_string())
                .collect(),
        };
        staged.plugins.push(info.clone());
        *self = staged;
        Ok(info)
    }

    /// Replaces every op and pattern that `before` lacks by a wrapped one (the plugin
    /// boundary's panic guards).
    pub(crate) fn wrap_added(
        &mut self,
        before: &Registry,
        op: impl Fn(Arc<dyn OpDef>) -> Arc<dyn OpDef>,
        pattern: impl Fn(Arc<dyn FusionPattern>) -> Arc<dyn FusionPattern>,
    ) {
        for (name, def) in self.ops.iter_mut() {
            if !before.ops.contains_key(name) {
                *def = op(def.clone());
            }
        }
        let kept = before.patterns.len().min(self.patterns.len());
        for p in &mut self.patterns[kept..] {
            *p = pattern(p.clone());
        }
    }

    /// The plugins added so far, in order.
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// Which library registered `op` (quoted name, or "an unnamed library").
    pub fn registered_by(&self, op: &str) -> Option<&str> {
        self.origins.get(op).map(String::as_str)
    }

    /// The fusion patterns, in registration order.
    pub fn patterns(&self) -> &[Arc<dyn FusionPattern>] {
        &self.patterns
    }

    /// The op kind of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn OpDef>> {
        self.ops.get(name)
    }

    /// All registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.ops.keys().map(|s| s.as_str())
    }

    /// The registered name closest to `name` by edit distance, for "did you mean".
    pub fn nearest(&self, name: &str) -> Option<&str> {
        self.names()
            .map(|n| (strsim::levenshtein(n, name), n))
            .min()
            .filter(|(d, _)| *d <= name.len().max(3) / 2 + 1)
            .map(|(_, n)| n)
    }

    /// The message for a node whose op is not registered.
    pub fn unknown_op_message(&self, op: &str) -> String {
        let known: Vec<&str> = self.names().collect();
        let hint = match self.nearest(op) {
            Some(n) => format!("; did you mean '{n}'?"),
            None => String::new(),
        };
        format!(
            "unknown operator '{op}'{hint} (registered: {})",
            known.join(", ")
        )
    }
}

impl OpCatalog for Registry {
    fn op_def(&self, name: &str) -> Option<&Arc<dyn OpDef>> {
        self.get(name)
    }

    fn unknown_op_message(&self, name: &str) -> String {
        Registry::unknown_op_message(self, name)
    }
}

/// What a registered plugin added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The shared library it was loaded from (`None` when linked in).
    pub path: Option<PathBuf>,
    /// Op names it registered, sorted.
    pub ops: Vec<String>,
    /// Fusion pattern names it registered, in registration order.
    pub patterns: Vec<String>,
}

impl fmt::Display for PluginInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)?;
        if let Some(p) = &self.path {
            write!(f, " ({})", p.display())?;
        }
        write!(f, ": ops {}", list_or_none(&self.ops))?;
        write!(f, "; fusion patterns {}", list_or_none(&self.patterns))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}
