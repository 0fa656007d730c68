//! The projection graph: which projection reads which, in what order they must be applied, and
//! which can be built side by side (waves).
//!
//! Edges point from a dependency to its dependents. A projection's dependencies come from
//! `depends_on` and from `{{table}}` references to other projections' tables (config/).

use crate::error::{Error, Result};
use crate::model::config::Config;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::BTreeSet;

/// The order in which the selected projections are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Selected projections (indexes into `Config::projections`) in topological order.
    pub order: Vec<usize>,
    /// The same projections grouped into waves: every projection of a wave depends only on
    /// projections of earlier waves (or on projections that are not selected).
    pub waves: Vec<Vec<usize>>,
    /// Things worth telling the user before they rebuild (never errors).
    pub warnings: Vec<crate::progress::Warning>,
}

/// Builds the dependency graph of all projections; node weights are projection indexes.
pub fn graph(config: &Config) -> DiGraph<usize, ()> {
    let mut g = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..config.projections.len())
        .map(|i| g.add_node(i))
        .collect();
    for (i, p) in config.projections.iter().enumerate() {
        for dep in &p.depends_on {
            if let Some(d) = config.projection_index(dep) {
                g.add_edge(nodes[d], nodes[i], ());
            }
        }
    }
    g
}

/// Plans the given projections (all when `selection` is empty).
pub fn plan(config: &Config, selection: &[String]) -> Result<Plan> {
    let g = graph(config);
    reject_cycles(config, &g)?;

    let selected: BTreeSet<usize> = if selection.is_empty() {
        (0..config.projections.len()).collect()
    } else {
        let mut set = BTreeSet::new();
        for name in selection {
            let Some(i) = config.projection_index(name) else {
                let known: Vec<_> = config.projections.iter().map(|p| p.name.as_str()).collect();
                return Err(
                    Error::config(format!("unknown projection `{name}`")).with_hint(format!(
                        "projections in {}: {}",
                        config.path.display(),
                        known.join(", ")
                    )),
                );
            };
            set.insert(i);
        }
        set
    };

    // Kahn's algorithm, one layer at a time, over the selected subgraph.
    let mut remaining: BTreeSet<usize> = selected.clone();
    let mut waves = Vec::new();
    while !remaining.is_empty() {
        let wave: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                config.projections[i]
                    .depends_on
                    .iter()
                    .filter_map(|d| config.projection_index(d))
                    .all(|d| !remaining.contains(&d))
            })
            .collect();
        // Cycles were rejected above, so every round makes progress.
        assert!(!wave.is_empty(), "dependency cycle slipped through");
        for i in &wave {
            remaining.remove(i);
        }
        waves.push(wave);
    }
    let order = waves.iter().flatten().copied().collect();

    let mut warnings = Vec::new();
    for &i in &selected {
        let name = &config.projections[i].name;
        for (j, other) in config.projections.iter().enumerate() {
            if !selected.contains(&j) && other.depends_on.contains(name) {
                warnings.push(crate::progress::Warning::DependentNotRebuilt {
                    projection: other.name.clone(),
                    reads: name.clone(),
                });
            }
        }
    }
    Ok(Plan {
        order,
        waves,
        warnings,
    })
}

/// A cycle is a config error that names every projection on it, in order.
fn reject_cycles(config: &Config, g: &DiGraph<usize, ()>) -> Result<()> {
    for scc in tarjan_scc(g) {
        let is_cycle = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
        if !is_cycle {
            continue;
        }
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = *members.iter().next().expect("non-empty");
        let path = cycle_through(g, start, &members);
        let names: Vec<&str> = path
            .iter()
            .map(|n| config.projections[g[*n]].name.as_str())
            .collect();
        return Err(Error::config(format!(
            "dependency cycle between projections: {}",
            names.join(" → ")
        ))
        .with_hint(
            "a projection reads another through `depends_on` or a `{{table}}` reference in its handlers; remove one of these",
        ));
    }
    Ok(())
}

