//! The stage graph: checks over `inputs` (unknown stages and routes, cycles, outputs
//! nobody reads) and drawings of it in DOT and Mermaid.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::{Config, DEAD_LETTER, Diagnostic, Input, did_you_mean};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Source,
    Transform,
    Sink,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    /// The component type (`mqtt`, `wasm`, `file`, ...).
    pub component: String,
    pub inputs: Vec<Input>,
    /// Named routes the stage declares (besides its default output and `dead_letter`).
    pub routes: Vec<String>,
    /// Whether it has a `dead_letter` route: every source and transform, and the sinks
    /// that may refuse events.
    pub dead_letter: bool,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    pub fn from_config(config: &Config) -> Graph {
        let mut nodes = Vec::new();
        for (name, stage) in &config.sources {
            nodes.push(Node {
                name: name.clone(),
                kind: NodeKind::Source,
                component: stage.kind.to_owned(),
                inputs: Vec::new(),
                routes: Vec::new(),
                dead_letter: true,
            });
        }
        for (name, stage) in &config.transforms {
            nodes.push(Node {
                name: name.clone(),
                kind: NodeKind::Transform,
                component: stage.kind.to_owned(),
                inputs: stage.inputs.clone(),
                routes: stage
                    .config
                    .declare()
                    .routes
                    .iter()
                    .map(|r| r.get_ref().clone())
                    .collect(),
                dead_letter: true,
            });
        }
        for (name, stage) in &config.sinks {
            nodes.push(Node {
                name: name.clone(),
                kind: NodeKind::Sink,
                component: stage.kind.to_owned(),
                inputs: stage.inputs.clone(),
                routes: Vec::new(),
                dead_letter: stage.config.declare().rejects,
            });
        }
        Graph { nodes }
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Every output (stage, route) and the stages that read it.
    pub fn consumers(&self) -> BTreeMap<(String, Option<String>), Vec<String>> {
        let mut consumers: BTreeMap<(String, Option<String>), Vec<String>> = BTreeMap::new();
        for node in &self.nodes {
            for input in &node.inputs {
                consumers
                    .entry((input.stage.clone(), input.route.clone()))
                    .or_default()
                    .push(node.name.clone());
            }
        }
        consumers
    }

    /// Transforms in an order where every stage comes after the stages it reads.
    pub fn topological_order(&self) -> Result<Vec<&Node>, Vec<String>> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = Vec::new();
        for node in &self.nodes {
            self.visit(node, &mut done, &mut visiting, &mut order)?;
        }
        Ok(order)
    }

    fn visit<'g>(
        &'g self,
        node: &'g Node,
        done: &mut BTreeSet<&'g str>,
        visiting: &mut Vec<&'g str>,
        order: &mut Vec<&'g Node>,
    ) -> Result<(), Vec<String>> {
        if done.contains(node.name.as_str()) {
            return Ok(());
        }
        if let Some(start) = visiting.iter().position(|n| *n == node.name) {
            let mut cycle: Vec<String> = visiting[start..].iter().map(|n| n.to_string()).collect();
            cycle.push(node.name.clone());
            return Err(cycle);
        }
        visiting.push(&node.name);
        for input in &node.inputs {
            if let Some(upstream) = self.node(&input.stage) {
                self.visit(upstream, done, visiting, order)?;
            }
        }
        visiting.pop();
        done.insert(&node.name);
        order.push(node);
        Ok(())
    }

    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph sluice {\n  rankdir=LR;\n");
        for node in &self.nodes {
            let shape = match node.kind {
                NodeKind::Source => "invhouse",
                NodeKind::Transform => "box",
                NodeKind::Sink => "house",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [shape={shape}, label=\"{}\\n({})\"];",
                node.name, node.name, node.component
            );
        }
        for node in &self.nodes {
            for input in &node.inputs {
                let label = input
                    .route
                    .as_deref()
                    .map(|r| format!(" [label=\"{r}\"]"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  \"{}\" -> \"{}\"{label};", input.stage, node.name);
            }
        }
        out.push_str("}\n");
        out
    }

    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let id = |name: &str| name.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        for node in &self.nodes {
            let (open, close) = match node.kind {
                NodeKind::Source => ("([", "])"),
                NodeKind::Transform => ("[", "]"),
                NodeKind::Sink => ("[(", ")]"),
            };
            let _ = writeln!(
                out,
                "  {}{open}\"{}<br/>{}\"{close}",
                id(&node.name),
                node.name,
                node.component
            );
        }
        for node in &self.nodes {
            for input in &node.inputs {
                match &input.route {
                    Some(route) => {
                        let _ = writeln!(
                            out,
                            "  {} -->|{route}| {}",
                            id(&input.stage),
                            id(&node.name)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "  {} --> {}", id(&input.stage), id(&node.name));
                    }
                }
            }
        }
        out
    }
}

