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
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location { line, column: before[line_start..].chars().count() + 1 }
    }

    /// serde_json reports a 1-based line and the column of the last byte it
    /// read, counted in bytes; this counts it in characters instead.
    fn of_serde(text: &str, err: &serde_json::Error) -> Location {
        let line = err.line();
        let Some(line_text) = text.split('\n').nth(line.saturating_sub(1)) else {
            return Location { line, column: err.column() };
        };
        let column = line_text.char_indices().take_while(|&(i, _)| i < err.column()).count();
        Location { line, column: column.max(1) }
    }
}

pub(super) fn syntax_error(text: &str, err: &serde_json::Error) -> TemplateError {
    TemplateError::Syntax { location: Location::of_serde(text, err), message: strip_position(&err.to_string()) }
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
        return syntax_error(text, inner);
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
    // Point at the start of the offending value, or at the key of an unknown
    // field, rather than where serde_json stopped reading (the value's end).
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let at_key = unknown.as_deref().is_some_and(|u| segments.last() == Some(&u));
    let location = offset_of(text, &segments, at_key)
        .map_or_else(|| Location::of_serde(text, inner), |offset| Location::of_offset(text, offset));
    let field = missing.or(unknown).or(in_component_field);
    TemplateError::Shape {
        location,
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
    let site_pointer = site.pointer();
    let mut segments: Vec<&str> = site_pointer.split('/').skip(1).collect();
    let site_offset = offset_of(text, &segments, false);
    segments.extend(field);
    let offset = offset_of(text, &segments, false).or(site_offset).unwrap_or(0);
    TemplateError::Invalid {
        location: Location::of_offset(text, offset),
        component: site.component().map(str::to_owned),
        field: field.map(str::to_owned),
        source: Box::new(source),
    }
}

/// The byte offset of the value at a path of keys and indices, e.g.
/// `["edges", "3", "to"]`; with `key`, of the last property's key instead.
/// When a key is repeated the last one counts, as it is the one serde_json
/// complains about.
fn offset_of(text: &str, path: &[&str], key: bool) -> Option<usize> {
    let options = ParseOptions { allow_comments: false, ..ParseOptions::default() };
    let parsed = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options).ok()?;
    let mut value = parsed.value?;
    let mut key_start = None;
    for segment in path {
        value = match value {
            Value::Object(object) => {
                let property = object.properties.into_iter().rev().find(|p| p.name.as_str() == *segment)?;
                key_start = Some(property.range.start);
                property.value
            }
            Value::Array(array) => {
                key_start = None;
                array.elements.into_iter().nth(segment.parse().ok()?)?
            }
            _ => return None,
        };
    }
    if key {
        key_start
    } else {
        Some(value.start())
    }
}
