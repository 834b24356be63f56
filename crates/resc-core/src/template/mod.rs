//! The JSON template: the paper's internal interface, one file per resource graph.
//!
//! A template lists compute components, memory components and edges by name.
//! [`parse`] turns its text into a validated [`ResourceGraph`]; every error
//! names the component, the field, and the line and column where it is.
//! [`Template::to_json`] writes a graph back. `docs/template.md` documents the
//! format and [`json_schema`] generates its JSON Schema from these types.
//!
//! ```
//! let graph = resc_core::template::parse(r#"{
//!   "app": "hello",
//!   "budget_mib": 256,
//!   "compute": [{ "name": "greet", "code": "hello.greet" }],
//!   "memory": [{ "name": "scratch", "initial_mib": 64, "increment_mib": 64 }],
//!   "edges": [{ "kind": "access", "from": "greet", "to": "scratch" }]
//! }"#)?;
//! assert_eq!(graph.app(), "hello");
//! # Ok::<(), resc_core::template::TemplateError>(())
//! ```

mod located;

pub use located::Location;

use crate::graph::{EdgeKind, GraphError, ResourceGraph};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A resource graph as written in a JSON template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ReSC resource-graph template")]
pub struct Template {
    /// The application's name: 1 to 64 characters from `A-Z a-z 0-9 _ . -`.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub app: String,
    /// Cap on the memory, in MiB, that the application's memory components may
    /// hold at once in one invocation. A write that would grow past it fails
    /// with an error, and the data already written is kept.
    #[schemars(range(min = 1))]
    pub budget_mib: u64,
    /// Compute components: code pieces. At least one.
    pub compute: Vec<ComputeSpec>,
    /// Memory components: data objects that live in the memory pool.
    #[serde(default)]
    pub memory: Vec<MemorySpec>,
    /// Trigger, access and message edges between components, by name.
    #[serde(default)]
    pub edges: Vec<EdgeSpec>,
}

/// A compute component in a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ComputeSpec {
    /// Unique name among all components of the application: 1 to 64
    /// characters from `A-Z a-z 0-9 _ . -`.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// The code piece it runs, as registered with the platform (e.g. `lr.train`).
    #[schemars(length(min = 1))]
    pub code: String,
    /// CPU cores per instance; a multiple of 0.001. Defaults to 1.
    #[serde(default = "one_core")]
    #[schemars(range(min = 0.001))]
    pub cpu: f64,
    /// Number of parallel instances. Each receives the same input and its own
    /// instance index; the components it triggers receive all their outputs.
    /// Defaults to 1.
    #[serde(default = "one_instance")]
    #[schemars(range(min = 1))]
    pub parallelism: u32,
}

/// A memory component in a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// Unique name among all components of the application: 1 to 64
    /// characters from `A-Z a-z 0-9 _ . -`.
    #[schemars(length(min = 1, max = 64), pattern(r"^[A-Za-z0-9_.-]+$"))]
    pub name: String,
    /// Size, in MiB, allocated at the first access; rounded up to size classes.
    #[schemars(range(min = 1))]
    pub initial_mib: u64,
    /// Size, in MiB, added each time a write goes past the end; rounded up to a size class.
    #[schemars(range(min = 1))]
    pub increment_mib: u64,
}

/// An edge in a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// `trigger` (compute → compute), `access` (compute → memory) or `message` (compute ↔ compute).
    pub kind: EdgeKind,
    /// The compute component the edge leaves.
    pub from: String,
    /// The component the edge reaches: compute for trigger and message, memory for access.
    pub to: String,
}

fn one_core() -> f64 {
    1.0
}

fn one_instance() -> u32 {
    1
}

/// A template that could not be read or does not describe a valid graph.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The text is not JSON.
    #[error("{location}: not valid JSON: {message}")]
    Syntax {
        /// Where the parser stopped.
        location: Location,
        /// What it expected.
        message: String,
    },
    /// The JSON does not have the template's shape: a missing or unknown
    /// field, or a value of the wrong type.
    #[error("{location}: {}{message} (at `{path}`)", describe(component.as_deref(), field.as_deref()))]
    Shape {
        /// Where.
        location: Location,
        /// The JSON path of the offending value, e.g. `compute[1].cpu`.
        path: String,
        /// The component it is in, when it is in one.
        component: Option<String>,
        /// The field at fault, when one is.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The template is well formed but the graph it describes is invalid.
    #[error("{location}: {source}")]
    Invalid {
        /// Where.
        location: Location,
        /// The component at fault, when one is.
        component: Option<String>,
        /// The field at fault, when one is.
        field: Option<String>,
        /// What is wrong (boxed: it is large, and errors travel by value).
        source: Box<GraphError>,
    },
}

fn describe(component: Option<&str>, field: Option<&str>) -> String {
    match (component, field) {
        (Some(c), Some(f)) => format!("component `{c}`, field `{f}`: "),
        (Some(c), None) => format!("component `{c}`: "),
        (None, Some(f)) => format!("field `{f}`: "),
        (None, None) => String::new(),
    }
}

impl TemplateError {
    /// The line and column the error points at.
    pub fn location(&self) -> Location {
        match self {
            TemplateError::Syntax { location, .. }
            | TemplateError::Shape { location, .. }
            | TemplateError::Invalid { location, .. } => *location,
        }
    }

    /// The component the error is about, when there is one.
    pub fn component(&self) -> Option<&str> {
        match self {
            TemplateError::Syntax { .. } => None,
            TemplateError::Shape { component, .. } | TemplateError::Invalid { component, .. } => component.as_deref(),
        }
    }

    /// The field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            TemplateError::Syntax { .. } => None,
            TemplateError::Shape { field, .. } | TemplateError::Invalid { field, .. } => field.as_deref(),
        }
    }

    /// The graph error, when the template was well formed but invalid.
    pub fn graph_error(&self) -> Option<&GraphError> {
        match self {
            TemplateError::Invalid { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Template {
    /// Reads a template's text without validating the graph it describes.
    pub fn from_json(text: &str) -> Result<Template, TemplateError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let template: Template =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|err| located::shape_error(text, &err))?;
        deserializer.end().map_err(|err| located::syntax_error(text, &err))?;
        Ok(template)
    }

    /// Writes the template as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serializing these plain types cannot fail: no maps with non-string keys, no NaN
        // (validation refuses non-finite cpu; an unvalidated NaN serializes as null).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Validates the template and builds its graph.
    pub fn to_graph(&self) -> Result<ResourceGraph, GraphError> {
        ResourceGraph::from_template(self)
    }
}

/// Parses and validates a template's text into a graph.
pub fn parse(text: &str) -> Result<ResourceGraph, TemplateError> {
    let template = Template::from_json(text)?;
    ResourceGraph::from_template(&template).map_err(|source| located::graph_error(text, source))
}

/// The JSON Schema of the template format, generated from [`Template`].
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Template)).unwrap_or_default()
}

#[cfg(test)]
mod tests;