/// A closed path start → … → start inside one strongly connected component.
fn cycle_through(
    g: &DiGraph<usize, ()>,
    start: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // Depth-first search; in a strongly connected component a path back always exists.
    fn dfs(
        g: &DiGraph<usize, ()>,
        node: NodeIndex,
        start: NodeIndex,
        members: &BTreeSet<NodeIndex>,
        path: &mut Vec<NodeIndex>,
        seen: &mut BTreeSet<NodeIndex>,
    ) -> bool {
        let mut next: Vec<NodeIndex> = g.neighbors(node).filter(|n| members.contains(n)).collect();
        next.sort();
        for n in next {
            if n == start {
                path.push(n);
                return true;
            }
            if seen.insert(n) {
                path.push(n);
                if dfs(g, n, start, members, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start];
    let mut seen = BTreeSet::from([start]);
    dfs(g, start, start, members, &mut path, &mut seen);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Builds a config with projections whose handlers read the given other tables.
    fn config(specs: &[(&str, &[&str], &[&str])]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::from(
            "[events]\ntable = \"ev\"\nposition = \"id\"\nstream = \"s\"\ntype = \"t\"\ndata = \"d\"\n",
        );
        for (name, reads, declared) in specs {
            let mut sql = format!("-- on e\nINSERT INTO {{{{t_{name}}}}} VALUES (1);\n");
            for r in *reads {
                sql.push_str(&format!("SELECT * FROM {{{{t_{r}}}}};\n"));
            }
            std::fs::write(dir.path().join(format!("{name}.sql")), sql).unwrap();
            let deps: Vec<String> = declared.iter().map(|d| format!("\"{d}\"")).collect();
            toml.push_str(&format!(
                "[[projection]]\nname = \"{name}\"\ntables = [\"t_{name}\"]\nhandlers = \"{name}.sql\"\ndepends_on = [{}]\n",
                deps.join(", ")
            ));
        }
        let path = dir.path().join("reproject.toml");
        let result = Config::parse(Path::new(&path), &toml);
        drop(dir);
        result
    }

    fn names(config: &Config, idx: &[usize]) -> Vec<String> {
        idx.iter()
            .map(|&i| config.projections[i].name.clone())
            .collect()
    }

    #[test]
    fn waves_follow_dependencies() {
        let c = config(&[
            ("summary", &["customers"], &[]),
            ("customers", &[], &[]),
            ("orders", &[], &[]),
            ("stats", &[], &["orders"]),
            ("report", &["summary", "stats"], &[]),
        ])
        .unwrap();
        let p = plan(&c, &[]).unwrap();
        let waves: Vec<Vec<String>> = p.waves.iter().map(|w| names(&c, w)).collect();
        assert_eq!(
            waves,
            vec![
                vec!["customers".to_string(), "orders".to_string()],
                vec!["summary".to_string(), "stats".to_string()],
                vec!["report".to_string()],
            ]
        );
        assert_eq!(
            names(&c, &p.order),
            ["customers", "orders", "summary", "stats", "report"]
        );
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn partial_selection_warns_about_unselected_readers() {
        let c = config(&[("customers", &[], &[]), ("summary", &["customers"], &[])]).unwrap();
        let p = plan(&c, &["customers".to_string()]).unwrap();
        assert_eq!(names(&c, &p.order), ["customers"]);
        assert_eq!(p.warnings.len(), 1);
        assert!(
            matches!(&p.warnings[0], crate::progress::Warning::DependentNotRebuilt { projection, reads }
                if projection == "summary" && reads == "customers"),
            "{:?}",
            p.warnings[0]
        );
        assert_eq!(
            p.warnings[0].to_string(),
            "projection `summary` reads `customers` but is not part of this rebuild; it will keep the rows it derived from the old `customers`"
        );
        let err = plan(&c, &["nope".to_string()]).unwrap_err();
        assert!(err.message.contains("unknown projection `nope`"));
    }

    #[test]
    fn cycles_name_every_member() {
        let c = config(&[
            ("a", &["c"], &[]),
            ("b", &[], &["a"]),
            ("c", &["b"], &[]),
            ("d", &[], &[]),
        ])
        .unwrap();
        let err = plan(&c, &[]).unwrap_err();
        assert_eq!(err.kind.exit_code(), 2);
        assert!(err.message.contains("a → b → c → a"), "{}", err.message);
        assert!(!err.message.contains('d'.to_string().as_str()) || !err.message.contains("→ d"));
    }
}
