//! The validated graph: names resolved to value ids, ops built from attributes, a
//! topological order, and every value's inferred type. Validation failures name the
//! graph, the node and the reason.

use crate::error::{Result, RuntimeError};
use crate::format::{GraphDef, ValueDecl, WeightDecl};
use crate::op::{Attrs, OpCatalog, Operator, ValueType};
use crate::tensor::DType;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// The i-th graph input.
    Input(usize),
    /// A weight of the model.
    Weight,
    /// Output `output` of node `node`.
    Node { node: usize, output: usize },
}

/// A value (edge payload) of the graph.
#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub name: String,
    pub ty: ValueType,
    pub source: ValueSource,
}

/// A node with its op built and its edges resolved.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub op_name: String,
    pub op: Box<dyn Operator>,
    pub attrs: Attrs,
    /// Value ids of the inputs, in order.
    pub inputs: Vec<usize>,
    /// Value ids of the outputs, in order.
    pub outputs: Vec<usize>,
    /// Indices into [`Graph::states`].
    pub states: Vec<usize>,
    /// Set when a pass replaced this node (say by a fused node): it keeps its id, so
    /// every per-node record of earlier passes stays valid, but it no longer runs.
    pub replaced_by: Option<usize>,
}

impl Node {
    /// Whether the node is part of the graph as executed.
    pub fn is_live(&self) -> bool {
        self.replaced_by.is_none()
    }
}

/// A validated graph, ready to execute: the one IR the scheduler's passes edit in place.
///
/// Node and value ids are stable: a pass that replaces nodes marks them
/// ([`Node::replaced_by`]) and appends the new node, so ids recorded by earlier passes
/// keep naming the same node. [`Graph::order`] holds only live nodes.
#[derive(Debug)]
pub struct Graph {
    pub name: String,
    pub values: Vec<ValueInfo>,
    pub nodes: Vec<Node>,
    /// Live node indices in a valid execution order.
    pub order: Vec<usize>,
    /// Value ids of the graph inputs, in declaration order.
    pub inputs: Vec<usize>,
    /// Value ids of the graph outputs, in declaration order.
    pub outputs: Vec<usize>,
    /// Declared state tensors.
    pub states: Vec<ValueDecl>,
    /// Node-level dataflow (edge = value id), for passes and export.
    pub dataflow: DiGraph<usize, usize>,
}

fn gerr(graph: &str, node: &str, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Graph {
        graph: graph.to_string(),
        node: node.to_string(),
        reason: reason.into(),
    }
}

