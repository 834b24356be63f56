//! Errors of the planning problems.

use thiserror::Error;

/// Why a problem could not be solved or evaluated.
///
/// No variant means *infeasible*: choosing nothing satisfies every hard
/// constraint of both problems, so a well-formed problem always has a
/// solution. Every variant names what is wrong, down to the candidate and the
/// field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IlpError {
    /// A candidate (or an aggregated group, in a disaggregation problem) is
    /// malformed.
    #[error("candidate {candidate}: field `{field}`: {reason}")]
    InvalidCandidate {
        /// The candidate's index in the problem.
        candidate: usize,
        /// The offending field: `components`, `cpu`, `memory` or `communication`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A side constraint of an aggregation problem is malformed.
    #[error("side constraint {constraint} (`{name}`): {reason}")]
    InvalidSideConstraint {
        /// The constraint's index in the problem.
        constraint: usize,
        /// The constraint's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A problem-wide field (a capacity, a penalty) is malformed.
    #[error("field `{field}`: {reason}")]
    InvalidProblem {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A solve option is out of range.
    #[error("solve option `{option}`: {reason}")]
    InvalidOption {
        /// The offending option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A choice handed to an `evaluate` method names no candidate of the
    /// problem, or names one twice.
    #[error("chosen candidate {index}: {reason}")]
    InvalidChoice {
        /// The offending index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
}

pub(crate) fn candidate_error(candidate: usize, field: &'static str, reason: impl Into<String>) -> IlpError {
    IlpError::InvalidCandidate { candidate, field, reason: reason.into() }
}
