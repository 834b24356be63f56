//! Why a resource graph was refused, and where.

use serde::Serialize;
use std::fmt;
use thiserror::Error;

/// The kind of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// A compute component (a code piece).
    Compute,
    /// A memory component (a data object).
    Memory,
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Compute => "compute",
            ComponentKind::Memory => "memory",
        })
    }
}

/// Which end of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeEnd {
    /// The `from` end.
    From,
    /// The `to` end.
    To,
}

impl EdgeEnd {
    /// The template field of this end.
    pub fn field(self) -> &'static str {
        match self {
            EdgeEnd::From => "from",
            EdgeEnd::To => "to",
        }
    }
}

/// Where in a graph specification something is: the thing a template error
/// points at, before it is turned into a line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "in", rename_all = "lowercase")]
pub enum Site {
    /// The application's top-level fields.
    App,
    /// The `index`-th compute component.
    Compute {
        /// Position in the `compute` list.
        index: usize,
        /// The component's name.
        name: String,
    },
    /// The `index`-th memory component.
    Memory {
        /// Position in the `memory` list.
        index: usize,
        /// The component's name.
        name: String,
    },
    /// The `index`-th edge.
    Edge {
        /// Position in the `edges` list.
        index: usize,
    },
}

impl Site {
    /// The JSON pointer of this site in a template, e.g. `/compute/2`.
    pub fn pointer(&self) -> String {
        match self {
            Site::App => String::new(),
            Site::Compute { index, .. } => format!("/compute/{index}"),
            Site::Memory { index, .. } => format!("/memory/{index}"),
            Site::Edge { index } => format!("/edges/{index}"),
        }
    }

    /// The component's name, when the site is a component.
    pub fn component(&self) -> Option<&str> {
        match self {
            Site::Compute { name, .. } | Site::Memory { name, .. } => Some(name),
            Site::App | Site::Edge { .. } => None,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Site::App => f.write_str("application"),
            Site::Compute { name, .. } => write!(f, "compute component `{name}`"),
            Site::Memory { name, .. } => write!(f, "memory component `{name}`"),
            Site::Edge { index } => write!(f, "edge #{index}"),
        }
    }
}

/// A resource graph that validation refused. Each variant says what was wrong;
/// [`GraphError::site`] says where.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The application has no compute component.
    #[error("the application has no compute component")]
    NoCompute,
    /// A name (of the application or a component) is empty or has characters outside `[A-Za-z0-9_.-]`.
    #[error("{site}: name {name:?} is not valid: use 1 to 64 characters from A-Z a-z 0-9 _ . -")]
    InvalidName {
        /// Where.
        site: Site,
        /// The refused name.
        name: String,
    },
    /// Two components share a name (names are shared by compute and memory components).
    #[error("{second}: the name `{name}` is already used by the {first}")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first component with it.
        first: Site,
        /// The component that repeats it.
        second: Site,
    },
    /// An edge names a component that does not exist.
    #[error("edge #{edge} ({kind}): `{field}` names unknown component `{name}`", field = end.field())]
    UnknownComponent {
        /// The edge's position in `edges`.
        edge: usize,
        /// The edge's kind.
        kind: crate::graph::EdgeKind,
        /// Which end.
        end: EdgeEnd,
        /// The unknown name.
        name: String,
    },
    /// An edge connects components of kinds its kind does not allow, e.g. a
    /// trigger edge into a memory component.
    #[error(
        "edge #{edge} ({kind}): `{field}` is `{name}`, a {found} component, but a {kind} edge's `{field}` must be a {expected} component",
        field = end.field()
    )]
    WrongEdgeKind {
        /// The edge's position in `edges`.
        edge: usize,
        /// The edge's kind.
        kind: crate::graph::EdgeKind,
        /// Which end is wrong.
        end: EdgeEnd,
        /// The component at that end.
        name: String,
        /// What that end must be.
        expected: ComponentKind,
        /// What it is.
        found: ComponentKind,
    },
    /// Trigger edges form a cycle; an invocation would never end.
    #[error("edge #{edge} (trigger) closes a trigger cycle: {}", cycle.join(" → "))]
    TriggerCycle {
        /// An edge on the cycle.
        edge: usize,
        /// The components on the cycle, first repeated at the end.
        cycle: Vec<String>,
    },
    /// The same trigger edge twice: the output would be delivered twice.
    #[error("edge #{edge} (trigger) repeats the trigger edge `{from}` → `{to}`")]
    DuplicateTrigger {
        /// The repeating edge's position in `edges`.
        edge: usize,
        /// Its `from`.
        from: String,
        /// Its `to`.
        to: String,
    },
    /// A memory component that no access edge reaches: it could never be used.
    #[error("memory component `{name}` is not accessed by any compute component: add an access edge or remove it")]
    UnaccessedMemory {
        /// Position in `memory`.
        index: usize,
        /// The component's name.
        name: String,
    },
    /// A size, CPU amount or count that must be positive is zero (or not a finite positive number).
    #[error("{site}: `{field}` must be larger than zero")]
    ZeroSize {
        /// Where.
        site: Site,
        /// The field.
        field: &'static str,
    },
    /// Sizes that contradict each other, e.g. an initial size above the budget cap.
    #[error("{site}: `{field}` {reason}")]
    InconsistentSize {
        /// Where.
        site: Site,
        /// The field.
        field: &'static str,
        /// What is inconsistent.
        reason: String,
    },
}

impl GraphError {
    /// Where the error is: the site and, when one field is at fault, that field.
    pub fn site(&self) -> (Site, Option<&'static str>) {
        match self {
            GraphError::NoCompute => (Site::App, Some("compute")),
            GraphError::InvalidName { site, .. } => {
                let field = if matches!(site, Site::App) { "app" } else { "name" };
                (site.clone(), Some(field))
            }
            GraphError::DuplicateName { second, .. } => (second.clone(), Some("name")),
            GraphError::UnknownComponent { edge, end, .. } | GraphError::WrongEdgeKind { edge, end, .. } => {
                (Site::Edge { index: *edge }, Some(end.field()))
            }
            GraphError::TriggerCycle { edge, .. } => (Site::Edge { index: *edge }, None),
            GraphError::DuplicateTrigger { edge, .. } => (Site::Edge { index: *edge }, Some("to")),
            GraphError::UnaccessedMemory { index, name } => {
                (Site::Memory { index: *index, name: name.clone() }, Some("name"))
            }
            GraphError::ZeroSize { site, field } | GraphError::InconsistentSize { site, field, .. } => {
                (site.clone(), Some(field))
            }
        }
    }
}