impl Graph {
    /// Validates `def` against the registry and the model's weight declarations.
    pub fn build(
        def: &GraphDef,
        weights: &[WeightDecl],
        registry: &dyn OpCatalog,
    ) -> Result<Graph> {
        let g = def.name.as_str();
        let weight_decls: HashMap<&str, &WeightDecl> =
            weights.iter().map(|w| (w.name.as_str(), w)).collect();
        let mut values: Vec<ValueInfo> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();

        for (i, inp) in def.inputs.iter().enumerate() {
            if by_name.contains_key(&inp.name) {
                return Err(gerr(
                    g,
                    "(inputs)",
                    format!("input '{}' declared twice", inp.name),
                ));
            }
            by_name.insert(inp.name.clone(), values.len());
            values.push(ValueInfo {
                name: inp.name.clone(),
                ty: ValueType::new(inp.dtype, inp.shape.clone()),
                source: ValueSource::Input(i),
            });
        }
        let mut state_ids: HashMap<&str, usize> = HashMap::new();
        for (i, s) in def.states.iter().enumerate() {
            if state_ids.insert(s.name.as_str(), i).is_some() {
                return Err(gerr(
                    g,
                    "(states)",
                    format!("state '{}' declared twice", s.name),
                ));
            }
        }

        // Pass 1: build ops and register every node output, so edges may point anywhere
        // and cycles are reported as cycles rather than as dangling edges.
        let mut nodes: Vec<Node> = Vec::with_capacity(def.nodes.len());
        let mut node_names: HashMap<&str, usize> = HashMap::new();
        for (ni, nd) in def.nodes.iter().enumerate() {
            if node_names.insert(nd.name.as_str(), ni).is_some() {
                return Err(gerr(g, &nd.name, "node name used twice"));
            }
            let opdef = registry
                .op_def(&nd.op)
                .ok_or_else(|| gerr(g, &nd.name, registry.unknown_op_message(&nd.op)))?;
            let attrs = Attrs(nd.attrs.clone());
            let op = opdef
                .build(&attrs)
                .map_err(|e| gerr(g, &nd.name, format!("op '{}': {e}", nd.op)))?;
            let mut outputs = Vec::with_capacity(nd.outputs.len());
            for (k, out) in nd.outputs.iter().enumerate() {
                if let Some(&prev) = by_name.get(out) {
                    let who = match &values[prev].source {
                        ValueSource::Input(_) => "a graph input".to_string(),
                        ValueSource::Weight => "a weight".to_string(),
                        ValueSource::Node { node, .. } => {
                            format!("node '{}'", def.nodes[*node].name)
                        }
                    };
                    return Err(gerr(
                        g,
                        &nd.name,
                        format!("output '{out}' is already produced by {who}"),
                    ));
                }
                if weight_decls.contains_key(out.as_str()) {
                    return Err(gerr(
                        g,
                        &nd.name,
                        format!("output '{out}' has the name of a weight"),
                    ));
                }
                by_name.insert(out.clone(), values.len());
                outputs.push(values.len());
                values.push(ValueInfo {
                    name: out.clone(),
                    // Placeholder until inference runs in topological order.
                    ty: ValueType::new(DType::F32, vec![]),
                    source: ValueSource::Node {
                        node: ni,
                        output: k,
                    },
                });
            }
            let mut states = Vec::with_capacity(nd.states.len());
            for s in &nd.states {
                let id = state_ids.get(s.as_str()).ok_or_else(|| {
                    gerr(
                        g,
                        &nd.name,
                        format!("state '{s}' is not declared in the graph's states"),
                    )
                })?;
                states.push(*id);
            }
            nodes.push(Node {
                name: nd.name.clone(),
                op_name: nd.op.clone(),
                op,
                attrs,
                inputs: Vec::new(),
                outputs,
                states,
                replaced_by: None,
            });
        }

        // Pass 2: resolve inputs (weights become values on first use).
        for (ni, nd) in def.nodes.iter().enumerate() {
            let mut ins = Vec::with_capacity(nd.inputs.len());
            for name in &nd.inputs {
                let id = if let Some(&id) = by_name.get(name) {
                    id
                } else if let Some(w) = weight_decls.get(name.as_str()) {
                    let id = values.len();
                    by_name.insert(name.clone(), id);
                    values.push(ValueInfo {
                        name: name.clone(),
                        ty: ValueType::new(
                            w.dtype.compute(),
                            w.shape.iter().map(|&d| d.into()).collect(),
                        ),
                        source: ValueSource::Weight,
                    });
                    id
                } else {
                    return Err(gerr(
                        g,
                        &nd.name,
                        format!("input '{name}' is not a graph input, a declared weight or the output of any node (dangling edge)"),
                    ));
                };
                ins.push(id);
            }
            nodes[ni].inputs = ins;
        }

        // Dataflow graph and a topological order.
        let mut dataflow: DiGraph<usize, usize> = DiGraph::new();
        let idx: Vec<NodeIndex> = (0..nodes.len()).map(|i| dataflow.add_node(i)).collect();
        for (ni, n) in nodes.iter().enumerate() {
            for &v in &n.inputs {
                if let ValueSource::Node { node, .. } = values[v].source {
                    dataflow.add_edge(idx[node], idx[ni], v);
                }
            }
        }
        let order: Vec<usize> = petgraph::algo::toposort(&dataflow, None)
            .map_err(|c| {
                let n = &nodes[dataflow[c.node_id()]];
                gerr(g, &n.name, "the graph has a cycle through this node")
            })?
            .into_iter()
            .map(|i| dataflow[i])
            .collect();

        // Type inference in execution order.
        for &ni in &order {
            let in_types: Vec<ValueType> = nodes[ni]
                .inputs
                .iter()
                .map(|&v| values[v].ty.clone())
                .collect();
            let st_types: Vec<ValueType> = nodes[ni]
                .states
                .iter()
                .map(|&s| ValueType::new(def.states[s].dtype, def.states[s].shape.clone()))
                .collect();
            let n = &nodes[ni];
            let out_types = n.op.infer(&in_types, &st_types).map_err(|e| {
                let sig: Vec<String> = n
                    .inputs
                    .iter()
                    .map(|&v| format!("{}: {}", values[v].name, values[v].ty))
                    .collect();
                gerr(
                    g,
                    &n.name,
                    format!("op '{}': {e} (inputs: {})", n.op_name, sig.join(", ")),
                )
            })?;
            if out_types.len() != n.outputs.len() {
                return Err(gerr(
                    g,
                    &n.name,
                    format!(
                        "op '{}' produces {} outputs but the node names {}",
                        n.op_name,
                        out_types.len(),
                        n.outputs.len()
                    ),
                ));
            }
            for (&v, t) in n.outputs.iter().zip(out_types) {
                values[v].ty = t;
            }
        }

        // Declared outputs must exist and agree with inference.
        let mut outputs = Vec::with_capacity(def.outputs.len());
        for o in &def.outputs {
            let &v = by_name.get(&o.name).ok_or_else(|| {
                gerr(
                    g,
                    "(outputs)",
                    format!("output '{}' is not produced by any node", o.name),
                )
            })?;
            let declared = ValueType::new(o.dtype, o.shape.clone());
            if !declared.compatible(&values[v].ty) {
                return Err(gerr(
                    g,
                    "(outputs)",
                    format!(
                        "output '{}' is declared {declared} but inferred {}",
                        o.name, values[v].ty
                    ),
                ));
            }
            outputs.push(v);
        }
        let inputs = (0..def.inputs.len()).collect();
        Ok(Graph {
            name: def.name.clone(),
            values,
            nodes,
            order,
            inputs,
            outputs,
            states: def.states.clone(),
            dataflow,
        })
    }