/// Check the graph of a parsed config; push one diagnostic per problem. Stages in
/// `broken` failed to parse and were reported already: references to them are not
/// errors again, and neither are the unread outputs that a broken reference explains.
pub fn check(config: &Config, broken: &BTreeSet<String>, diagnostics: &mut Vec<Diagnostic>) {
    // Inputs name stages, not kinds: one name may serve one stage only.
    let families = [
        (
            "source",
            config
                .sources
                .iter()
                .map(|(n, s)| (n, &s.span))
                .collect::<Vec<_>>(),
        ),
        (
            "transform",
            config
                .transforms
                .iter()
                .map(|(n, s)| (n, &s.span))
                .collect(),
        ),
        (
            "sink",
            config.sinks.iter().map(|(n, s)| (n, &s.span)).collect(),
        ),
    ];
    for (index, (kind, stages)) in families.iter().enumerate() {
        for (name, span) in stages {
            if let Some((earlier, _)) = families[..index]
                .iter()
                .find(|(_, others)| others.iter().any(|(other, _)| other == name))
            {
                diagnostics.push(
                    Diagnostic::new(
                        Some((*span).clone()),
                        format!("a {kind} and a {earlier} are both called `{name}`"),
                    )
                    .with_hint(
                        "stage names are shared by sources, transforms and sinks: rename one",
                    ),
                );
            }
        }
    }
    let graph = Graph::from_config(config);
    let producers: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.kind != NodeKind::Sink)
        .map(|n| n.name.as_str())
        .collect();
    let mut consumed: BTreeSet<(String, Option<String>)> = BTreeSet::new();
    let mut dangling = !broken.is_empty();

    for node in &graph.nodes {
        for input in &node.inputs {
            consumed.insert((input.stage.clone(), input.route.clone()));
            let Some(upstream) = graph.node(&input.stage) else {
                dangling = true;
                if broken.contains(&input.stage) {
                    continue;
                }
                let mut diagnostic = Diagnostic::new(
                    Some(input.span.clone()),
                    format!(
                        "stage `{}` reads from unknown stage `{}`",
                        node.name, input.stage
                    ),
                );
                if let Some(close) = did_you_mean(&input.stage, producers.iter().copied()) {
                    diagnostic = diagnostic.with_hint(format!("did you mean `{close}`?"));
                }
                diagnostics.push(diagnostic);
                continue;
            };
            let reads_dead_letters = input.route.as_deref() == Some(DEAD_LETTER);
            if upstream.kind == NodeKind::Sink && !(upstream.dead_letter && reads_dead_letters) {
                diagnostics.push(Diagnostic::new(
                    Some(input.span.clone()),
                    format!(
                        "stage `{}` reads from `{}`, which is a sink and has no output",
                        node.name, input.stage
                    ),
                ));
                continue;
            }
            if let Some(route) = &input.route
                && route != DEAD_LETTER
                && !upstream.routes.contains(route)
            {
                let known: Vec<&str> = upstream
                    .routes
                    .iter()
                    .map(String::as_str)
                    .chain([DEAD_LETTER])
                    .collect();
                let hint = match did_you_mean(route, known.iter().copied()) {
                    Some(close) => format!("did you mean `{}.{close}`?", input.stage),
                    None => format!(
                        "`{}` has the routes: {}; declare others in its `routes`",
                        input.stage,
                        known.join(", ")
                    ),
                };
                diagnostics.push(
                    Diagnostic::new(
                        Some(input.span.clone()),
                        format!("stage `{}` has no route `{route}`", input.stage),
                    )
                    .with_hint(hint),
                );
            }
        }
    }

    if let Err(cycle) = graph.topological_order() {
        let span = config
            .transforms
            .get(&cycle[0])
            .map(|stage| stage.span.clone());
        diagnostics.push(
            Diagnostic::new(
                span,
                format!("the stages form a cycle: {}", cycle.join(" -> ")),
            )
            .with_hint("events must flow from sources to sinks; break the loop"),
        );
    }

    if dangling {
        // Outputs may look unread only because a reader's input did not resolve.
        return check_plugin_references(config, diagnostics);
    }
    for (name, stage) in &config.transforms {
        for route in stage.config.declare().routes {
            if !consumed.contains(&(name.clone(), Some(route.get_ref().clone()))) {
                diagnostics.push(
                    Diagnostic::new(
                        Some(route.span()),
                        format!("no stage reads route `{name}.{}`", route.get_ref()),
                    )
                    .with_hint(format!(
                        "add `\"{name}.{}\"` to some stage's `inputs`, or remove the route",
                        route.get_ref()
                    )),
                );
            }
        }
    }
    let outputs = config
        .sources
        .iter()
        .map(|(name, stage)| (name, stage.span.clone(), false))
        .chain(config.transforms.iter().map(|(name, stage)| {
            (
                name,
                stage.span.clone(),
                !stage.config.declare().routes.is_empty(),
            )
        }));
    for (name, span, routes_only) in outputs {
        if !routes_only && !consumed.contains(&(name.clone(), None)) {
            diagnostics.push(
                Diagnostic::new(Some(span), format!("no stage reads the output of `{name}`"))
                    .with_hint(format!(
                        "add `\"{name}\"` to a transform's or sink's `inputs`"
                    )),
            );
        }
    }

    check_plugin_references(config, diagnostics);
}

fn check_plugin_references(config: &Config, diagnostics: &mut Vec<Diagnostic>) {
    let plugins: Vec<&str> = config.plugins.keys().map(String::as_str).collect();
    for (stage, _, declaration) in config.declarations() {
        let Some(plugin) = declaration.plugin.map(|plugin| plugin.name) else {
            continue;
        };
        if !config.plugins.contains_key(plugin.get_ref()) {
            let hint = match did_you_mean(plugin.get_ref(), plugins.iter().copied()) {
                Some(close) => format!("did you mean `{close}`?"),
                None => format!("declare it: [plugins.{}] path = \"...\"", plugin.get_ref()),
            };
            diagnostics.push(
                Diagnostic::new(
                    Some(plugin.span()),
                    format!("stage `{stage}` uses unknown plugin `{}`", plugin.get_ref()),
                )
                .with_hint(hint),
            );
        }
    }
}
