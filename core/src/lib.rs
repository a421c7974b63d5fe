//! # recur-core
//!
//! The CPU reference of recur and the part that links into embedded and edge
//! inference: `#![no_std]`, no `alloc`, no heap. Every routine works on
//! caller-provided slices, checks their lengths and returns an [`Error`]
//! naming what is wrong instead of panicking.
//!
//! Conventions, everywhere in this crate:
//! - argument order: outputs, inputs, cache/workspace, dims (then the
//!   [`Gemm`] implementation, where one is needed);
//! - forward routines save post-activation values in a cache; backward
//!   routines derive from them and **accumulate** gradients with `+=`;
//!   zeroing is a separate call ([`zero`]);
//! - every workspace size comes from a `*_len(dims)` function;
//! - parameters use PyTorch's layout (see [`layout`]).

#![no_std]
#![deny(missing_docs)]

pub mod cell;
pub mod clip;
pub mod error;
mod fmath;
pub mod gemm;
pub mod layout;
pub mod optim;
pub mod output;
pub mod rng;
pub mod sample;
pub mod stream;
#[cfg(test)]
mod testutil;
pub mod weight;

pub use cell::{Input, SeqDims};
pub use error::Error;
pub use gemm::{Gemm, Portable, Trans};
pub use layout::{CellDims, CellGrads, CellKind, CellParams, ModelLayout, TensorSpan};
pub use weight::Weight;

/// Sets every element of `buf` to zero (the separate zeroing call that
/// accumulating backward routines expect).
pub fn zero(buf: &mut [f32]) {
    buf.fill(0.0);
}
