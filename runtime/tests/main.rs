//! Runtime integration tests: Graphviz output and plugin loading, in one binary (one link).

mod dot;
mod plugin_errors;
mod plugin_loading;
