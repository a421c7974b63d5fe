//! Cell kinds, dimensions and the flat parameter layout shared by every part
//! of recur (CPU core, GPU engine, checkpoints).
//!
//! # Parameter layout (PyTorch's)
//! A cell with `G` gates, input size `I` and hidden size `H` has
//!
//! | tensor      | shape        | PyTorch name (d2l's RNNModel) |
//! |-------------|--------------|-------------------------------|
//! | `weight_ih` | (G·H, I)     | `rnn.weight_ih_l0`            |
//! | `weight_hh` | (G·H, H)     | `rnn.weight_hh_l0`            |
//! | `bias_ih`   | (G·H)        | `rnn.bias_ih_l0`              |
//! | `bias_hh`   | (G·H)        | `rnn.bias_hh_l0`              |
//!
//! all row-major, gate blocks stacked in PyTorch's order: `r, z, n` for the
//! GRU, `i, f, g, o` for the LSTM, a single block for the plain RNN. PyTorch
//! weights therefore load without any reordering. The output layer of a
//! language model adds `dense.weight` (V, H) and `dense.bias` (V).
//!
//! A [`ModelLayout`] places all six tensors, in that order, in one flat `f32`
//! buffer, so gradients, clipping and optimizer state are single slices too.

use crate::error::{mul, Error};

/// The recurrent cell variants recur implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// Elman RNN, `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`.
    RnnTanh,
    /// Elman RNN with relu instead of tanh (d2l's MXNet scratch RNN).
    RnnRelu,
    /// GRU with the reset gate applied *before* the recurrent product:
    /// `n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)` (Cho et al. 2014,
    /// d2l's from-scratch GRU).
    GruResetBefore,
    /// GRU with the reset gate applied *after* the recurrent product:
    /// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))` (PyTorch `nn.GRU`,
    /// cuDNN, Keras' default).
    GruResetAfter,
    /// LSTM with gates `i, f, g, o` and a cell state.
    Lstm,
}

impl CellKind {
    /// All kinds, for tests and benches that sweep them.
    pub const ALL: [CellKind; 5] = [
        CellKind::RnnTanh,
        CellKind::RnnRelu,
        CellKind::GruResetBefore,
        CellKind::GruResetAfter,
        CellKind::Lstm,
    ];

    /// Number of gate blocks `G` stacked in the weight matrices.
    pub const fn gates(self) -> usize {
        match self {
            CellKind::RnnTanh | CellKind::RnnRelu => 1,
            CellKind::GruResetBefore | CellKind::GruResetAfter => 3,
            CellKind::Lstm => 4,
        }
    }

    /// Whether the cell carries a cell state `c` beside `h` (LSTM only).
    pub const fn has_cell_state(self) -> bool {
        matches!(self, CellKind::Lstm)
    }

    /// A stable lowercase name, used in checkpoints and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            CellKind::RnnTanh => "rnn-tanh",
            CellKind::RnnRelu => "rnn-relu",
            CellKind::GruResetBefore => "gru-reset-before",
            CellKind::GruResetAfter => "gru-reset-after",
            CellKind::Lstm => "lstm",
        }
    }

    /// The inverse of [`CellKind::name`].
    pub fn from_name(name: &str) -> Option<CellKind> {
        CellKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Shape of one recurrent cell's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CellDims {
    /// Which cell.
    pub cell: CellKind,
    /// Input size `I` (the vocabulary size when inputs are token ids).
    pub input: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

impl CellDims {
    /// `G·H`, the number of rows of both weight matrices.
    pub const fn gate_rows(&self) -> usize {
        self.cell.gates() * self.hidden
    }

    /// Elements of `weight_ih`, (G·H, I).
    pub const fn weight_ih_len(&self) -> usize {
        self.gate_rows() * self.input
    }

    /// Elements of `weight_hh`, (G·H, H).
    pub const fn weight_hh_len(&self) -> usize {
        self.gate_rows() * self.hidden
    }

    /// Elements of each bias, (G·H).
    pub const fn bias_len(&self) -> usize {
        self.gate_rows()
    }

    /// Checks that the sizes are non-zero and that every product used to
    /// index the parameters fits in `usize`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.input == 0 {
            return Err(Error::Dim {
                what: "input",
                value: 0,
            });
        }
        if self.hidden == 0 {
            return Err(Error::Dim {
                what: "hidden",
                value: 0,
            });
        }
        let rows = mul("hidden", self.cell.gates(), self.hidden)?;
        mul("input", rows, self.input)?;
        mul("hidden", rows, self.hidden)?;
        Ok(())
    }
}

