//! Sizes and section offsets of the cache and the workspace of a sequence.
//!
//! Cache (kept from forward to backward), all row-major over `T·B` rows:
//! - `gates`: (T, B, G·H) post-activation gates (RNN: none, `h` is in `hs`);
//! - `extra`: `E` sections of (T, B, H): GRU reset-after `W_hn h + b_hn`,
//!   GRU reset-before `r ⊙ h_prev`, LSTM `c` then `tanh(c)`.
//!
//! Workspace (scratch), forward: the input projection `xp` (T, B, G·H), the
//! recurrent product `hp` (B, G·H), the summed bias row (G·H). Backward: the
//! pre-activation gradients `dg` (see `sequence::backward` for their blocks),
//! then the carried `dh`, `dc` and a scratch `tmp`, each (B, H).

use super::SeqDims;
use crate::error::Error;
use crate::layout::{CellDims, CellKind};

/// Number of (T, B, H) sections the cache holds beyond the gates.
const fn extra_sections(kind: CellKind) -> usize {
    match kind {
        CellKind::RnnTanh | CellKind::RnnRelu => 0,
        CellKind::GruResetBefore | CellKind::GruResetAfter => 1,
        CellKind::Lstm => 2,
    }
}

/// Number of cached gate values per row (the RNN's only gate is `h` itself).
const fn cached_gates(kind: CellKind) -> usize {
    match kind {
        CellKind::RnnTanh | CellKind::RnnRelu => 0,
        _ => kind.gates(),
    }
}

/// Every size of a sequence, computed with overflow checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub kind: CellKind,
    /// `T`, `B`, `I`, `H`, `G·H`.
    pub t: usize,
    pub b: usize,
    pub i: usize,
    pub h: usize,
    pub gh: usize,
    /// `B·H`, `B·G·H`, `T·B`.
    pub bh: usize,
    pub bgh: usize,
    pub tb: usize,
    /// Cache: gate section length (T·B·cached gates·H) and one extra section (T·B·H).
    pub gates_len: usize,
    pub extra_len: usize,
    pub cache_len: usize,
    /// Workspace: forward sections `xp`, `hp`, bias row; backward `dg`.
    pub xp_len: usize,
    pub dg_len: usize,
    pub workspace_len: usize,
}

impl Plan {
    /// Validates `dims` (non-zero sizes, no overflow) and lays out the buffers.
    pub fn new(dims: &SeqDims) -> Result<Plan, Error> {
        dims.cell.validate()?;
        if dims.steps == 0 {
            return Err(Error::Dim {
                what: "steps",
                value: 0,
            });
        }
        if dims.batch == 0 {
            return Err(Error::Dim {
                what: "batch",
                value: 0,
            });
        }
        sizes(dims).ok_or(Error::Dim {
            what: "steps",
            value: dims.steps,
        })
    }

    /// `T·B·H`.
    pub fn tbh(&self) -> usize {
        self.extra_len
    }
}

/// The sizes, or `None` on overflow. No validation beyond that.
fn sizes(dims: &SeqDims) -> Option<Plan> {
    let kind = dims.cell.cell;
    let (t, b, i, h) = (dims.steps, dims.batch, dims.cell.input, dims.cell.hidden);
    let gh = kind.gates().checked_mul(h)?;
    let tb = t.checked_mul(b)?;
    let tbh = tb.checked_mul(h)?;
    let bh = b.checked_mul(h)?;
    let bgh = b.checked_mul(gh)?;
    let gates_len = tbh.checked_mul(cached_gates(kind))?;
    let cache_len = tbh
        .checked_mul(extra_sections(kind))?
        .checked_add(gates_len)?;
    let xp_len = tb.checked_mul(gh)?;
    // Forward: xp, hp, bias row.
    let forward = xp_len.checked_add(bgh)?.checked_add(gh)?;
    // Backward: dg (reset-after keeps an input-side and a recurrent-side
    // copy), dh, dc, tmp.
    let dg_len = match kind {
        CellKind::GruResetAfter => xp_len.checked_mul(2)?,
        _ => xp_len,
    };
    let backward = bh.checked_mul(3)?.checked_add(dg_len)?;
    // I is only validated here, it sizes nothing in the workspace.
    let _ = i.checked_mul(gh)?;
    Some(Plan {
        kind,
        t,
        b,
        i,
        h,
        gh,
        bh,
        bgh,
        tb,
        gates_len,
        extra_len: tbh,
        cache_len,
        xp_len,
        dg_len,
        workspace_len: forward.max(backward),
    })
}

/// Cache length, `usize::MAX` when the sizes overflow (no buffer can match).
pub(crate) fn cache_len(dims: &SeqDims) -> usize {
    sizes(dims).map_or(usize::MAX, |p| p.cache_len)
}

/// Workspace length, `usize::MAX` when the sizes overflow.
pub(crate) fn workspace_len(dims: &SeqDims) -> usize {
    sizes(dims).map_or(usize::MAX, |p| p.workspace_len)
}

/// Step workspace: `xp`, `hp`, gates (B, G·H) each and two (B, H) extras.
pub(crate) fn step_workspace_len(cell: &CellDims, batch: usize) -> usize {
    step_sizes(cell, batch).map_or(usize::MAX, |(_, len)| len)
}

/// `(B·G·H, total)` of the step workspace, `None` on overflow.
pub(crate) fn step_sizes(cell: &CellDims, batch: usize) -> Option<(usize, usize)> {
    let bgh = batch
        .checked_mul(cell.cell.gates())?
        .checked_mul(cell.hidden)?;
    let bh = batch.checked_mul(cell.hidden)?;
    let total = bgh.checked_mul(3)?.checked_add(bh.checked_mul(2)?)?;
    Some((bgh, total))
}
