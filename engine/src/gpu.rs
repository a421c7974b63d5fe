//! The device, its context and stream, set up once per [`Gpu`].

use std::sync::Arc;

use cust::context::{Context, CurrentContext};
use cust::device::Device;
use cust::stream::{Stream, StreamFlags};
use cust::CudaFlags;

use crate::error::{Context as _, Error};

/// A GPU ready for work: context, stream and kernels. Cheap to clone (shared);
/// device memory made through it keeps it alive.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub(crate) stream: Stream,
    pub(crate) name: String,
    // Last: dropped after everything above that lives in the context.
    pub(crate) context: Context,
}

impl Gpu {
    /// Initialises the driver and sets up device 0. [`Error::NoDevice`]
    /// where there is no driver (the stub) or no device.
    pub fn new() -> Result<Gpu, Error> {
        cust::init(CudaFlags::empty()).doing("initialising the CUDA driver")?;
        let device = Device::get_device(0).doing("opening device 0")?;
        let name = device.name().doing("reading the device name")?;
        let context = Context::new(device).doing("creating the context")?;
        let stream =
            Stream::new(StreamFlags::NON_BLOCKING, None).doing("creating the stream")?;
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                stream,
                name,
                context,
            }),
        })
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Makes this GPU's context current on the calling thread (every engine
    /// call does it, so a `Gpu` may move between threads).
    pub(crate) fn bind(&self) -> Result<(), Error> {
        CurrentContext::set_current(&self.inner.context).doing("binding the context")
    }

    /// Waits until all work queued on the stream is done.
    pub fn synchronize(&self) -> Result<(), Error> {
        self.bind()?;
        self.inner.stream.synchronize().doing("waiting for the stream")
    }
}