/// Borrowed parameters of one cell, in PyTorch's layout (see the module
/// docs). `W` is the storage type: `f32` for training, `f32` or
/// [`half::f16`] for inference.
#[derive(Debug, Clone, Copy)]
pub struct CellParams<'a, W = f32> {
    /// (G·H, I), row-major.
    pub weight_ih: &'a [W],
    /// (G·H, H), row-major.
    pub weight_hh: &'a [W],
    /// (G·H).
    pub bias_ih: &'a [W],
    /// (G·H).
    pub bias_hh: &'a [W],
}

impl<W> CellParams<'_, W> {
    /// Checks every length against `dims`.
    pub fn check(&self, dims: &CellDims) -> Result<(), Error> {
        use crate::error::check_len;
        dims.validate()?;
        check_len("weight_ih", self.weight_ih, dims.weight_ih_len())?;
        check_len("weight_hh", self.weight_hh, dims.weight_hh_len())?;
        check_len("bias_ih", self.bias_ih, dims.bias_len())?;
        check_len("bias_hh", self.bias_hh, dims.bias_len())
    }
}

/// Mutable gradients of one cell, same shapes as [`CellParams`]. Backward
/// routines *accumulate* into them (`+=`); zeroing is the caller's call.
#[derive(Debug)]
pub struct CellGrads<'a> {
    /// (G·H, I).
    pub weight_ih: &'a mut [f32],
    /// (G·H, H).
    pub weight_hh: &'a mut [f32],
    /// (G·H).
    pub bias_ih: &'a mut [f32],
    /// (G·H).
    pub bias_hh: &'a mut [f32],
}

impl CellGrads<'_> {
    /// Checks every length against `dims`.
    pub fn check(&self, dims: &CellDims) -> Result<(), Error> {
        use crate::error::check_len;
        dims.validate()?;
        check_len("grad weight_ih", self.weight_ih, dims.weight_ih_len())?;
        check_len("grad weight_hh", self.weight_hh, dims.weight_hh_len())?;
        check_len("grad bias_ih", self.bias_ih, dims.bias_len())?;
        check_len("grad bias_hh", self.bias_hh, dims.bias_len())
    }
}

/// A character language model: one recurrent cell whose input is a token id
/// (input size = vocabulary size) and a dense output layer back to the
/// vocabulary, d2l's `RNNModel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelLayout {
    /// Which cell.
    pub cell: CellKind,
    /// Vocabulary size `V` (cell input size and output size).
    pub vocab: usize,
    /// Hidden size `H`.
    pub hidden: usize,
}

/// A flat parameter buffer split by [`ModelLayout::split`]: the cell's
/// parameters, `dense.weight` (V, H) and `dense.bias` (V).
pub type SplitParams<'a, W> = (CellParams<'a, W>, &'a [W], &'a [W]);

/// A flat gradient buffer split by [`ModelLayout::split_mut`], same order.
pub type SplitGrads<'a> = (CellGrads<'a>, &'a mut [f32], &'a mut [f32]);

/// Where one named tensor sits in the flat parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorSpan {
    /// PyTorch's name in d2l's RNNModel, e.g. `"rnn.weight_ih_l0"`.
    pub name: &'static str,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Shape: one or two dimensions (`cols == 0` means a vector of `rows`).
    pub rows: usize,
    /// Columns, or 0 for a vector.
    pub cols: usize,
}

impl TensorSpan {
    /// Number of elements.
    pub const fn len(&self) -> usize {
        if self.cols == 0 {
            self.rows
        } else {
            self.rows * self.cols
        }
    }

    /// Whether the tensor has no elements.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element range in the flat buffer.
    pub const fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

impl ModelLayout {
    /// The recurrent cell's dimensions (input = vocabulary).
    pub const fn cell_dims(&self) -> CellDims {
        CellDims {
            cell: self.cell,
            input: self.vocab,
            hidden: self.hidden,
        }
    }

