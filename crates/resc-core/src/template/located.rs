//! Turning errors into line, column, component and field.

use super::TemplateError;
use crate::graph::GraphError;
use jsonc_parser::ast::Value;
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};
use std::fmt;

/// A 1-based line and column in a template's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

impl Location {
    fn of_offset(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location { line, column: before[line_start..].chars().count() + 1 }
    }
}

pub(super) fn syntax_error(err: &serde_json::Error) -> TemplateError {
    TemplateError::Syntax {
        location: Location { line: err.line(), column: err.column() },
        message: strip_position(&err.to_string()),
    }
}

/// serde_json appends " at line L column C"; the location is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

pub(super) fn shape_error(text: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> TemplateError {
    let inner = err.inner();
    if !inner.is_data() {
        return syntax_error(inner);
    }
    let path = err.path().to_string();
    let segments: Vec<String> = err
        .path()
        .iter()
        .map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => index.to_string(),
            serde_path_to_error::Segment::Map { key } => key.clone(),
            serde_path_to_error::Segment::Enum { variant } => variant.clone(),
            serde_path_to_error::Segment::Unknown => "?".to_owned(),
        })
        .collect();
    let message = strip_position(&inner.to_string());
    // A missing field is reported at the object's end; name the field all the same.
    let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next()).map(str::to_owned);
    let unknown = message.strip_prefix("unknown field `").and_then(|m| m.split('`').next()).map(str::to_owned);
    let (component, in_component_field) = component_of(text, &segments);
    let field = missing.or(unknown).or(in_component_field);
    TemplateError::Shape {
        location: Location { line: inner.line(), column: inner.column() },
        path: if path == "." { "(top level)".to_owned() } else { path },
        component,
        field,
        message,
    }
}

/// For a path like `compute/1/cpu`, the name of `compute[1]` (read leniently
/// from the text) and the field `cpu`.
fn component_of(text: &str, segments: &[String]) -> (Option<String>, Option<String>) {
    let field = segments.last().filter(|s| s.parse::<usize>().is_err()).cloned();
    let [list, index, ..] = segments else {
        return (None, field);
    };
    if list != "compute" && list != "memory" {
        return (None, field);
    }
    let name = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.pointer(&format!("/{list}/{index}/name")).and_then(|n| n.as_str().map(str::to_owned)));
    (name, if segments.len() > 2 { field } else { None })
}

pub(super) fn graph_error(text: &str, source: GraphError) -> TemplateError {
    let (site, field) = source.site();
    let pointer = match field {
        Some(f) => format!("{}/{f}", site.pointer()),
        None => site.pointer(),
    };
    let offset = offset_of(text, &pointer).or_else(|| offset_of(text, &site.pointer())).unwrap_or(0);
    TemplateError::Invalid {
        location: Location::of_offset(text, offset),
        component: site.component().map(str::to_owned),
        field: field.map(str::to_owned),
        source,
    }
}

/// The byte offset of the value at a JSON pointer, e.g. `/edges/3/to`.
fn offset_of(text: &str, pointer: &str) -> Option<usize> {
    let options = ParseOptions { allow_comments: false, ..ParseOptions::default() };
    let parsed = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options).ok()?;
    let mut value = parsed.value?;
    for segment in pointer.split('/').skip(1) {
        value = match value {
            Value::Object(object) => object.properties.into_iter().find(|p| p.name.as_str() == segment)?.value,
            Value::Array(array) => array.elements.into_iter().nth(segment.parse().ok()?)?,
            _ => return None,
        };
    }
    Some(value.start())
}
