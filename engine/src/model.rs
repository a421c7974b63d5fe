//! A model whose weights live on the GPU for its whole life.
//!
//! The master copy is one flat f32 buffer in recur-core's [`ModelLayout`]
//! order (`rnn.weight_ih_l0`, `rnn.weight_hh_l0`, `rnn.bias_ih_l0`,
//! `rnn.bias_hh_l0`, `dense.weight`, `dense.bias`), so gradients and
//! optimizer state can be added later as buffers of the same layout and
//! updated in place. The kernels read copies derived from it on the device
//! ([`DeviceModel::refresh_derived`]): `W_ihᵀ` (V, G·H), whose row for token
//! `x` is the input part of the gates (a contiguous gather), and in f16 mode
//! an f16 mirror of the flat buffer plus an f16 `W_ihᵀ`. Nothing is copied
//! between host and device per call.

use std::ffi::c_void;

use cust::memory::DeviceBuffer;
use recur_core::{CellDims, ModelLayout};

use crate::error::Error;
use crate::gpu::Gpu;
use crate::half::F16;
use crate::mem::{addr, alloc, download, upload};
use crate::plan::Precision;

/// Device addresses of the weights, in the storage the kernels read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WeightPtrs {
    /// (V, G·H) `W_ihᵀ`.
    pub table: u64,
    /// (G·H, I) `W_ih`.
    pub w_ih: u64,
    /// (G·H, H).
    pub w_hh: u64,
    /// (G·H).
    pub b_ih: u64,
    /// (G·H).
    pub b_hh: u64,
    /// (V, H), or 0 without an output layer.
    pub w_d: u64,
    /// (V), or 0 without an output layer.
    pub b_d: u64,
}

/// A recurrent cell, with or without d2l's output layer, resident on the GPU.
pub struct DeviceModel {
    layout: ModelLayout,
    output_layer: bool,
    precision: Precision,
    /// Flat f32 parameters, [`ModelLayout`] order (without the output layer's
    /// two tensors for a cell-only model).
    params: DeviceBuffer<f32>,
    /// f16 mirror of `params` (f16 mode).
    params_f16: Option<DeviceBuffer<F16>>,
    /// (V, G·H) `W_ihᵀ` in f32 (f32 mode).
    table_f32: Option<DeviceBuffer<f32>>,
    /// (V, G·H) `W_ihᵀ` in f16 (f16 mode).
    table_f16: Option<DeviceBuffer<F16>>,
    // Last: the context outlives the buffers above.
    gpu: Gpu,
}

impl DeviceModel {
    /// Uploads a language model (cell + output layer) from recur-core's
    /// flat layout (`flat.len() == layout.len()`).
    pub fn upload(
        gpu: &Gpu,
        layout: ModelLayout,
        flat: &[f32],
        precision: Precision,
    ) -> Result<DeviceModel, Error> {
        layout.validate()?;
        recur_core::error::check_len("parameters", flat, layout.len())?;
        DeviceModel::create(gpu, layout, true, flat, precision)
    }

    /// Uploads a bare cell (dense or token inputs of size `dims.input`, no
    /// output layer): `flat` holds `weight_ih`, `weight_hh`, `bias_ih`,
    /// `bias_hh` back to back, the first four tensors of [`ModelLayout`].
    pub fn upload_cell(
        gpu: &Gpu,
        dims: CellDims,
        flat: &[f32],
        precision: Precision,
    ) -> Result<DeviceModel, Error> {
        dims.validate()?;
        let layout = ModelLayout {
            cell: dims.cell,
            vocab: dims.input,
            hidden: dims.hidden,
        };
        layout.validate()?;
        recur_core::error::check_len("cell parameters", flat, cell_len(&layout))?;
        DeviceModel::create(gpu, layout, false, flat, precision)
    }

    fn create(
        gpu: &Gpu,
        layout: ModelLayout,
        output_layer: bool,
        flat: &[f32],
        precision: Precision,
    ) -> Result<DeviceModel, Error> {
        gpu.bind()?;
        let n = flat.len();
        let mut params = alloc::<f32>(n, "parameters")?;
        upload(gpu, &mut params, flat, "parameters")?;
        let table_len = layout.vocab * layout.cell_dims().gate_rows();
        let (params_f16, table_f32, table_f16) = match precision {
            Precision::F32 => (None, Some(alloc(table_len, "W_ih transposed")?), None),
            Precision::F16 => (
                Some(alloc(n, "f16 parameters")?),
                None,
                Some(alloc(table_len, "f16 W_ih transposed")?),
            ),
        };
        let mut model = DeviceModel {
            layout,
            output_layer,
            precision,
            params,
            params_f16,
            table_f32,
            table_f16,
            gpu: gpu.clone(),
        };
        model.refresh_derived()?;
        Ok(model)
    }