    /// The six tensors in buffer order: `rnn.weight_ih_l0`, `rnn.weight_hh_l0`,
    /// `rnn.bias_ih_l0`, `rnn.bias_hh_l0`, `dense.weight` (V, H), `dense.bias` (V).
    pub const fn tensors(&self) -> [TensorSpan; 6] {
        let d = self.cell_dims();
        let gh = d.gate_rows();
        let o1 = d.weight_ih_len();
        let o2 = o1 + d.weight_hh_len();
        let o3 = o2 + gh;
        let o4 = o3 + gh;
        let o5 = o4 + self.vocab * self.hidden;
        [
            TensorSpan {
                name: "rnn.weight_ih_l0",
                offset: 0,
                rows: gh,
                cols: self.vocab,
            },
            TensorSpan {
                name: "rnn.weight_hh_l0",
                offset: o1,
                rows: gh,
                cols: self.hidden,
            },
            TensorSpan {
                name: "rnn.bias_ih_l0",
                offset: o2,
                rows: gh,
                cols: 0,
            },
            TensorSpan {
                name: "rnn.bias_hh_l0",
                offset: o3,
                rows: gh,
                cols: 0,
            },
            TensorSpan {
                name: "dense.weight",
                offset: o4,
                rows: self.vocab,
                cols: self.hidden,
            },
            TensorSpan {
                name: "dense.bias",
                offset: o5,
                rows: self.vocab,
                cols: 0,
            },
        ]
    }

    /// Total number of parameters (length of the flat buffer).
    pub const fn len(&self) -> usize {
        let t = self.tensors();
        t[5].offset + t[5].len()
    }

    /// Whether the model has no parameters (never, for valid dims).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the dimensions (non-zero, no overflow, the flat buffer's
    /// length and every offset in it included).
    pub fn validate(&self) -> Result<(), Error> {
        let d = self.cell_dims();
        d.validate()?;
        let vh = mul("vocab", self.vocab, self.hidden)?;
        let _ = mul("vocab", vh, 2)?;
        // Each tensor fits, but their sum may not (`len` adds them).
        [
            d.weight_hh_len(),
            d.bias_len(),
            d.bias_len(),
            vh,
            self.vocab,
        ]
        .iter()
        .try_fold(d.weight_ih_len(), |total, &n| total.checked_add(n))
        .ok_or(Error::Dim {
            what: "hidden",
            value: self.hidden,
        })?;
        Ok(())
    }

    /// Splits a flat buffer into the cell's parameters and the dense layer's
    /// `(weight (V,H), bias (V))`.
    pub fn split<'a, W>(&self, flat: &'a [W]) -> Result<SplitParams<'a, W>, Error> {
        self.validate()?;
        crate::error::check_len("parameters", flat, self.len())?;
        let t = self.tensors();
        Ok((
            CellParams {
                weight_ih: &flat[t[0].range()],
                weight_hh: &flat[t[1].range()],
                bias_ih: &flat[t[2].range()],
                bias_hh: &flat[t[3].range()],
            },
            &flat[t[4].range()],
            &flat[t[5].range()],
        ))
    }

    /// Splits a flat gradient buffer like [`ModelLayout::split`].
    pub fn split_mut<'a>(&self, flat: &'a mut [f32]) -> Result<SplitGrads<'a>, Error> {
        self.validate()?;
        crate::error::check_len("gradients", flat, self.len())?;
        let t = self.tensors();
        let (wih, rest) = flat.split_at_mut(t[0].len());
        let (whh, rest) = rest.split_at_mut(t[1].len());
        let (bih, rest) = rest.split_at_mut(t[2].len());
        let (bhh, rest) = rest.split_at_mut(t[3].len());
        let (dw, db) = rest.split_at_mut(t[4].len());
        Ok((
            CellGrads {
                weight_ih: wih,
                weight_hh: whh,
                bias_ih: bih,
                bias_hh: bhh,
            },
            dw,
            db,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_a_total_beyond_usize() {
        // 3·H² fits in usize, 3·H² + 3·H·V (the flat length) does not.
        let hidden = ((usize::MAX / 3) as f64).sqrt() as usize - 1;
        let layout = ModelLayout {
            cell: CellKind::GruResetAfter,
            vocab: 1 << 20,
            hidden,
        };
        assert!(layout.cell_dims().validate().is_ok());
        assert!(matches!(
            layout.validate(),
            Err(Error::Dim { what: "hidden", .. })
        ));
        let small = ModelLayout {
            cell: CellKind::GruResetAfter,
            vocab: 1027,
            hidden: 256,
        };
        assert!(small.validate().is_ok());
    }
}