    /// Live nodes with their ids, in id order.
    pub fn live_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.is_live())
    }

    /// Whether a value is part of the graph as executed (not an intermediate of a chain a
    /// pass replaced).
    pub fn is_live_value(&self, v: usize) -> bool {
        match self.values[v].source {
            ValueSource::Node { node, .. } => self.nodes[node].is_live(),
            _ => true,
        }
    }

    /// Replaces a chain of live nodes (producer first) by one node running `op`, which
    /// takes over the last node's outputs (so consumers are untouched). The new node's
    /// inferred output types must equal the replaced outputs'. Returns the new node's id.
    pub fn replace_chain(
        &mut self,
        chain: &[usize],
        name: String,
        op_name: String,
        attrs: Attrs,
        op: Box<dyn Operator>,
        inputs: Vec<usize>,
    ) -> Result<usize> {
        let Some(&last) = chain.last() else {
            return Err(gerr(&self.name, &name, "cannot replace an empty chain"));
        };
        let outputs = self.nodes[last].outputs.clone();
        self.replace_nodes(chain, outputs, name, op_name, attrs, op, inputs)
    }

    /// Replaces sibling nodes (live, stateless, in any order) by one node running `op`,
    /// which takes over all their outputs, the first sibling's first. Refused when an
    /// input of the new node depends on one of the siblings: the node would feed itself.
    pub fn replace_siblings(
        &mut self,
        siblings: &[usize],
        name: String,
        op_name: String,
        attrs: Attrs,
        op: Box<dyn Operator>,
        inputs: Vec<usize>,
    ) -> Result<usize> {
        if siblings.len() < 2 {
            return Err(gerr(&self.name, &name, "siblings are two or more nodes"));
        }
        if let Some(v) = inputs
            .iter()
            .copied()
            .find(|&v| self.depends_on_any(v, siblings))
        {
            return Err(gerr(
                &self.name,
                &name,
                format!(
                    "input '{}' is computed from one of the nodes it would replace",
                    self.values[v].name
                ),
            ));
        }
        let outputs = siblings
            .iter()
            .flat_map(|&n| self.nodes[n].outputs.iter().copied())
            .collect();
        self.replace_nodes(siblings, outputs, name, op_name, attrs, op, inputs)
    }

    /// Whether value `v` is computed (directly or not) from an output of a node in `nodes`.
    fn depends_on_any(&self, v: usize, nodes: &[usize]) -> bool {
        let mut stack = vec![v];
        let mut seen = vec![false; self.nodes.len()];
        while let Some(v) = stack.pop() {
            let ValueSource::Node { node, .. } = self.values[v].source else {
                continue;
            };
            if nodes.contains(&node) {
                return true;
            }
            if !std::mem::replace(&mut seen[node], true) {
                stack.extend(self.nodes[node].inputs.iter().copied());
            }
        }
        false
    }

    /// Replaces live, stateless nodes by one running `op` that takes over `outputs`.
    #[allow(clippy::too_many_arguments)]
    fn replace_nodes(
        &mut self,
        chain: &[usize],
        outputs: Vec<usize>,
        name: String,
        op_name: String,
        attrs: Attrs,
        op: Box<dyn Operator>,
        inputs: Vec<usize>,
    ) -> Result<usize> {
        let g = self.name.clone();
        if let Some(&dead) = chain.iter().find(|&&ni| !self.nodes[ni].is_live()) {
            return Err(gerr(
                &g,
                &self.nodes[dead].name,
                "node was already replaced",
            ));
        }
        if chain.iter().any(|&ni| !self.nodes[ni].states.is_empty()) {
            return Err(gerr(&g, &name, "cannot replace nodes that keep state"));
        }
        let in_types: Vec<ValueType> = inputs.iter().map(|&v| self.values[v].ty.clone()).collect();
        let out_types = op
            .infer(&in_types, &[])
            .map_err(|e| gerr(&g, &name, format!("op '{op_name}': {e}")))?;
        let want: Vec<&ValueType> = outputs.iter().map(|&v| &self.values[v].ty).collect();
        if out_types.len() != want.len() || out_types.iter().zip(&want).any(|(a, b)| a != *b) {
            return Err(gerr(
                &g,
                &name,
                format!("op '{op_name}' would change the replaced nodes' output types"),
            ));
        }
        let id = self.nodes.len();
        for (k, &v) in outputs.iter().enumerate() {
            self.values[v].source = ValueSource::Node {
                node: id,
                output: k,
            };
        }
        for &ni in chain {
            self.nodes[ni].replaced_by = Some(id);
        }
        self.nodes.push(Node {
            name,
            op_name,
            op,
            attrs,
            inputs,
            outputs,
            states: Vec::new(),
            replaced_by: None,
        });
        self.rebuild_order()?;
        Ok(id)
    }

    /// Recomputes the dataflow graph and execution order over the live nodes, keeping the
    /// previous relative order where the dependencies allow (stable across edits).
    fn rebuild_order(&mut self) -> Result<()> {
        let mut dataflow: DiGraph<usize, usize> = DiGraph::new();
        let mut idx: HashMap<usize, NodeIndex> = HashMap::new();
        // Previous order first, new nodes after, so toposort ties keep the old order.
        let mut ids: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&n| self.nodes[n].is_live())
            .collect();
        let mut seen = vec![false; self.nodes.len()];
        for &n in &ids {
            seen[n] = true;
        }
        ids.extend((0..self.nodes.len()).filter(|&n| self.nodes[n].is_live() && !seen[n]));
        for &ni in &ids {
            idx.insert(ni, dataflow.add_node(ni));
        }
        for &ni in &ids {
            for &v in &self.nodes[ni].inputs {
                if let ValueSource::Node { node, .. } = self.values[v].source {
                    dataflow.add_edge(idx[&node], idx[&ni], v);
                }
            }
        }
        self.order = petgraph::algo::toposort(&dataflow, None)
            .map_err(|c| {
                let n = &self.nodes[dataflow[c.node_id()]];
                gerr(
                    &self.name,
                    &n.name,
                    "the graph has a cycle through this node",
                )
            })?
            .into_iter()
            .map(|i| dataflow[i])
            .collect();
        self.dataflow = dataflow;
        Ok(())
    }

    /// Op name → live node count.
    pub fn op_counts(&self) -> std::collections::BTreeMap<&str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for (_, n) in self.live_nodes() {
            *m.entry(n.op_name.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// Names of the weights this graph uses.
    pub fn weight_names(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .filter(|v| v.source == ValueSource::Weight)
            .map(|v| v.name.as_str())
    }
}