    /// Re-derives the kernels' copies (`W_ihᵀ`, the f16 mirror) from the f32
    /// master. Call after changing the master on the device (e.g. an
    /// optimizer step); queued on the stream.
    pub fn refresh_derived(&mut self) -> Result<(), Error> {
        let gpu = &self.gpu;
        gpu.bind()?;
        let gh = self.layout.cell_dims().gate_rows();
        let v = self.layout.vocab;
        let shape = || format!("G·H={gh} V={v}");
        let mut src = addr(&self.params); // W_ih is the first tensor
        let mut rows = gh as i32;
        let mut cols = v as i32;
        let grid = (v.div_ceil(32) as u32, gh.div_ceil(32) as u32);
        if let Some(table) = &self.table_f32 {
            let mut dst = addr(table);
            let mut p: [*mut c_void; 4] = [
                &mut dst as *mut _ as *mut c_void,
                &mut src as *mut _ as *mut c_void,
                &mut rows as *mut _ as *mut c_void,
                &mut cols as *mut _ as *mut c_void,
            ];
            // SAFETY: transpose_f32(float* out (cols·rows), const float* in (rows·cols), int, int).
            unsafe { gpu.launch("transpose_f32", grid, 0, false, &mut p, shape)? };
        }
        if let (Some(table), Some(mirror)) = (&self.table_f16, &self.params_f16) {
            let mut dst = addr(table);
            let mut p: [*mut c_void; 4] = [
                &mut dst as *mut _ as *mut c_void,
                &mut src as *mut _ as *mut c_void,
                &mut rows as *mut _ as *mut c_void,
                &mut cols as *mut _ as *mut c_void,
            ];
            // SAFETY: transpose_to_f16(__half* out (cols·rows), const float* in, int, int).
            unsafe { gpu.launch("transpose_to_f16", grid, 0, false, &mut p, shape)? };
            let mut out = addr(mirror);
            let mut n = self.params.len() as i64;
            let mut p: [*mut c_void; 3] = [
                &mut out as *mut _ as *mut c_void,
                &mut src as *mut _ as *mut c_void,
                &mut n as *mut _ as *mut c_void,
            ];
            let blocks = (self.params.len().div_ceil(256) as u32).min(4096);
            // SAFETY: convert_f16(__half* out (n), const float* in (n), long long n).
            unsafe {
                gpu.launch("convert_f16", (blocks, 1), 0, false, &mut p, || {
                    format!("n={n}")
                })?
            };
        }
        Ok(())
    }

    /// Copies the f32 master back into recur-core's flat layout.
    pub fn download(&self, flat: &mut [f32]) -> Result<(), Error> {
        recur_core::error::check_len("parameters", flat, self.params.len())?;
        let host = download(&self.gpu, &self.params, flat.len())?;
        flat.copy_from_slice(&host);
        Ok(())
    }

    /// The layout (for a cell-only model, `vocab` is the input size).
    pub fn layout(&self) -> ModelLayout {
        self.layout
    }

    /// Whether the model has d2l's output layer.
    pub fn has_output_layer(&self) -> bool {
        self.output_layer
    }

    /// The storage precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The GPU the model lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The flat f32 master (for the training engine: gradients and optimizer
    /// state mirror this layout).
    pub fn params(&self) -> &DeviceBuffer<f32> {
        &self.params
    }

    /// The flat f32 master, mutable; call [`DeviceModel::refresh_derived`] after changing it.
    pub fn params_mut(&mut self) -> &mut DeviceBuffer<f32> {
        &mut self.params
    }

    pub(crate) fn weights(&self) -> WeightPtrs {
        let t = self.layout.tensors();
        let (base, size, table) = match self.precision {
            Precision::F32 => (
                addr(&self.params),
                4u64,
                self.table_f32.as_ref().map(|b| addr(b)),
            ),
            Precision::F16 => (
                self.params_f16.as_ref().map(|b| addr(b)).unwrap_or(0),
                2u64,
                self.table_f16.as_ref().map(|b| addr(b)),
            ),
        };
        let at = |i: usize| base + t[i].offset as u64 * size;
        WeightPtrs {
            table: table.unwrap_or(0),
            w_ih: at(0),
            w_hh: at(1),
            b_ih: at(2),
            b_hh: at(3),
            w_d: if self.output_layer { at(4) } else { 0 },
            b_d: if self.output_layer { at(5) } else { 0 },
        }
    }
}

/// Parameters of the cell alone (the first four tensors of the layout).
pub(crate) fn cell_len(layout: &ModelLayout) -> usize {
    layout.tensors()[4].offset
}
