//! The one error type of recur-core: every routine checks the slices and
//! dimensions it is given and answers with a value naming what is wrong,
//! never a panic and never undefined behaviour.

use core::fmt;

/// What a recur-core routine found wrong with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A slice argument has the wrong length.
    Length {
        /// The argument's name, e.g. `"weight_hh"`.
        what: &'static str,
        /// The length the dimensions call for.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A dimension is zero where it must not be, or too large to index.
    Dim {
        /// The dimension's name, e.g. `"hidden"`.
        what: &'static str,
        /// The value that was passed.
        value: usize,
    },
    /// A token id is not below the vocabulary size.
    Token {
        /// The argument's name, e.g. `"targets"`.
        what: &'static str,
        /// Position of the offending id in its slice.
        index: usize,
        /// The offending id.
        value: u32,
        /// The exclusive upper bound (vocabulary size).
        limit: usize,
    },
    /// A scalar argument is out of its domain (NaN, negative, zero where
    /// positive is required).
    Value {
        /// The argument's name, e.g. `"temperature"`.
        what: &'static str,
    },
    /// The routine does not apply to this cell kind (e.g. a cell-state slice
    /// passed for a GRU).
    Cell {
        /// What was asked.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Length {
                what,
                expected,
                actual,
            } => write!(
                f,
                "slice `{what}` has length {actual}, the dimensions need {expected}"
            ),
            Error::Dim { what, value } => write!(f, "dimension `{what}` = {value} is not allowed"),
            Error::Token {
                what,
                index,
                value,
                limit,
            } => write!(
                f,
                "token id {value} at `{what}`[{index}] is not below the vocabulary size {limit}"
            ),
            Error::Value { what } => write!(f, "argument `{what}` is out of its domain"),
            Error::Cell { what } => write!(f, "not applicable to this cell kind: {what}"),
        }
    }
}

/// Checks that `slice` has exactly `expected` elements.
#[inline]
pub fn check_len<T>(what: &'static str, slice: &[T], expected: usize) -> Result<(), Error> {
    if slice.len() == expected {
        Ok(())
    } else {
        Err(Error::Length {
            what,
            expected,
            actual: slice.len(),
        })
    }
}

/// Checks that every id in `ids` is below `limit`.
#[inline]
pub fn check_tokens(what: &'static str, ids: &[u32], limit: usize) -> Result<(), Error> {
    match ids.iter().position(|&t| t as usize >= limit) {
        None => Ok(()),
        Some(index) => Err(Error::Token {
            what,
            index,
            value: ids[index],
            limit,
        }),
    }
}

/// `a * b`, or an error naming `what` when the product overflows `usize`.
#[inline]
pub fn mul(what: &'static str, a: usize, b: usize) -> Result<usize, Error> {
    a.checked_mul(b).ok_or(Error::Dim { what, value: a })
}
